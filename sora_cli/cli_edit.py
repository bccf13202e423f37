"""The editing commands, `sora extend`, `loop`, `connect` and `edit`, registered on the app by cli.py.

They follow `generate`'s conventions (--out, --overwrite, --json, --quiet, --seed, --model, --metadata) and share
its runner; the work itself is in sora_cli.editing. torch is imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .request import EXTEND_SECONDS, STRENGTH, check_editing

# The options every editing command takes, defined once.
MODEL = typer.Option(None, help="Model folder, known name (see `sora models`) or hub repo id. Default: sora-tiny.")
OUT = typer.Option(None, "--out", "-o", help="Output .mp4 file, or a directory for an automatic name.")
SIZE = typer.Option(None, help="WIDTHxHEIGHT of the result. Default: the input's aspect ratio at the model's pixel count.")
FIT = typer.Option("crop", help="How an input of another shape is fitted: crop (keep the centre), pad or stretch.")
STEPS = typer.Option(None, help="Sampling steps. Default: the model's.")
GUIDANCE = typer.Option(None, help="Classifier-free guidance scale (1 turns it off).")
GUIDANCE_2 = typer.Option(None, "--guidance-2", help="Guidance scale of a two-expert model's low-noise expert. "
                          "Default: the model's, else --guidance.")
SHIFT = typer.Option(None, help="Timestep shift of the flow schedule.")
SAMPLER = typer.Option(None, help="euler or unipc. Default: the model's scheduler.")
SEED = typer.Option(None, help="Random seed; the same seed gives the same video.")
NEGATIVE = typer.Option(None, help="Negative prompt. Default: the model's.")
DEVICE = typer.Option(None, help="cuda, mps or cpu. Default: the best available.")
DTYPE = typer.Option(None, help="float32, bfloat16 or float16. Default: bf16 on GPU, fp32 on CPU.")
OFFLOAD = typer.Option(False, help="Keep each module on the accelerator only while it runs.")
OFFLINE = typer.Option(False, help="Never contact the hub; use the local cache only.")
METADATA = typer.Option("mp4", help="mp4: settings in the MP4's tags; json: also a .json sidecar.")
OVERWRITE = typer.Option(False, help="Replace an existing output file.")
JSON = typer.Option(False, "--json", help="Print one JSON record on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
PROMPT = typer.Option(None, help="What the new frames show. Default: the prompt sora stored in the input, if any.")


def register(app: typer.Typer) -> None:
    for command in (extend, loop, connect, edit):
        app.command()(command)


def extend(
    clip: Path = typer.Argument(..., help="Video (mp4, mov, webm, gif) or image to extend."),
    seconds: float = typer.Option(EXTEND_SECONDS, help="How much to add, in seconds."),
    backward: bool = typer.Option(False, help="Add the new frames before the clip, leading into it."),
    prompt: Optional[str] = PROMPT, model: Optional[str] = MODEL, out: Optional[Path] = OUT,
    size: Optional[str] = SIZE, fit: str = FIT, steps: Optional[int] = STEPS, guidance: Optional[float] = GUIDANCE,
    guidance_2: Optional[float] = GUIDANCE_2,
    shift: Optional[float] = SHIFT, sampler: Optional[str] = SAMPLER, seed: Optional[int] = SEED,
    negative: Optional[str] = NEGATIVE, device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    offload: bool = OFFLOAD, offline: bool = OFFLINE, metadata: str = METADATA, overwrite: bool = OVERWRITE,
    json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Continue a clip: its frames as they are, then new frames that carry its motion on."""
    from . import editing

    check_editing(fit, seconds=seconds)
    common = _common(locals())
    _run("extend", [clip], prompt, common,
         lambda pipe, inputs, kw: editing.extend(pipe, inputs[0], seconds, prompt, backward, **kw))


def loop(
    clip: Path = typer.Argument(..., help="Video (mp4, mov, webm, gif) to loop."),
    duration: Optional[float] = typer.Option(None, help="Seconds to write, repeating the loop. Default: one loop."),
    seconds: Optional[float] = typer.Option(None, help="Length of the transition back to the start. Default: one model window."),
    prompt: Optional[str] = PROMPT, model: Optional[str] = MODEL, out: Optional[Path] = OUT,
    size: Optional[str] = SIZE, fit: str = FIT, steps: Optional[int] = STEPS, guidance: Optional[float] = GUIDANCE,
    guidance_2: Optional[float] = GUIDANCE_2,
    shift: Optional[float] = SHIFT, sampler: Optional[str] = SAMPLER, seed: Optional[int] = SEED,
    negative: Optional[str] = NEGATIVE, device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    offload: bool = OFFLOAD, offline: bool = OFFLINE, metadata: str = METADATA, overwrite: bool = OVERWRITE,
    json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Make a clip repeat without a seam: the clip, then a transition from its end back to its start."""
    from . import editing

    check_editing(fit, seconds=seconds, duration=duration)
    common = _common(locals())
    _run("loop", [clip], prompt, common,
         lambda pipe, inputs, kw: editing.loop(pipe, inputs[0], seconds, duration, prompt, **kw))


def connect(
    first: Path = typer.Argument(..., help="The clip that comes first."),
    second: Path = typer.Argument(..., help="The clip the transition leads into (fitted to the first one's size)."),
    seconds: Optional[float] = typer.Option(None, help="Length of the transition. Default: one model window."),
    prompt: Optional[str] = PROMPT, model: Optional[str] = MODEL, out: Optional[Path] = OUT,
    size: Optional[str] = SIZE, fit: str = FIT, steps: Optional[int] = STEPS, guidance: Optional[float] = GUIDANCE,
    guidance_2: Optional[float] = GUIDANCE_2,
    shift: Optional[float] = SHIFT, sampler: Optional[str] = SAMPLER, seed: Optional[int] = SEED,
    negative: Optional[str] = NEGATIVE, device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    offload: bool = OFFLOAD, offline: bool = OFFLINE, metadata: str = METADATA, overwrite: bool = OVERWRITE,
    json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Join two clips: the first, a transition from its end into the second's start, then the second."""
    from . import editing

    check_editing(fit, seconds=seconds)
    common = _common(locals())
    _run("connect", [first, second], prompt, common,
         lambda pipe, inputs, kw: editing.connect(pipe, inputs[0], inputs[1], seconds, prompt, **kw))


def edit(
    clip: Path = typer.Argument(..., help="Video (mp4, mov, webm, gif) to redo."),
    prompt: str = typer.Option(..., help="What the result should show."),
    strength: float = typer.Option(STRENGTH, help="How much is redone: near 0 keeps the clip, 1 ignores it."),
    model: Optional[str] = MODEL, out: Optional[Path] = OUT,
    size: Optional[str] = SIZE, fit: str = FIT, steps: Optional[int] = STEPS, guidance: Optional[float] = GUIDANCE,
    guidance_2: Optional[float] = GUIDANCE_2,
    shift: Optional[float] = SHIFT, sampler: Optional[str] = SAMPLER, seed: Optional[int] = SEED,
    negative: Optional[str] = NEGATIVE, device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    offload: bool = OFFLOAD, offline: bool = OFFLINE, metadata: str = METADATA, overwrite: bool = OVERWRITE,
    json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Video-to-video: the clip's latents partly noised, then denoised with the new prompt (SDEdit)."""
    from . import editing

    check_editing(fit, strength=strength)
    common = _common(locals())
    _run("edit", [clip], prompt, common,
         lambda pipe, inputs, kw: editing.edit(pipe, inputs[0], prompt, strength, **kw))


_COMMON = ("model", "out", "size", "fit", "steps", "guidance", "guidance_2", "shift", "sampler", "seed", "negative",
           "device", "dtype", "offload", "offline", "metadata", "overwrite", "json_out", "quiet")


def _common(values: dict) -> dict:
    return {k: values[k] for k in _COMMON}


def _run(operation: str, inputs: list[Path], prompt: Optional[str], c: dict, make) -> None:
    """Check the settings (each command checked its own options), read the inputs, then load the model and
    write what `make(pipe, clips, kwargs)` renders."""
    from .clips import read
    from .options import check_text
    from .request import parse_settings
    from .runner import render_to_file

    # Blank is refused rather than read as "no prompt": leaving --prompt out is how to keep the stored one.
    check_text("--prompt", prompt, blank_ok=False)
    settings = parse_settings(size=c["size"], steps=c["steps"], guidance=c["guidance"], guidance_2=c["guidance_2"],
                              shift=c["shift"], sampler=c["sampler"], seed=c["seed"], negative=c["negative"])
    sources = [read(path) for path in inputs]  # an unreadable input stops here, before any model is loaded
    label = prompt or str(sources[0].metadata.get("prompt") or f"{Path(inputs[0]).stem} {operation}")
    render_to_file(label, settings, c, lambda pipe, kw: make(pipe, sources, dict(kw, fit=c["fit"])))
