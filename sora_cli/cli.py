"""The `sora` command: parse, build a request, call the library, report.

Results go to stdout (the written path, or one JSON record with --json); progress bars and warnings go to
stderr. torch is imported only inside commands, so `sora --help` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_batch import register as register_batch
from .cli_edit import register as register_editing
from .cli_train import register as register_training
from .errors import SoraError
from .progress import WarningHandler
from .request import PASSES_HELP

# typer may vendor its own click: take its usage-error class from typer itself.
UsageError = sys.modules[typer.BadParameter.__module__].UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Text-to-video from the command line.")
DEBUG = False  # --debug: tracebacks for the errors that are otherwise one line
log = logging.getLogger("sora")


@app.callback()
def root(debug: bool = typer.Option(False, "--debug", help="Show the traceback behind an error message.")) -> None:
    """Text-to-video from the command line."""
    global DEBUG
    DEBUG = debug


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="What the video shows."),
    model: Optional[str] = typer.Option(None, help="Model folder, known name (see `sora models`) or hub repo id. Default: sora-tiny."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .mp4 file, or a directory for an automatic name."),
    size: Optional[str] = typer.Option(None, help="WIDTHxHEIGHT, e.g. 832x480."),
    aspect: Optional[str] = typer.Option(None, help="Aspect ratio W:H, e.g. 16:9 (with --resolution)."),
    resolution: Optional[str] = typer.Option(None, help="Short side, e.g. 480p. Default: the model's pixel count."),
    frames: Optional[int] = typer.Option(None, help="Number of frames (4n+1)."),
    seconds: Optional[float] = typer.Option(None, help="Duration in seconds (instead of --frames)."),
    fps: Optional[int] = typer.Option(None, help="Frames per second of the MP4. Default: the model's."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps. Default: the model's."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (1 turns it off)."),
    guidance_2: Optional[float] = typer.Option(None, "--guidance-2", help="Guidance scale of a two-expert model's "
                                               "low-noise expert (Wan 2.2 A14B). Default: the model's, else --guidance."),
    shift: Optional[float] = typer.Option(None, help="Timestep shift of the flow schedule."),
    sampler: Optional[str] = typer.Option(None, help="euler or unipc. Default: the model's scheduler."),
    seed: Optional[int] = typer.Option(None, help="Random seed; the same seed gives the same video."),
    negative: Optional[str] = typer.Option(None, help="Negative prompt. Default: the model's."),
    passes: Optional[int] = typer.Option(None, help=PASSES_HELP),
    image: Optional[Path] = typer.Option(None, help="Image (png, jpg, webp) to start from: the first frame."),
    loop: bool = typer.Option(False, help="Make the last frame flow into the first (one frame fewer than asked)."),
    fit: str = typer.Option("crop", help="How an --image of another shape is fitted: crop (centre), pad or stretch."),
    device: Optional[str] = typer.Option(None, help="cuda, mps or cpu. Default: the best available."),
    dtype: Optional[str] = typer.Option(None, help="float32, bfloat16 or float16. Default: bf16 on GPU, fp32 on CPU."),
    offload: bool = typer.Option(False, help="Keep each module on the accelerator only while it runs."),
    offline: bool = typer.Option(False, help="Never contact the hub; use the local cache only."),
    metadata: str = typer.Option("mp4", help="mp4: settings in the MP4's tags; json: also a .json sidecar."),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON record on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Generate a video from a text prompt."""
    from . import editing
    from .clips import check_fit, read
    from .options import check_text
    from .request import parse_settings
    from .runner import render_to_file

    # Everything the user typed is checked before any model is loaded.
    check_text("the prompt", prompt, blank_ok=False)
    settings = parse_settings(size=size, aspect=aspect, resolution=resolution, frames=frames, seconds=seconds,
                              fps=fps, steps=steps, guidance=guidance, guidance_2=guidance_2, shift=shift,
                              sampler=sampler, seed=seed, negative=negative, passes=passes)
    check_fit(fit)
    source = read(image) if image is not None else None
    c = dict(model=model, out=out, device=device, dtype=dtype, offload=offload, offline=offline, metadata=metadata,
             overwrite=overwrite, json_out=json_out, quiet=quiet)
    render_to_file(prompt, settings, c, lambda pipe, kw: editing.generate(pipe, prompt, source, loop, fit, **kw))


@app.command()
def models(json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List the models sora knows and where each would come from."""
    from .loading import DEFAULT_MODEL, KNOWN_MODELS, cached_location

    rows = []
    for name, source in KNOWN_MODELS.items():
        where = cached_location(source)
        rows.append(dict(name=name, source=source, local=str(where) if where else None, default=name == DEFAULT_MODEL))
    if json_out:
        print(json.dumps(rows))
        return
    for r in rows:
        status = f"ready at {r['local']}" if r["local"] else "not downloaded (fetched on first use)"
        print(f"{r['name']:<18}{'(default) ' if r['default'] else ''}{r['source']}  {status}")


register_editing(app)  # extend, loop, connect, edit
register_batch(app)
register_training(app)


# Signals that stop a run: each ends it as Ctrl-C does (no partial file), with the shell's exit code 128 + N.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class Stopped(KeyboardInterrupt):
    """A stop signal, raised where the program is, so every open output is cleaned up on the way out."""


def main() -> None:
    import signal

    log.handlers[:] = [WarningHandler()]  # one per run, also when a test calls main() again
    log.propagate = False
    if hasattr(sys.stdout, "reconfigure"):  # a path of non-UTF-8 bytes prints as those bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    received: list[int] = []

    def stop(signum, frame):
        received.append(signum)
        raise Stopped

    signals = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        code = _run_command()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 130:  # a stop signal, or typer's Abort for a Ctrl-C inside a command
        signum = received[0] if received else signal.SIGINT
        code = 128 + signum
        print("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}",
              file=sys.stderr)
    sys.exit(code)


def _run_command() -> int:
    """Run the command line; every expected failure is one `error:` line and its exit code. A traceback is
    shown only for a bug, or with --debug."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="sora", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `sora`: the help is the answer
            print(e.ctx.get_help() if e.ctx else e.format_message())
            return 0
        return _fail(f"error: {e.format_message()}", 2)
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except SoraError as e:
        return _fail(f"error: {e}", e.exit_code)
    except OSError as e:  # disk full, no permission, a file that appeared meanwhile: still one line
        return _fail(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}", 1)
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _fail(f"error: out of memory ({first[:200]}); try a smaller --size, fewer frames, or --offload", 1)


def _out_of_memory(e: BaseException) -> bool:
    """torch's CPU and GPU allocators raise RuntimeErrors (torch.OutOfMemoryError on a GPU) of their own."""
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text)


def _fail(line: str, code: int) -> int:
    if DEBUG:
        import traceback

        traceback.print_exc()
    print(line, file=sys.stderr)
    return code
