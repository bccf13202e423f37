"""Every setting a user can give, declared once: its name, type, bounds, default, help, the commands and batch
modes that take it, and where its value is recorded.

The command line's options (cli/options.py), the checks of a jsonl line (batch_file.py), the request a command or
a line becomes (request.py) and the metadata written into each video (Pipeline.resolve) are all read from
`SETTINGS`, so a new setting is one row here plus the code that uses it.

A name may have several rows when its meaning depends on the command: `seconds` is the video's length for
`generate`, the seconds added for `extend`, and the transition's length for `loop` and `connect`. A command's
input files (the clips of the editing commands, the prompt file of `batch`) are its own arguments, not
settings.

This module is torch-free: `sora --help` reads it.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import OptionError
from .parsers import (check_text, parse_aspect, parse_device, parse_dtype, parse_lora, parse_resolution, parse_size,
                      parse_weights_file)
from .shots import parse_storyboard

MODES = ("generate", "extend", "loop", "connect", "edit")  # the commands that make one video; batch lines' modes
EDITS = MODES[1:]
BATCH = "batch"

# Longer clips are made in windows that stream to the MP4, so memory does not bound a clip's length; time does.
MAX_SECONDS = 600  # a clip the model makes: 10 minutes are days of GPU time at Wan's size
MAX_FRAMES = 9601  # 10 minutes at Wan's 16 fps
MAX_LOOP_SECONDS = 3600  # `loop --duration` repeats frames already made: an hour costs only encoding
SAMPLERS = ("unipc", "euler")
CACHES = ("first-block", "magcache", "teacache", "calibrate")  # caching.py
OFFLOADS = ("none", "model", "block")  # memory.py
QUANTIZE = ("none", "fp8")  # networks.py


@dataclass(frozen=True)
class Limit:
    """The values a number allows: [low, high], or (low, high] with `above`, whole numbers with `whole`."""

    low: float
    high: float
    what: str  # "a duration in seconds"
    above: bool = False
    whole: bool = False
    why: str = ""

    def allowed(self) -> str:
        low, high = shown(self.low), shown(self.high)
        span = f"above {low} and at most {high}" if self.above else f"from {low} to {high}"
        return f"{self.what} {span}" + (f" ({self.why})" if self.why else "")

    def holds(self, value) -> bool:
        # NaN fails every comparison, so each test is written as what must hold, never as what must not.
        number = isinstance(value, int if self.whole else (int, float)) and not isinstance(value, bool)
        return number and (value > self.low if self.above else value >= self.low) and value <= self.high


@dataclass(frozen=True)
class Setting:
    """One setting as the user gives it. `default` None means "the model's default" (or "none given")."""

    name: str  # the Python and jsonl name; the option is --name with "-" for "_" unless `flag` says otherwise
    kind: type  # int, float, str, bool or Path, on the command line
    help: str
    commands: tuple[str, ...]  # the commands whose command line takes it
    lines: tuple[str, ...] = ()  # the batch modes whose jsonl lines take it
    default: object = None
    limit: Limit | None = None
    choices: tuple = ()
    parse: Callable | None = None  # text -> value (a size -> (width, height))
    text: bool = False  # free text: UTF-8 and at most parsers.MAX_PROMPT characters
    required: bool = False
    argument: bool = False  # given by position on the command line, not as an option
    multiple: bool = False  # may be given again and again: a tuple of values
    excludes: tuple[str, ...] = ()  # settings that say the same thing another way: giving both is an error
    job: tuple[str, ...] = ()  # the attributes of the resolved `request.Job` it sets
    metadata: tuple[str, ...] = ()  # the keys its resolved value is recorded under in a video's metadata
    flag: str | None = None
    short: str | None = None
    json_kinds: tuple[type, ...] | None = None  # what a jsonl line may give, if not the command line's kind

    @property
    def option(self) -> str:
        """How messages name it: its option, or "the prompt" for an argument."""
        return f"the {self.name}" if self.argument else self.flag or "--" + self.name.replace("_", "-")

    @property
    def accepts(self) -> tuple[type, ...]:
        """The JSON types a jsonl line may give."""
        if self.json_kinds:
            return self.json_kinds
        return {int: (int,), float: (int, float), bool: (bool,)}.get(self.kind, (str,))


def shown(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 24 else text[:20] + "..."


def parse_batch_size(text: str) -> int | None:
    """A count, or auto (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        size = int(text)
    except ValueError:
        size = text  # named as typed in the message
    check_number("--batch-size", BATCH_SIZE, size)
    return size


def check_number(label: str, limit: Limit, value) -> None:
    """OptionError unless `value` is within `limit`; None means "the default"."""
    if value is not None and not limit.holds(value):
        raise OptionError(f"{label} {shown(value)} is not allowed; use {limit.allowed()}")


def check(setting: Setting, value, label: str | None = None):
    """The value as the program uses it (parsed), or OptionError naming `label` (the option by default)."""
    label = label or setting.option
    if value is None:
        return None
    if setting.multiple:  # a batch line may give one value as it is
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(check(dataclasses.replace(setting, multiple=False), v, label) for v in values) or None
    if setting.text:  # a prompt says what the video shows; an empty negative prompt is a choice
        check_text(label, value, blank_ok=setting.name != "prompt")
    if setting.limit:
        check_number(label, setting.limit, value)
    if setting.choices:
        folded = value.lower() if isinstance(value, str) else value
        if folded not in setting.choices:
            raise OptionError(f"{label} {value!r} is not allowed; choose one of: "
                              f"{', '.join(map(str, setting.choices))}")
        return folded
    return setting.parse(value) if setting.parse else value


def random_seed() -> int:
    """The seed of a render that names none: written into its metadata (and its file name), so it can be remade."""
    return secrets.randbelow(2**32)


def frames_for_seconds(seconds: float, fps: float) -> int:
    """A 4n + 1 frame count of about that length."""
    frames = 4 * max(1, round(seconds * fps / 4)) + 1
    if frames > MAX_FRAMES:
        raise OptionError(f"--seconds {seconds:g} at {fps:g} fps is {frames} frames; at most {MAX_FRAMES} are "
                          f"allowed ({FRAMES.why})")
    return frames


FRAMES = Limit(1, MAX_FRAMES, "a frame count", whole=True, why="10 minutes at 16 fps")
SECONDS = Limit(0, MAX_SECONDS, "a duration in seconds", above=True, why="10 minutes")
GUIDANCE = Limit(0, 100, "a guidance scale", why="1 turns guidance off")
BATCH_SIZE = Limit(1, 64, "auto or a whole count", whole=True)
_RENDER = (*MODES, BATCH)  # commands that take the model and sampling settings
_MODEL_DEFAULT = "Default: the model's."

SETTINGS: tuple[Setting, ...] = (
    # What the video shows.
    Setting("prompt", str, "What the video shows. With --storyboard, optional: said before every shot's prompt.",
            ("generate",), ("generate",), text=True, argument=True, job=("prompt",), metadata=("prompt",)),
    Setting("prompt", str, "What the new frames show. Default: the prompt sora stored in the input, if any.",
            ("extend", "loop", "connect"), ("extend", "loop", "connect"), text=True),
    Setting("prompt", str, "What the result should show.", ("edit",), ("edit",), text=True, required=True),
    Setting("negative", str, "Negative prompt. " + _MODEL_DEFAULT, _RENDER, MODES, text=True,
            job=("negative_prompt",), metadata=("negative_prompt",)),
    Setting("seed", int, "Random seed; the same seed gives the same video. Batch: the seed of the lines that give "
            "none (default: derived from each line).", _RENDER, MODES,
            limit=Limit(0, 2**63 - 1, "a whole number", whole=True, why="2^63-1"), job=("seed",), metadata=("seed",)),
    Setting("model", str, "Model folder, known name (see `sora models`) or hub repo id. Default: sora-tiny.",
            _RENDER, job=("model",), metadata=("model",)),
    Setting("lora", str, "LoRA file (.safetensors) merged into the transformer, PATH or PATH:SCALE (scale 1 if "
            "none); give it again for several. For a two-expert model, the high-noise expert's.", _RENDER, MODES,
            parse=parse_lora, multiple=True, json_kinds=(str, list), job=("loras",), metadata=("lora",)),
    Setting("lora_2", str, "LoRA for a two-expert model's low-noise expert (Wan 2.2 A14B), PATH or PATH:SCALE.",
            _RENDER, MODES, parse=parse_lora, multiple=True, json_kinds=(str, list), job=("loras_2",),
            metadata=("lora_2",)),
    Setting("transformer", str, "A single-file transformer to run instead of the model folder's weights, in Wan's "
            "own key names as ComfyUI users download them: .gguf (Q8_0, Q6_K, Q5_K, Q4_K and more; kept quantised) "
            "or .safetensors (bf16, fp16, or fp8 with its scales; fp8 kept). The model folder still gives the "
            "configs, VAE and text encoder; its own transformer weights are neither needed nor fetched.", _RENDER,
            parse=parse_weights_file, job=("transformer",), metadata=("transformer",)),
    Setting("transformer_2", str, "The same for a two-expert model's low-noise expert (Wan 2.2 A14B).", _RENDER,
            parse=parse_weights_file, job=("transformer_2",), metadata=("transformer_2",)),
    Setting("quantize", str, "fp8: store the transformer's block weights in float8 (e4m3, a scale per output "
            "channel), half the memory of bf16, computed in the model's dtype; none: as loaded.", _RENDER,
            default="none", choices=QUANTIZE, job=("quantize",), metadata=("quantize",)),
    # Size and length: each given one way or another, never both.
    Setting("size", str, "WIDTHxHEIGHT, e.g. 832x480. Default: the model's size, or an input's aspect ratio at "
            "the model's pixel count.", _RENDER, MODES, parse=parse_size, excludes=("aspect", "resolution"),
            job=("width", "height"), metadata=("width", "height")),
    Setting("aspect", str, "Aspect ratio W:H, e.g. 16:9, at the model's pixel count or --resolution.",
            ("generate", BATCH), ("generate",), parse=parse_aspect, excludes=("size",), job=("width", "height")),
    Setting("resolution", str, "Short side, e.g. 480p. Default: the model's pixel count.", ("generate", BATCH),
            ("generate",), parse=parse_resolution, excludes=("size",), json_kinds=(str, int),
            job=("width", "height")),
    Setting("frames", int, "Number of frames (4n+1).", ("generate", BATCH), ("generate",), limit=FRAMES,
            excludes=("seconds",), job=("num_frames",), metadata=("num_frames",)),
    Setting("seconds", float, "Duration in seconds (instead of --frames).", ("generate", BATCH), ("generate",),
            limit=SECONDS, excludes=("frames",), job=("num_frames",)),
    Setting("seconds", float, "How much to add, in seconds.", ("extend",), ("extend",), default=2.0,
            limit=SECONDS),
    Setting("seconds", float, "Length of the transition. Default: one model window.", ("loop", "connect"),
            ("loop", "connect"), limit=SECONDS),
    Setting("fps", int, "Frames per second of the MP4. " + _MODEL_DEFAULT, ("generate", BATCH), ("generate",),
            limit=Limit(1, 120, "a whole frame rate", whole=True, why="what video players play"),
            job=("fps",), metadata=("fps",)),
    # Sampling.
    Setting("steps", int, "Sampling steps. " + _MODEL_DEFAULT, _RENDER, MODES,
            limit=Limit(1, 1000, "a whole number of steps", whole=True, why="a flow schedule's 1000 timesteps"),
            job=("num_steps",), metadata=("steps",)),
    Setting("guidance", float, "Classifier-free guidance scale (1 turns it off). " + _MODEL_DEFAULT, _RENDER,
            MODES, limit=GUIDANCE, job=("guidance_scale",), metadata=("guidance",)),
    Setting("guidance_2", float, "Guidance scale of a two-expert model's low-noise expert (Wan 2.2 A14B). "
            "Default: the model's, else --guidance.", _RENDER, MODES,
            limit=Limit(0, 100, "a guidance scale", why="the low-noise expert's; 1 turns its guidance off"),
            job=("guidance_scale_2",), metadata=("guidance_2",)),
    Setting("shift", float, "Timestep shift of the flow schedule. " + _MODEL_DEFAULT, _RENDER, MODES,
            limit=Limit(0, 100, "a timestep shift", above=True), job=("shift",), metadata=("shift",)),
    Setting("sampler", str, "euler or unipc. Default: the model's scheduler.", _RENDER, MODES, choices=SAMPLERS,
            job=("sampler",), metadata=("sampler",)),
    Setting("passes", int, "Text-to-video in 1 pass, or 2: draw the first frame, then animate it (follows "
            "direction words far better where the model was trained for it; twice the time). Default: the "
            "model's (sora-tiny: 2).", ("generate", BATCH), ("generate",), choices=(1, 2), job=("passes",),
            metadata=("passes",)),
    Setting("cache", str, "Step cache: skip the transformer's blocks on steps where they would barely change "
            "(--cache-threshold says how little). first-block runs the first block to decide; magcache and "
            "teacache decide from the model's calibration (published for Wan 2.1); calibrate skips nothing and "
            "measures MagCache's for this model (in the --json record). Default: none.", _RENDER, MODES,
            choices=CACHES, job=("cache",), metadata=("cache",)),
    Setting("cache_threshold", float, "How much estimated change the step cache lets pass before it runs the "
            "blocks again (0 never skips). Default: the method's (first-block 0.05; magcache and teacache: the "
            "model's calibration).", _RENDER, MODES,
            limit=Limit(0, 1, "an estimated relative change"), job=("cache_threshold",),
            metadata=("cache_threshold",)),
    # Inputs and editing.
    Setting("image", Path, "Image (png, jpg, webp) to start from: the first frame.", ("generate",),
            ("generate",)),
    Setting("last_image", Path, "Image (png, jpg, webp) to end on: the last frame.", ("generate",), ("generate",)),
    Setting("loop", bool, "Make the last frame flow into the first (one frame fewer than asked).", ("generate",),
            ("generate",), default=False),
    Setting("storyboard", str, "A .json file of shots, [{\"prompt\": ..., \"seconds\": ...}, ...], made as one "
            "video: the prompt changes where a shot starts, the picture carries on (\"cut\": true starts a shot "
            "afresh). A batch line gives the list itself.", ("generate",), ("generate",),
            parse=lambda v: parse_storyboard(v, MAX_SECONDS), json_kinds=(list,),
            excludes=("frames", "seconds", "loop", "last_image")),
    Setting("fit", str, "How an input of another shape is fitted: crop (keep the centre), pad or stretch.", MODES,
            MODES, default="crop", choices=("crop", "pad", "stretch")),
    Setting("backward", bool, "Add the new frames before the clip, leading into it.", ("extend",), ("extend",),
            default=False, metadata=("backward",)),
    Setting("duration", float, "Seconds to write, repeating the loop. Default: one loop.", ("loop",), ("loop",),
            limit=Limit(0, MAX_LOOP_SECONDS, "a duration in seconds", above=True, why="one hour"),
            metadata=("duration",)),
    Setting("strength", float, "How much is redone: near 0 keeps the clip, 1 ignores it.", ("edit",), ("edit",),
            default=0.6, limit=Limit(0, 1, "a strength", above=True), metadata=("strength",)),
    # Where the result goes, and how the run looks.
    # text, not a Path: a new folder is named with a trailing "/", which a Path drops
    Setting("out", str, "Output .mp4 file, or a directory for an automatic name.", MODES, short="-o"),
    Setting("out", str, "", (), MODES),  # a line's output: a relative .mp4 name inside the batch's folder
    Setting("metadata", str, "mp4: settings in the MP4's tags; json: also a .json sidecar.", MODES,
            default="mp4", choices=("mp4", "json")),
    Setting("preview", bool, "Also write NAME.preview.png beside the video: a contact sheet of up to 8 of its "
            "frames, first to last.", _RENDER, MODES, default=False),
    Setting("preview_webp", bool, "Also write NAME.preview.webp beside the video: a small looping animation of it "
            "(at most 12 frames a second and 256 pixels wide) that browsers and image viewers play.", _RENDER,
            MODES, default=False),
    Setting("overwrite", bool, "Replace an existing output file.", MODES, default=False),
    Setting("device", str, "cuda, mps or cpu. Default: the best available (under torchrun: cuda:LOCAL_RANK).",
            _RENDER, parse=parse_device),
    Setting("dtype", str, "float32, bfloat16 or float16. Default: bf16 on GPU, fp32 on CPU.", _RENDER,
            parse=parse_dtype),
    Setting("attention", str, "Attention kernel: auto (FlashAttention 3 on Hopper GPUs, else SageAttention, "
            "where installed; else PyTorch's SDPA), sdpa, flash or sage.", _RENDER, default="auto",
            choices=("auto", "sdpa", "flash", "sage")),
    Setting("compile", bool, "Compile the transformer's blocks with torch.compile: slow on the first step of each "
            "new size, faster after it on a GPU.", _RENDER, default=False),
    Setting("offload", str, "Where the networks wait: none (all on the accelerator), model (each visits it while "
            "it runs), block (the transformer's blocks streamed through it a few at a time: the least memory). "
            "auto: the lightest that fits the free GPU memory (none without CUDA).", _RENDER, default="auto",
            choices=("auto", *OFFLOADS)),
    Setting("vae_tiling", str, "Decode (and encode) in overlapping spatial tiles: bounded memory at any size. "
            "auto: when the decode would not fit the free GPU memory (off without CUDA).", _RENDER, default="auto",
            choices=("auto", "on", "off")),
    Setting("offline", bool, "Never contact the hub; use the local cache only.", _RENDER, default=False),
    Setting("json", bool, "Print one JSON record on stdout (one per item for batch).", _RENDER, default=False),
    Setting("quiet", bool, "No progress bars (and no batch summary).", _RENDER, default=False, short="-q"),
    # Batches.
    Setting("out_dir", Path, "Folder for the videos and manifest.jsonl.", (BATCH,), required=True),
    Setting("repeat", int, "Render each line N times, with seeds seed, seed+1, ...", (BATCH,), MODES, default=1,
            limit=Limit(1, 10_000, "a whole count", whole=True)),
    Setting("batch_size", str, "Denoise up to N consecutive text-to-video items that differ only in prompt and "
            "seed at once: faster per clip, N times the activations' memory. auto: up to 8 small clips (4096 "
            "transformer tokens in all), large ones alone.", (BATCH,), default="auto", parse=parse_batch_size),
    Setting("force", bool, "Render again the items the manifest records as done.", (BATCH,), default=False),
    Setting("dry_run", bool, "Check every line, list what would render; load no model.", (BATCH,), default=False),
    # Only in jsonl lines: what the command line gives as arguments.
    Setting("mode", str, "", (), MODES, default="generate", choices=MODES),
    Setting("video", str, "", (), EDITS, json_kinds=(str, list)),
)
NAMES = tuple(dict.fromkeys(s.name for s in SETTINGS))  # every name once, in the table's order


def of_command(command: str) -> dict[str, Setting]:
    """The settings a command's command line takes, by name."""
    return {s.name: s for s in SETTINGS if command in s.commands}


def of_mode(mode: str) -> dict[str, Setting]:
    """The settings a batch line of that mode takes, by name."""
    return {s.name: s for s in SETTINGS if mode in s.lines}


def recorded() -> dict[str, str]:
    """Job attribute -> metadata key, for every resolved setting the metadata records, in the table's order."""
    return {attr: key for s in SETTINGS for attr, key in zip(s.job, s.metadata)}


def check_keywords(values: dict) -> dict:
    """The Python API's keyword arguments (`request.Job`'s names: num_steps, guidance_scale, ...) checked as the
    settings they come from, each error naming the keyword; the values as the pipeline uses them."""
    rows: dict[str, Setting] = {}
    for s in SETTINGS:
        if len(s.job) == 1 and s.parse is None and s.name not in ("prompt", "model", "quantize"):
            rows.setdefault(s.job[0], s)  # `frames` before `seconds`: num_frames is a frame count
    return {k: check(rows[k], v, k) if k in rows else v for k, v in values.items()}
