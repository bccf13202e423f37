"""One-frame videos as images: PNG (lossless, the default), JPEG or WebP, with the same settings metadata as an MP4
and the same promise: the file appears whole or not at all. And a video's previews, to look at before watching: a
contact sheet of a few of its frames, first to last; a small looping animated WebP; and the strip of its first,
middle and last frame that a batch's gallery shows. Each is collected as the frames go by and written once the
video is.

The metadata is JSON, where image tools look for it: PNG text chunks (`Comment`, and the prompt as `Title`), and
for JPEG and WebP the EXIF image description.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from . import files
from .mp4 import commit, open_part, writing

IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_DESCRIPTION = 0x010E  # EXIF ImageDescription


def is_image(path: Path | str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


class ImageWriter:
    """Mp4Writer's interface for a one-frame video: `write` takes (1, H, W, 3) uint8 once; the image is encoded
    when the block ends without an error, its sidecars written beside it, and only then moved into place."""

    def __init__(self, path: Path, fps: float, metadata: dict | None = None, overwrite: bool = False,
                 sidecars: dict[Path, dict] | None = None):
        self.sidecars = {Path(side): data for side, data in (sidecars or {}).items()}
        for target in [path, *self.sidecars]:
            files.refuse_existing(target, overwrite)
        self.path, self.metadata, self.overwrite = Path(path), metadata or {}, overwrite
        self.frame: np.ndarray | None = None

    def __enter__(self) -> "ImageWriter":
        open_part(self)
        return self

    def write(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {tuple(frames.shape)}")
        if self.frame is not None or len(frames) != 1:
            raise ValueError(f"{self.path.name} is an image: it takes one frame")
        self.frame = frames[0]

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            self.part.close()

    def _finish(self) -> None:
        if self.frame is None:
            raise ValueError("no frame was written")
        data = encode(self.frame, IMAGE_SUFFIXES[self.path.suffix.lower()], self.metadata)
        with writing(self.path):
            with open(self.part.path, "r+b") as f:  # into the locked part file itself (files.Part)
                f.truncate()
                f.write(data)
            commit(self)


def encode(frame: np.ndarray, kind: str, metadata: dict) -> bytes:
    """(H, W, 3) uint8 -> the bytes of a PNG, JPEG or WEBP file carrying `metadata` as JSON."""
    from PIL import Image, PngImagePlugin

    image, out = Image.fromarray(frame, "RGB"), io.BytesIO()
    comment = json.dumps(metadata, ensure_ascii=False, default=str)
    if kind == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("Comment", comment)  # iTXt: UTF-8, so any prompt survives
        if metadata.get("prompt"):
            info.add_itxt("Title", str(metadata["prompt"]))
        image.save(out, "PNG", pnginfo=info)
    else:
        exif = Image.Exif()
        exif[_DESCRIPTION] = json.dumps(metadata, default=str)  # EXIF text is ASCII: JSON escapes the rest
        image.save(out, kind, quality=95, exif=exif)
    return out.getvalue()


def read_image_metadata(path: Path) -> dict:
    """The settings sora stored in an image it wrote ({} if none)."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.info.get("Comment") if image.format == "PNG" else image.getexif().get(_DESCRIPTION)
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


SHEET_FRAMES, SHEET_COLUMNS, TILE_WIDTH = 8, 4, 256
ANIMATION_FPS, ANIMATION_FRAMES = 12, 240
THUMB_WIDTH = 160


class Sheet:
    """Collects up to `count` frames of a `num_frames` video, evenly spaced from the first to the last, as its
    chunks go by; `image()` lays them out, `columns` a row, each at most `tile` pixels wide."""

    def __init__(self, num_frames: int, count: int = SHEET_FRAMES, columns: int = SHEET_COLUMNS,
                 tile: int = TILE_WIDTH):
        count = min(count, num_frames)
        self.wanted = {round(i * (num_frames - 1) / max(1, count - 1)) for i in range(count)}
        self.columns, self.tile = columns, tile
        self.seen, self.frames = 0, []

    def add(self, chunk: np.ndarray) -> np.ndarray:
        self.frames += [chunk[i - self.seen] for i in sorted(self.wanted) if self.seen <= i < self.seen + len(chunk)]
        self.seen += len(chunk)
        return chunk

    def save(self, path: Path, metadata: dict, overwrite: bool) -> Path:
        """The sheet as a PNG carrying `metadata`, whole or not at all."""
        data = encode(self.image(), "PNG", metadata)
        return files.write_atomically(path, overwrite, lambda tmp: tmp.write_bytes(data))

    def image(self) -> np.ndarray:
        from PIL import Image

        h, w = self.frames[0].shape[:2]
        scale = min(1.0, self.tile / w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        tiles = [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) if scale < 1 else f for f in self.frames]
        columns, gap = min(self.columns, len(tiles)), 2
        rows = -(-len(tiles) // columns)
        sheet = np.full((rows * (size[1] + gap) - gap, columns * (size[0] + gap) - gap, 3), 128, np.uint8)
        for i, tile in enumerate(tiles):
            y, x = (i // columns) * (size[1] + gap), (i % columns) * (size[0] + gap)
            sheet[y:y + size[1], x:x + size[0]] = tile
        return sheet


class Animation:
    """A video as a small looping animated WebP, which browsers and image viewers play: at most ANIMATION_FPS
    frames a second and ANIMATION_FRAMES frames (evenly thinned beyond), each at most TILE_WIDTH pixels wide,
    shrunk as the chunks go by so a long video costs little memory."""

    def __init__(self, num_frames: int, fps: float):
        self.every = max(math.ceil(fps / ANIMATION_FPS), math.ceil(num_frames / ANIMATION_FRAMES))
        self.duration = round(1000 * self.every / fps)  # milliseconds a frame is shown
        self.seen, self.frames = 0, []

    def add(self, chunk: np.ndarray) -> np.ndarray:
        from PIL import Image

        for i in range(-self.seen % self.every, len(chunk), self.every):
            image = Image.fromarray(chunk[i])
            if image.width > TILE_WIDTH:
                image = image.resize((TILE_WIDTH, max(1, round(image.height * TILE_WIDTH / image.width))),
                                     Image.BILINEAR)
            self.frames.append(image)
        self.seen += len(chunk)
        return chunk

    def save(self, path: Path, metadata: dict, overwrite: bool) -> Path:
        from PIL import Image

        exif = Image.Exif()
        exif[_DESCRIPTION] = json.dumps(metadata, default=str)

        def fill(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                self.frames[0].save(f, "WEBP", save_all=True, append_images=self.frames[1:], loop=0,
                                    duration=self.duration, quality=80, exif=exif)
        return files.write_atomically(path, overwrite, fill)


def previews(path: Path, num_frames: int, fps: float, sheet: bool = False, animation: bool = False,
             thumbnail: Path | None = None) -> dict[Path, Sheet | Animation]:
    """What to write beside a video as its frames go by: its contact sheet (NAME.preview.png), its animation
    (NAME.preview.webp), each for a video of more than one frame; and its first, middle and last frame side by side
    at `thumbnail` (a batch's gallery)."""
    out: dict[Path, Sheet | Animation] = {}
    if sheet and num_frames > 1:
        out[Path(path).with_suffix(".preview.png")] = Sheet(num_frames)
    if animation and num_frames > 1:
        out[Path(path).with_suffix(".preview.webp")] = Animation(num_frames, fps)
    if thumbnail is not None:
        out[Path(thumbnail)] = Sheet(num_frames, 3, 3, THUMB_WIDTH)
    return out
