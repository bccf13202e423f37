"""Prompt files for `sora batch`: every line checked and turned into items, each with its seed and output name.

A `.txt` file holds one prompt a line; a `.jsonl` file one JSON object a line. Blank lines and lines starting with
`#` are skipped in both. Any other name (stdin, `<(...)`) is read as jsonl when its first line starts with `{`.
Values given on the command line are defaults that a line's own fields override.

Seeds: a line's `seed`, else `--seed`, else a seed derived from the line itself: the first four bytes, big-endian,
of SHA-256 of "{line number}\\n{prompt}". Reruns, other settings on the line and the number of ranks never change
it. With `--repeat N` (or a line's `repeat`) the line renders N times, with seeds seed, seed+1, ..., seed+N-1.

Names: `{line:04d}_{seed}_{slug}.mp4` inside DIR, or the line's `out` (a relative .mp4 path that must stay inside
DIR; with several repeats `_{seed}` is added before `.mp4`).

Modes: a line's `mode` is the command it stands for (`generate`, `extend`, `loop`, `connect`, `edit`), and it takes
that command's options under the same names and meanings. So `seconds` is the video's length for `generate`, but
the seconds added for `extend` and the transition's length for `loop` and `connect`; the command line's
--seconds/--frames (and every default the mode's command does not take) apply to `generate` lines only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import OptionError
from .files import not_a_file
from .naming import safe_join, slugify
from .request import Request, parse
from .parsers import split_lora
from .settings import BATCH, MODES, SETTINGS, check, of_command, of_mode
from .still import is_image

LINE_ROWS = {s.name: s for s in SETTINGS if s.lines}  # every field a line may have; its JSON types
_KIND = {(int, float): "a number", (int,): "a whole number", (str,): "text", (bool,): "true or false",
         (str, int): "text or a whole number", (list,): "a list"}
LINE_OWN = ("mode", "out", "repeat", "video")  # the line's, not its video's: they name the item and its inputs


@dataclass(frozen=True)
class Item:
    line: int
    request: Request  # its seed is always set
    name: str  # the output inside DIR, "/"-separated

    @property
    def prompt(self) -> str:
        return self.request.prompt or ""

    @property
    def mode(self) -> str:
        return self.request.mode

    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.request.inputs


@dataclass
class BatchFile:
    label: str  # the file's name in messages
    items: list[Item]
    errors: list[tuple[int, str]]  # (line number, what is wrong)


class LineError(ValueError):
    pass


def read_batch(file: str, out_dir: Path, defaults: dict | None = None, repeat: int = 1) -> BatchFile:
    """Every item of `file`, or the bad lines (all of them) in `.errors`; OptionError if it cannot be read."""
    label, text, base = _read_text(file)
    lines = text.split("\n")  # not splitlines(): a form feed or U+2028 in a prompt must not shift line numbers
    content = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    suffix = Path(file).suffix.lower() if file != "-" else ""
    jsonl = suffix == ".jsonl" or (suffix != ".txt" and bool(content) and content[0].startswith("{"))
    defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
    batch, owners = BatchFile(label, [], []), {}
    for number, raw in enumerate(lines, 1):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        try:
            fields = _json_fields(raw) if jsonl else {"prompt": raw}
            items = _items(number, fields, defaults, repeat, Path(out_dir), base)
            for item in items:
                other = owners.setdefault(item.name.lower(), number)  # lower: macOS and Windows ignore case
                if other != number:
                    raise LineError(f"output '{item.name}' is also the output of line {other}")
        except (LineError, OptionError) as e:
            batch.errors.append((number, str(e)))
        else:
            batch.items.extend(items)
    if not batch.items and not batch.errors:
        raise OptionError(f"{label} has no prompts (blank lines and # comments are skipped)")
    return batch


def line_seed(line: int, prompt: str) -> int:
    """The seed of a line that names none (see the module's docstring)."""
    return int.from_bytes(hashlib.sha256(f"{line}\n{prompt}".encode("utf-8")).digest()[:4], "big")


def _read_text(file: str) -> tuple[str, str, Path]:
    """(label, text, folder that relative input paths start from)."""
    if file == "-":
        stream = getattr(sys.stdin, "buffer", None)
        data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
        label, base = "<stdin>", Path.cwd()
    else:
        if not_a_file(Path(file)):
            raise OptionError(f"cannot read prompt file {file}: it is not a file")
        try:
            data = Path(file).read_bytes()
        except OSError as e:
            raise OptionError(f"cannot read prompt file {file}: {e.strerror or e}") from None
        label, base = file, Path(file).parent
    try:
        return label, data.decode("utf-8-sig"), base
    except UnicodeDecodeError:
        raise OptionError(f"{label} is not UTF-8 text") from None


def _json_fields(raw: str) -> dict:
    try:
        fields = json.loads(raw, parse_constant=_not_a_number)
    except LineError:
        raise
    except ValueError as e:
        raise LineError(f"not valid JSON ({e})") from None
    if not isinstance(fields, dict):
        raise LineError("a jsonl line must be one JSON object, e.g. {\"prompt\": \"a red fox\"}")
    unknown = sorted(set(fields) - set(LINE_ROWS))
    if unknown:
        raise LineError(f"unknown field {', '.join(map(repr, unknown))}; allowed: {', '.join(LINE_ROWS)}")
    for key, value in fields.items():
        kinds = LINE_ROWS[key].accepts
        if not isinstance(value, kinds) or (isinstance(value, bool) and kinds != (bool,)):  # True is an int too
            raise LineError(f"'{key}' must be {_KIND.get(kinds, 'text or a list')}, got {json.dumps(value)}")
    return fields


def _not_a_number(name: str):
    # Python's json reads NaN and Infinity, which JSON itself does not have; no setting takes them.
    raise LineError(f"{name} is not a number; give a finite number")


def _items(line: int, fields: dict, defaults: dict, repeat: int, out_dir: Path, base: Path) -> list[Item]:
    mode = fields.get("mode", "generate")
    if mode not in MODES:
        raise LineError(f"mode '{mode}' is not allowed; choose one of: {', '.join(MODES)}")
    images, videos = _inputs(mode, fields, base)
    rows = of_mode(mode)
    foreign = [k for k in fields if k not in rows]
    if foreign:
        raise LineError(f"mode '{mode}' does not take {', '.join(map(repr, foreign))}; it takes: "
                        f"{', '.join(k for k in rows if k not in LINE_OWN)}")
    own = {k: v for k, v in fields.items() if k not in LINE_OWN} | images
    for key in ("lora", "lora_2"):  # a LoRA's relative path starts at the prompt file, as an input's does
        if key in own:
            given = own[key] if isinstance(own[key], list) else [own[key]]
            if not all(isinstance(v, str) for v in given):
                raise LineError(f"'{key}' must be text or a list of text, got {json.dumps(own[key])}")
            own[key] = [_beside(base, v) for v in given]
    if "prompt" in own:
        own["prompt"] = own["prompt"].strip()
    # The command line's values are defaults for the lines whose mode takes the same setting (`seconds` of an
    # editing mode is not the video's length); one that the line says another way gives way to the line's.
    batch = of_command(BATCH)
    taken = {k: v for k, v in defaults.items() if k in rows and rows[k] is batch.get(k)}
    merged = {k: v for k, v in taken.items() if not any(k in rows[o].excludes for o in own)} | own
    request = parse({k: row for k, row in rows.items() if k not in LINE_OWN}, merged, mode, videos,
                    labels={"prompt": "the prompt"})
    repeat = fields.get("repeat", repeat)
    check(rows["repeat"], repeat)
    prompt = request.prompt or (request.storyboard[0].prompt if request.storyboard else "")
    first = line_seed(line, prompt) if request.seed is None else request.seed
    if first + repeat - 1 >= 2**63:
        raise LineError(f"seed {first} + {repeat} repeats goes past 2^63-1")

    items = []
    still = mode == "generate" and request.frames == 1  # a one-frame line is written as an image (PNG by default)
    for seed in range(first, first + repeat):
        name = _out_name(fields["out"], seed if repeat > 1 else None, out_dir, still) if "out" in fields else \
            f"{line:04d}_{seed}_{slugify(prompt or Path(videos[0]).stem)}{'.png' if still else '.mp4'}"
        items.append(Item(line, dataclasses.replace(request, seed=seed), name))
    return items


def _inputs(mode: str, fields: dict, base: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """The image and video files a line reads ({"image": path, "last_image": path} as given, and its videos),
    checked to exist and be readable (relative paths start at the prompt file), so that a missing input is a bad
    line, found before any model is loaded."""
    images = {k: fields[k] for k in ("image", "last_image") if fields.get(k) is not None}
    video = fields.get("video")
    for key in images if mode != "generate" else ():
        raise LineError(f"'{key}' goes with mode 'generate' (image-to-video), not '{mode}'")
    if mode == "generate" and video is not None:
        raise LineError("'video' needs a mode: extend, loop, edit or connect")
    wanted = 2 if mode == "connect" else 1
    videos = [video] if isinstance(video, str) else list(video or [])
    if mode != "generate" and (len(videos) != wanted or not all(isinstance(v, str) and v for v in videos)):
        shape = "a list of two video files" if wanted == 2 else "one video file"
        raise LineError(f"mode '{mode}' needs 'video': {shape}")

    def existing(name: str) -> str:
        path = base / Path(name).expanduser()
        if not path.is_file():
            where = f" (looked in {base})" if base != Path() else ""
            raise LineError(f"input file '{name}' " + ("is not a file" if path.exists() else "does not exist") + where)
        if not os.access(path, os.R_OK):
            raise LineError(f"input file '{name}' cannot be read (no permission)")
        return str(path)

    return {k: existing(v) for k, v in images.items()}, tuple(existing(v) for v in videos)


def _beside(base: Path, lora: str) -> str:
    path, scale = split_lora(lora)
    return f"{base / path.expanduser()}:{scale!r}"


def _out_name(out: str, seed: int | None, out_dir: Path, still: bool) -> str:
    if is_image(out) and not still:
        raise LineError(f"'out' {out!r} is an image, which holds one frame: give the line \"frames\": 1")
    if not out.lower().endswith(".mp4") and not is_image(out):
        raise LineError(f"'out' {out!r} must be an .mp4 file name (or, for one frame, .png, .jpg or .webp)")
    try:
        safe_join(out_dir, out)
    except ValueError:
        raise LineError(f"'out' {out!r} must be a relative path that stays inside {out_dir}") from None
    name = PurePosixPath(out.replace("\\", "/"))
    if seed is not None:  # several repeats cannot share one file
        name = name.with_name(f"{name.stem}_{seed}{name.suffix}")
    return str(name)
