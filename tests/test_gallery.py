"""A batch's gallery (index.html, grid.png, thumbnails) and the per-video previews (contact sheet, animated WebP):
written by real batches on a tiny random model, and the page loaded in a real headless browser (Debian's
Chromium, driven by Playwright), offline, where every finished item's thumbnail must load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sora_cli import gallery
from sora_cli.batch_file import read_batch
from sora_cli.video import probe, read_video
from test_cli import run_sora

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LINES = [{"prompt": "a red fox <b>in snow</b>", "seed": 1},
         {"prompt": "a blue whale", "seed": 2, "preview": True, "preview_webp": True},
         {"prompt": "a still of a lighthouse", "frames": 1, "seed": 3},
         {"storyboard": [{"prompt": "a fox walks", "seconds": 1}, {"prompt": "the fox runs", "seconds": 1}]},
         {"mode": "extend", "video": "broken.mp4", "prompt": "more"}]


@pytest.fixture(scope="module")
def batch(folders, tmp_path_factory):
    """A finished batch: four items rendered (one a still, one a storyboard) and one failed (an unreadable clip)."""
    root = tmp_path_factory.mktemp("gallery")
    (root / "broken.mp4").write_bytes(b"not a video")
    (root / "lines.jsonl").write_text("\n".join(json.dumps(x) for x in LINES) + "\n")
    out = root / "out"
    result = run_sora("batch", str(root / "lines.jsonl"), "--out-dir", str(out), "--model", str(folders["replace"]),
                      "--steps", "1", "--frames", "5", "--quiet")
    assert result.returncode == 3, result.stderr  # 3: some item failed
    return out, read_batch(str(root / "lines.jsonl"), out, {"frames": 5}).items


def test_every_item_is_on_the_page_with_its_thumbnail(batch):
    out, items = batch
    page = (out / "index.html").read_text()
    assert len(items) == 5 and page.count("<figure>") == 5
    assert "a red fox &lt;b&gt;in snow&lt;/b&gt;" in page and "<b>in snow" not in page  # a prompt is text
    assert "a fox walks → the fox runs" in page
    assert "failed: cannot read" in page and "4 done, 1 failed, 0 to come (finished)" in page
    assert 'http-equiv="refresh"' not in page  # the batch is over: the page stops reloading
    for item in items[:4]:
        thumb = gallery.thumbnail(out, item.name)
        with Image.open(thumb) as image:
            tiles = 1 if item.request.frames == 1 else 3
            assert image.width == tiles * 48 + 2 * (tiles - 1) and image.height == 32  # 48x32, a 2-pixel gap
        assert f'src="thumbs/{item.name}.png"' in page and f'href="{item.name}"' in page
    # the strip is the video's first, middle and last frame
    frames = np.asarray(Image.open(gallery.thumbnail(out, items[0].name)).convert("RGB"))
    video = read_video(out / items[0].name)[0]
    for k, i in enumerate((0, 2, 4)):
        assert np.abs(frames[:, k * 50:k * 50 + 48].astype(int) - video[i]).mean() < 4  # through H.264 and back


def test_the_grid_holds_every_finished_item(batch):
    out, _ = batch
    with Image.open(out / "grid.png") as grid:
        assert grid.height >= 4 * 48 and grid.width >= 3 * 48 + gallery.ROW_TEXT_WIDTH


def test_previews_beside_the_video(batch):
    out, items = batch
    whale = out / items[1].name
    assert whale.with_suffix(".preview.png").is_file()
    with Image.open(whale.with_suffix(".preview.webp")) as animation:
        assert animation.format == "WEBP" and animation.n_frames == probe(whale).num_frames == 5
        assert json.loads(animation.getexif()[0x010E])["prompt"] == "a blue whale"
    assert not (out / items[0].name).with_suffix(".preview.webp").exists()  # only where asked


def test_an_unfinished_batch_shows_what_is_to_come(tmp_path):
    (tmp_path / "lines.txt").write_text("a fox\na whale\n")
    items = read_batch(str(tmp_path / "lines.txt"), tmp_path / "out", {}).items
    shown = gallery.Gallery(tmp_path / "out", items)
    (tmp_path / "out").mkdir()
    shown.update()
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count("to come</p>") == 2 and 'http-equiv="refresh"' in page
    assert not (tmp_path / "out" / "grid.png").exists()  # nothing finished, nothing to lay out


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_loads_offline_in_a_headless_browser(batch):
    playwright = pytest.importorskip("playwright.sync_api")
    out, items = batch
    requests = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto((out / "index.html").as_uri(), wait_until="load")
            page.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
            text = page.inner_text("body")
        finally:
            browser.close()
    assert sorted(src for src, _ in images) == sorted(f"thumbs/{i.name}.png" for i in items[:4])
    assert all(width > 0 for _, width in images), images  # every thumbnail decoded
    assert "failed: cannot read" in text and "a red fox <b>in snow</b>" in text
    assert all(url.startswith("file://") for url in requests), requests  # nothing from the network
