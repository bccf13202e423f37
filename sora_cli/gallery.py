"""A batch's gallery: `DIR/index.html` and `DIR/grid.png`, to look over a batch before watching it.

Each item, once written, leaves its first, middle and last frame side by side in `DIR/thumbs/NAME.png`. The page
lists every item of the prompt file in order, with its thumbnail, prompt, seed and a link to its video (or its
error, or that it is still to come); it is one self-contained file that works offline, and reloads itself every
30 s while the batch runs. The grid image holds the same thumbnails with each item's line, seed and prompt, for
viewers that show no HTML. Both are rewritten as items finish (at most every UPDATE_SECONDS, so that a batch of
thousands of short items spends its time rendering, and always at the end), from the manifest, so the records of
every torchrun rank appear.
"""

from __future__ import annotations

import html
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import files, manifest
from .batch_file import Item

THUMBS = "thumbs"
INDEX, GRID = "index.html", "grid.png"
UPDATE_SECONDS = 10.0
ROW_TEXT_WIDTH = 360  # pixels of the grid row beside the thumbnails


def thumbnail(out_dir: Path, name: str) -> Path:
    """Where the item named `name` (inside DIR) leaves its first, middle and last frames."""
    return Path(out_dir) / THUMBS / (name + ".png")


class Gallery:
    """The gallery of `items`, rendered into `out_dir`."""

    def __init__(self, out_dir: Path, items: list[Item]):
        self.out_dir, self.items, self.written = Path(out_dir), items, float("-inf")

    def update(self, final: bool = False) -> None:
        """Rewrite the page and the grid, unless they were rewritten less than UPDATE_SECONDS ago (`final`:
        always, and the page stops reloading itself)."""
        if not final and time.monotonic() - self.written < UPDATE_SECONDS:
            return
        records = {}
        for record in manifest.read(self.out_dir):  # the last record of a name is its latest run
            if isinstance(record.get("path"), str):
                records[record["path"]] = record
        rows = [(item, records.get(item.name)) for item in self.items]
        page = self.page(rows, final)
        files.write_atomically(self.out_dir / INDEX, True, lambda tmp: tmp.write_text(page, encoding="utf-8"))
        grid = self.grid(rows)
        if grid is not None:
            from .still import encode

            data = encode(grid, "PNG", {})
            files.write_atomically(self.out_dir / GRID, True, lambda tmp: tmp.write_bytes(data))
        self.written = time.monotonic()

    def page(self, rows: list[tuple[Item, dict | None]], final: bool) -> str:
        done = sum(1 for _, r in rows if r and r.get("status") == "ok")
        failed = sum(1 for _, r in rows if r and r.get("status") != "ok")
        cards = "\n".join(self._card(item, record) for item, record in rows)
        refresh = "" if final else '<meta http-equiv="refresh" content="30">\n'
        state = "finished" if final else "rendering"
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{refresh}<title>sora batch: {done} of {len(rows)} done</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; background: #111; color: #ddd; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(500px, 1fr)); gap: 1em; }}
figure {{ margin: 0; padding: .6em; background: #1c1c1c; border-radius: 6px; }}
figure img {{ height: 160px; max-width: 100%; object-fit: contain; image-rendering: pixelated; display: block; }}
figcaption p {{ margin: .3em 0; overflow-wrap: anywhere; }}
.meta {{ color: #999; font-size: 12px; }} .failed {{ color: #f77; }} .pending {{ color: #888; }}
a {{ color: #8cf; }}
</style></head>
<body>
<h1>sora batch</h1>
<p>{len(rows)} items: {done} done, {failed} failed, {len(rows) - done - failed} to come ({state}).
Each picture is the video's first, middle and last frame. <a href="{GRID}">All in one image</a>.</p>
<main>
{cards}
</main>
</body></html>
"""

    def _card(self, item: Item, record: dict | None) -> str:
        prompt = html.escape(_prompt(item, record))
        meta = f"line {item.line} · seed {item.seed}"
        body, note = "", ""
        if record is None:
            note = '<p class="pending">to come</p>'
        elif record.get("status") != "ok":
            note = f'<p class="failed">failed: {html.escape(str(record.get("error")))}</p>'
        else:
            link, thumb = quote(item.name), quote(f"{THUMBS}/{item.name}.png")
            body = f'<a href="{link}"><img src="{thumb}" alt="{prompt}" loading="lazy"></a>'
            size = f"{record.get('width')}x{record.get('height')}, {record.get('num_frames')} frames"
            meta += f' · {html.escape(size)} · <a href="{link}">{html.escape(item.name)}</a>'
        return f'<figure>{body}<figcaption><p>{prompt}</p><p class="meta">{meta}</p>{note}</figcaption></figure>'

    def grid(self, rows: list[tuple[Item, dict | None]]) -> np.ndarray | None:
        """One row an item that is done: its thumbnail, then its line, seed and prompt. None when none is."""
        from PIL import Image, ImageDraw, ImageFont

        tiles = []
        for item, record in rows:
            path = thumbnail(self.out_dir, item.name)
            if record and record.get("status") == "ok" and path.is_file():
                with Image.open(path) as image:
                    tiles.append((item, record, image.convert("RGB")))
        if not tiles:
            return None
        width = max(image.width for *_, image in tiles) + ROW_TEXT_WIDTH
        heights = [max(image.height, 48) for *_, image in tiles]
        canvas = Image.new("RGB", (width, sum(heights) + 4 * len(tiles)), (17, 17, 17))
        draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
        y = 0
        for (item, record, image), h in zip(tiles, heights):
            canvas.paste(image, (0, y))
            x = image.width + 8
            # the default font has few glyphs beyond ASCII: the page is where any prompt is shown as written
            draw.text((x, y + 2), f"line {item.line}, seed {item.seed}", fill=(150, 150, 150), font=font)
            for j, text in enumerate(_wrap(_prompt(item, record, " / "), 52, 3)):
                draw.text((x, y + 16 + 12 * j), text, fill=(221, 221, 221), font=font)
            y += h + 4
        return np.asarray(canvas)


def _prompt(item: Item, record: dict | None, then: str = " → ") -> str:
    """What the item shows: its prompt, or its storyboard's shots in order."""
    shots = item.request.storyboard
    if shots:
        return then.join(s.prompt for s in shots)
    return item.prompt or str((record or {}).get("prompt") or "")


def _wrap(text: str, width: int, lines: int) -> list[str]:
    """At most `lines` lines of at most `width` characters, the last cut short with "..." if the text is longer."""
    out = textwrap.wrap(text, width) or [""]
    if len(out) > lines:
        out = out[:lines - 1] + [out[lines - 1][:width - 3] + "..."]
    return out
