"""A storyboard as the user writes it: a list of shots, each a prompt and a length, read and checked before any
model is loaded. Torch-free: the settings table parses `--storyboard` with it.

    [{"prompt": "a red fox walks through snow", "seconds": 3},
     {"prompt": "the fox starts to run", "seconds": 2},
     {"prompt": "the camera rises over the forest", "seconds": 3, "cut": true}]

A file may also hold {"shots": [...]}. `cut: true` starts that shot afresh from new noise (a hard cut); otherwise
the shot continues the one before it, carrying its last latent frames as every later window of a long video does.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import OptionError
from .parsers import check_text

MAX_SHOTS = 100
MAX_FILE_BYTES = 1 << 20  # a storyboard is text: a megabyte holds a hundred shots of the longest prompts
KEYS = ("prompt", "seconds", "cut")


@dataclass(frozen=True)
class Shot:
    prompt: str
    seconds: float
    cut: bool = False

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not False}


def parse_storyboard(value: str | list | dict, max_seconds: float) -> tuple[Shot, ...]:
    """A storyboard file's path (the command line) or its shots as JSON values (a batch line) -> the shots, at most
    `max_seconds` long in all. OptionError names the file or shot and what is wrong."""
    label = "--storyboard"
    if isinstance(value, str):
        path = Path(value)
        label = f"--storyboard {value}"
        if not path.is_file():
            raise OptionError(f"{label}: no such file; give a .json file of shots")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise OptionError(f"{label}: the file is over 1 MB; a storyboard is a list of at most {MAX_SHOTS} "
                              "shots")
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OptionError(f"{label}: not JSON text ({e}); write a list of "
                              '{"prompt": ..., "seconds": ...} shots') from None
    if isinstance(value, dict) and set(value) == {"shots"}:
        value = value["shots"]
    if not isinstance(value, list) or not value:
        raise OptionError(f'{label}: a storyboard is a non-empty list of {{"prompt": ..., "seconds": ...}} shots')
    if len(value) > MAX_SHOTS:
        raise OptionError(f"{label}: {len(value)} shots; at most {MAX_SHOTS} are allowed")
    shots = tuple(_shot(f"{label}: shot {i + 1}", item) for i, item in enumerate(value))
    total = sum(s.seconds for s in shots)
    if total > max_seconds:
        raise OptionError(f"{label}: the shots last {total:g} s; at most {max_seconds:g} s in all are allowed")
    return shots


def _shot(label: str, item) -> Shot:
    if not isinstance(item, dict):
        raise OptionError(f'{label} is not a {{"prompt": ..., "seconds": ...}} object')
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise OptionError(f"{label}: unknown key {unknown[0]!r}; a shot takes {', '.join(KEYS)}")
    prompt, seconds, cut = item.get("prompt"), item.get("seconds"), item.get("cut", False)
    if not isinstance(prompt, str):
        raise OptionError(f"{label}: 'prompt' must be text")
    check_text(f"{label}'s prompt", prompt, blank_ok=False)
    number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not number or not math.isfinite(seconds) or seconds <= 0:
        raise OptionError(f"{label}: 'seconds' must be a number above 0")
    if not isinstance(cut, bool):
        raise OptionError(f"{label}: 'cut' must be true or false")
    return Shot(prompt, float(seconds), cut)
