"""A video being made (`Stream`): its frames come out of the model as they are iterated and go straight into its
file, an MP4 or, for one frame, an image, with its previews beside it. Every command, batch line and storyboard
ends in one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    from .request import Job

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Stream:
    """A video being made: the model runs as `chunks` is iterated, each a (t, H, W, 3) uint8 array."""

    chunks: Iterator[np.ndarray]
    num_frames: int
    fps: float
    seed: int
    metadata: dict

    def write(self, path: Path, overwrite: bool = False, sidecars: dict[Path, dict] | None = None,
              preview: bool = False, animation: bool = False, thumbnail: Path | None = None) -> Path:
        """Encode the frames as they are made, as an MP4, or as an image (.png, .jpg, .webp) for one frame; if
        making them fails, no file is left behind. `sidecars` (JSON files beside it) appear with it or not at all.
        Once it is written: `preview` also writes a contact sheet of its frames beside it, `animation` a small
        animated WebP, and `thumbnail` names where its first, middle and last frames go (still.py)."""
        from . import files
        from .mp4 import Mp4Writer
        from .still import ImageWriter, is_image, previews

        writer = ImageWriter if is_image(path) else Mp4Writer  # a one-frame video may be written as an image
        extras = previews(path, self.num_frames, self.fps, preview, animation, thumbnail)
        for side in extras:
            files.refuse_existing(side, overwrite or side == thumbnail)
        with writer(path, self.fps, self.metadata, overwrite, sidecars=sidecars) as out:
            for chunk in self.chunks:
                for collector in extras.values():
                    collector.add(chunk)
                out.write(chunk)
        for side, collector in extras.items():
            collector.save(side, self.metadata, overwrite or side == thumbnail)
        return Path(path)


def keep_given(chunks: Iterable[np.ndarray], given: dict[int, np.ndarray], length: int) -> Iterator[np.ndarray]:
    """Frames given as input (video frame index, negative from the end of a `length`-frame clip -> frame) are
    written as given, not as the VAE reconstructs them."""
    given = {p % length: frame for p, frame in given.items()}
    position = 0
    for chunk in chunks:
        inside = [p - position for p in given if position <= p < position + len(chunk)]
        if inside:
            chunk = chunk.copy()
            for i in inside:
                chunk[i] = given[position + i]
        position += len(chunk)
        yield chunk


def as_stream(job: Job, chunks: Iterable[np.ndarray], total: int, operation: str, extra: dict) -> Stream:
    metadata = dict(job.metadata, operation=operation, num_frames=total, **extra)
    return Stream(iter(chunks), total, job.fps, job.seed, metadata)
