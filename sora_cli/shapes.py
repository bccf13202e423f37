"""Frame sizes and clip lengths a model can make, and how a wish is brought to one.

A model makes frames whose sides are multiples of `multiple` (VAE stride x patch size, 16 for Wan) and clips
of `4n + 1` frames (the causal VAE turns the first frame into one latent frame, then every 4 into one more).
Snapping is never silent: every change is logged with the value used.
"""

from __future__ import annotations

import logging
import math

from .settings import FRAMES, check_number

log = logging.getLogger("sora")


def size_for_aspect(ratio: float, short_side: int, multiple: int) -> tuple[int, int]:
    """The (width, height) with that short side and the long side rounded down to the model's multiple."""
    short = _snap(short_side, multiple)
    long = max(multiple, int(short * max(ratio, 1 / ratio)) // multiple * multiple)
    return (long, short) if ratio >= 1 else (short, long)


def size_for_area(ratio: float, area: int, multiple: int) -> tuple[int, int]:
    """The (width, height), multiples of `multiple`, closest to that aspect ratio with about `area` pixels."""
    ideal_h = math.sqrt(area / ratio)
    best, best_cost = (multiple, multiple), math.inf
    for h in range(multiple, int(2 * ideal_h) + multiple, multiple):
        for w in range(multiple, int(2 * ideal_h * ratio) + multiple, multiple):
            # The ratio error counts double: a squashed frame looks worse than a slightly small one.
            cost = 2 * abs(math.log(w / (h * ratio))) + abs(math.log(w * h / area))
            if cost < best_cost:
                best, best_cost = (w, h), cost
    return best


def snap_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    w, h = _snap(width, multiple), _snap(height, multiple)
    if (w, h) != (width, height):
        log.warning("size %dx%d is not a multiple of %d; using %dx%d", width, height, multiple, w, h)
    return w, h


def snap_frames(num_frames: int) -> int:
    check_number("num_frames", FRAMES, num_frames)
    snapped = 4 * _round_half_up((num_frames - 1) / 4) + 1
    if snapped != num_frames:
        log.warning("frame count %d is not 4n+1; using %d", num_frames, snapped)
    return snapped


def _snap(value: int, multiple: int) -> int:
    return max(multiple, _round_half_up(value / multiple) * multiple)


def _round_half_up(x: float) -> int:
    # Python's round() goes to even on ties, which would snap 40 down to 32 but 56 up to 64.
    return int(x + 0.5)
