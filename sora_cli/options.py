"""What users type: parsing and checking options, and snapping sizes and lengths to what a model can make.

A model makes frames whose sides are multiples of `multiple` (VAE stride x patch size, 16 for Wan) and clips
of `4n + 1` frames (the causal VAE turns the first frame into one latent frame, then every 4 into one more).
Snapping is never silent: every change is logged with the value used.
"""

from __future__ import annotations

import logging
import math
import re

from .errors import OptionError

log = logging.getLogger("sora")


def parse_size(text: str) -> tuple[int, int]:
    """'832x480' -> (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m or int(m[1]) == 0 or int(m[2]) == 0:
        raise OptionError(f"--size '{text}' is not WIDTHxHEIGHT with positive whole numbers, e.g. 832x480")
    return int(m[1]), int(m[2])


def parse_aspect(text: str) -> float:
    """'16:9' -> 16/9 (width over height)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[:/]\s*(\d+(?:\.\d+)?)\s*", text)
    if not m or float(m[1]) == 0 or float(m[2]) == 0:
        raise OptionError(f"--aspect '{text}' is not W:H with positive numbers, e.g. 16:9, 9:16, 1:1, 4:3")
    ratio = float(m[1]) / float(m[2])
    if not 0.2 <= ratio <= 5:
        raise OptionError(f"--aspect '{text}' is too extreme; allowed: between 1:5 and 5:1")
    return ratio


def parse_resolution(text: str) -> int:
    """'480p' -> 480, the length of the short side."""
    m = re.fullmatch(r"\s*(\d+)\s*[pP]?\s*", text)
    if not m or int(m[1]) == 0:
        raise OptionError(f"--resolution '{text}' is not a short-side length such as 480p or 720p")
    return int(m[1])


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


def frames_for_seconds(seconds: float, fps: float) -> int:
    if seconds <= 0 or fps <= 0:
        raise OptionError("--seconds and --fps must be positive")
    return 4 * max(1, round(seconds * fps / 4)) + 1


def snap_frames(num_frames: int) -> int:
    if num_frames < 1:
        raise OptionError(f"--frames {num_frames} is not allowed; use a positive count such as 17, 33 or 81")
    snapped = 4 * _round_half_up((num_frames - 1) / 4) + 1
    if snapped != num_frames:
        log.warning("frame count %d is not 4n+1; using %d", num_frames, snapped)
    return snapped


def _snap(value: int, multiple: int) -> int:
    return max(multiple, _round_half_up(value / multiple) * multiple)


def _round_half_up(x: float) -> int:
    # Python's round() goes to even on ties, which would snap 40 down to 32 but 56 up to 64.
    return int(x + 0.5)


SAMPLERS = ("unipc", "euler")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def check_sampling(num_steps: int | None = None, guidance_scale: float | None = None, shift: float | None = None,
                   sampler: str | None = None, seed: int | None = None, passes: int | None = None) -> None:
    """Raise OptionError for the first setting out of range; None means "the model's default"."""
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
        raise OptionError(f"--steps {num_steps} is not allowed; use a whole number of 1 or more")
    if guidance_scale is not None and guidance_scale < 0:
        raise OptionError(f"--guidance {guidance_scale} is not allowed; use 0 or more (1 turns guidance off)")
    if shift is not None and shift <= 0:
        raise OptionError(f"--shift {shift} is not allowed; use a positive number")
    if sampler is not None and sampler.lower() not in SAMPLERS:
        raise OptionError(f"--sampler '{sampler}' is not allowed; choose one of: {', '.join(SAMPLERS)}")
    if seed is not None and not 0 <= seed < 2**63:
        raise OptionError(f"--seed {seed} is not allowed; use a whole number from 0 to 2^63-1")
    if passes is not None and passes not in (1, 2):
        raise OptionError(f"--passes {passes} is not allowed; choose 1 (one pass) or 2 (first frame, then the rest)")


def parse_device(name: str) -> str:
    """'cuda', 'cuda:1', 'mps' or 'cpu'; whether this machine has it is checked when the model is loaded."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name.strip().lower()):
        raise OptionError(f"--device '{name}' is not allowed; choose cpu, cuda, cuda:N or mps")
    return name.strip().lower()


def parse_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16' (a torch dtype name)."""
    if name.lower() not in DTYPES:
        raise OptionError(f"--dtype '{name}' is not allowed; choose one of: float32, bfloat16, float16")
    return DTYPES[name.lower()]
