"""What users type: parsing and checking options, and snapping sizes and lengths to what a model can make.

A model makes frames whose sides are multiples of `multiple` (VAE stride x patch size, 16 for Wan) and clips
of `4n + 1` frames (the causal VAE turns the first frame into one latent frame, then every 4 into one more).
Snapping is never silent: every change is logged with the value used.

Every number a user can type, on the command line or in a batch file, is checked here against `LIMITS`:
finite, and within bounds that say what is allowed and why.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from .errors import OptionError

log = logging.getLogger("sora")

# Longer clips are made in windows that stream to the MP4, so memory does not bound a clip's length; time does.
MAX_SECONDS = 600  # a clip the model makes: 10 minutes are days of GPU time at Wan's size
MAX_FRAMES = 9601  # 10 minutes at Wan's 16 fps
MAX_LOOP_SECONDS = 3600  # `loop --duration` repeats frames already made: an hour costs only encoding
MAX_SIDE = 4096  # 4K; the VAE alone would need tens of GB a frame beyond it
MAX_FPS = 120  # what H.264 players and browsers play back
MAX_PROMPT = 10_000  # characters; text encoders read 512 tokens at most, and a prompt goes into the MP4's tags


@dataclass(frozen=True)
class Limit:
    """The values an option allows: [low, high], or (low, high] with `above`, whole numbers with `whole`."""

    low: float
    high: float
    what: str  # "a duration in seconds"
    above: bool = False
    whole: bool = False
    why: str = ""

    def allowed(self) -> str:
        low, high = _shown(self.low), _shown(self.high)
        span = f"above {low} and at most {high}" if self.above else f"from {low} to {high}"
        return f"{self.what} {span}" + (f" ({self.why})" if self.why else "")


LIMITS = {
    "--frames": Limit(1, MAX_FRAMES, "a frame count", whole=True, why="10 minutes at 16 fps"),
    "--seconds": Limit(0, MAX_SECONDS, "a duration in seconds", above=True, why="10 minutes"),
    "--duration": Limit(0, MAX_LOOP_SECONDS, "a duration in seconds", above=True, why="one hour"),
    "--fps": Limit(1, MAX_FPS, "a whole frame rate", whole=True, why="what video players play"),
    "--steps": Limit(1, 1000, "a whole number of steps", whole=True, why="a flow schedule's 1000 timesteps"),
    "--guidance": Limit(0, 100, "a guidance scale", why="1 turns guidance off"),
    "--guidance-2": Limit(0, 100, "a guidance scale", why="the low-noise expert's; 1 turns its guidance off"),
    "--shift": Limit(0, 100, "a timestep shift", above=True),
    "--strength": Limit(0, 1, "a strength", above=True),
    "--seed": Limit(0, 2**63 - 1, "a whole number", whole=True, why="2^63-1"),
    "--repeat": Limit(1, 10_000, "a whole count", whole=True),
    "--batch-size": Limit(1, 64, "auto or a whole count", whole=True),
}


def check_number(option: str, value: float | int | None) -> None:
    """OptionError unless `value` is a finite number within `LIMITS[option]`; None means "the default"."""
    if value is None:
        return
    limit = LIMITS[option]
    # NaN fails every comparison, so each test is written as what must hold, never as what must not.
    number = isinstance(value, int if limit.whole else (int, float)) and not isinstance(value, bool)
    ok = number and (value > limit.low if limit.above else value >= limit.low) and value <= limit.high
    if not ok:
        raise OptionError(f"{option} {_shown(value)} is not allowed; use {limit.allowed()}")


def _shown(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 24 else text[:20] + "..."


def check_side(label: str, value: int, high: int = MAX_SIDE, why: str = "4K") -> None:
    if not 1 <= value <= high:
        raise OptionError(f"{label}: a side of {value} pixels is not allowed; at most {high} ({why})")


def check_text(what: str, text: str | None, blank_ok: bool = True) -> None:
    """Text the user gave: UTF-8 (a shell passes a prompt's bytes through undecoded, Python keeps those as lone
    surrogates, and JSON can spell them as escapes), at most MAX_PROMPT characters, and, unless `blank_ok`, more
    than white space."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise OptionError(f"{what} is not valid UTF-8 text ({byte} at character {e.start + 1}); "
                          f"write it in UTF-8") from None
    if not blank_ok and not text.strip():
        raise OptionError(f"{what} is empty; say what the video shows")
    if len(text) > MAX_PROMPT:
        raise OptionError(f"{what} is {len(text)} characters long; at most {MAX_PROMPT} are allowed (a text "
                          f"encoder reads 512 tokens at most)")


def parse_size(text: str) -> tuple[int, int]:
    """'832x480' -> (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m or int(m[1]) == 0 or int(m[2]) == 0:
        raise OptionError(f"--size '{text}' is not WIDTHxHEIGHT with positive whole numbers, e.g. 832x480")
    for side in (int(m[1]), int(m[2])):
        check_side(f"--size {text.strip()}", side)
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
    check_side(f"--resolution {text.strip()}", int(m[1]))
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
    check_number("--seconds", seconds)
    check_number("--fps", fps)
    frames = 4 * max(1, round(seconds * fps / 4)) + 1
    if frames > MAX_FRAMES:
        raise OptionError(f"--seconds {seconds:g} at {fps:g} fps is {frames} frames; at most {MAX_FRAMES} are "
                          f"allowed ({LIMITS['--frames'].why})")
    return frames


def snap_frames(num_frames: int) -> int:
    check_number("--frames", num_frames)
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
                   sampler: str | None = None, seed: int | None = None, passes: int | None = None,
                   guidance_scale_2: float | None = None) -> None:
    """Raise OptionError for the first setting out of range; None means "the model's default"."""
    for option, value in (("--steps", num_steps), ("--guidance", guidance_scale), ("--shift", shift),
                          ("--seed", seed), ("--guidance-2", guidance_scale_2)):
        check_number(option, value)
    if sampler is not None and sampler.lower() not in SAMPLERS:
        raise OptionError(f"--sampler '{sampler}' is not allowed; choose one of: {', '.join(SAMPLERS)}")
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
