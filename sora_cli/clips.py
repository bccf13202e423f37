"""Input clips and images for editing, brought to the model's frame rate and a size it can make.

Videos (mp4, mov, webm, gif, ...) and images (png, jpg, webp, ...) are read through the bundled ffmpeg. A clip
keeps its own aspect ratio at the model's pixel count unless a size is asked for; `fit` says how a frame of
another shape is made to match: "crop" (scale to cover, keep the centre), "pad" (scale to fit, black bars) or
"stretch". Every change is reported as a warning; a file that cannot be read is an OptionError naming it.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import files
from .errors import OptionError
from .shapes import size_for_area

log = logging.getLogger("sora")

FITS = ("crop", "pad", "stretch")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float | None  # None for an image
    name: str
    metadata: dict = field(default_factory=dict)  # what sora wrote into the file, if it made it

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[2], self.frames.shape[1]


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise OptionError(f"--fit '{fit}' is not allowed; choose one of: {', '.join(FITS)}")
    return fit


def read(path: Path) -> Clip:
    """A video or an image as it is in the file, or one OptionError that names the file and the problem."""
    from .video import read_image, read_metadata, read_video

    path = Path(path)
    with _reading(path):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return Clip(read_image(path)[None], None, path.name)
        frames, fps = read_video(path)
        return Clip(frames, fps or None, path.name, read_metadata(path))


def check(path: Path) -> None:
    """The OptionError `read` would give, found without decoding a video (its packets are only counted): for
    checking the inputs of a whole batch before any of it runs."""
    from .video import probe, read_image

    path = Path(path)
    with _reading(path):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            read_image(path)
        elif probe(path).num_frames == 0:
            raise ValueError("it has no frames")


@contextmanager
def _reading(path: Path):
    if files.not_a_file(path):
        raise OptionError(f"cannot read {path}: it is not a file")
    try:
        yield
    except FileNotFoundError:
        raise OptionError(f"cannot read {path}: no such file") from None
    except (ValueError, OSError) as e:
        reason = str(e).splitlines()[-1] if str(e) else type(e).__name__
        reason = reason.split(f"{path}: ", 1)[-1]  # the video reader names the file too: once is enough
        raise OptionError(f"cannot read {path}: {reason}") from None


def sized_after(clip: Clip | None, pipe, settings: dict) -> dict:
    """`settings` (the keywords of `Pipeline.resolve`), sized after the clip unless they name a size: the clip's
    aspect ratio at about the model's pixel count, in multiples of its size multiple (`pipe`: a Pipeline)."""
    if clip is None or settings.get("width") is not None or settings.get("height") is not None:
        return settings
    d, (width, height) = pipe.defaults, clip.size
    width, height = size_for_area(width / height, d.width * d.height, pipe.size_multiple)
    return dict(settings, width=width, height=height)


def first_frame(clip: Clip, fps: float, size: tuple[int, int], fit: str) -> np.ndarray:
    """The clip's first frame (an image's only one) fitted to `size`: (H, W, 3) uint8."""
    return conform(Clip(clip.frames[:1], None, clip.name), fps, size, fit).frames[0]


def conform(clip: Clip, fps: float, size: tuple[int, int], fit: str = "crop") -> Clip:
    """The clip at `fps` (an image stays one frame) and `size` (width, height), each change reported."""
    frames, changes = clip.frames, []
    if clip.fps is not None and abs(clip.fps - fps) > 1e-3:
        frames = resample(frames, clip.fps, fps)
        changes.append(f"{clip.fps:g} fps -> {fps:g} fps ({len(clip.frames)} -> {len(frames)} frames)")
    if clip.size != tuple(size):
        frames = fit_frames(frames, size, fit)
        changes.append(f"{clip.size[0]}x{clip.size[1]} -> {size[0]}x{size[1]} ({fit})")
    if changes:
        log.warning("%s: %s", clip.name, "; ".join(changes))
    return Clip(frames, fps if clip.fps is not None else None, clip.name, clip.metadata)


def resample(frames: np.ndarray, src_fps: float, fps: float) -> np.ndarray:
    """The source frame nearest in time to each output frame; the duration is kept."""
    count = max(1, round(len(frames) * fps / src_fps))
    index = np.minimum(np.round(np.arange(count) * src_fps / fps).astype(int), len(frames) - 1)
    return frames[index]


def fit_frames(frames: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size[1], size[0], 3) by `fit`; scaled with antialiasing."""
    check_fit(fit)
    t, h, w, _ = frames.shape
    tw, th = size
    if fit == "stretch":
        return _resize(frames, tw, th)
    scale = (max if fit == "crop" else min)(tw / w, th / h)
    # crop: cover the target, never short of it; pad: fit inside it, never over
    sw, sh = ((max(tw, math.ceil(w * scale - 1e-6)), max(th, math.ceil(h * scale - 1e-6))) if fit == "crop"
              else (min(tw, max(1, round(w * scale))), min(th, max(1, round(h * scale)))))
    scaled = _resize(frames, sw, sh)
    if fit == "crop":
        x, y = (sw - tw) // 2, (sh - th) // 2
        return np.ascontiguousarray(scaled[:, y:y + th, x:x + tw])
    out = np.zeros((t, th, tw, 3), np.uint8)
    x, y = (tw - sw) // 2, (th - sh) // 2
    out[:, y:y + sh, x:x + sw] = scaled
    return out


def _resize(frames: np.ndarray, width: int, height: int, chunk: int = 32) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i in range(0, len(frames), chunk):  # in chunks, so a long clip is never held as floats
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + chunk])).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        out[i:i + chunk] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def hold(frames: np.ndarray, count: int, at_start: bool = False) -> np.ndarray:
    """At least `count` frames: a clip too short is lengthened by holding its last (or first) frame."""
    missing = count - len(frames)
    if missing <= 0:
        return frames
    edge = frames[:1] if at_start else frames[-1:]
    pad = np.repeat(edge, missing, axis=0)
    return np.concatenate([pad, frames] if at_start else [frames, pad])
