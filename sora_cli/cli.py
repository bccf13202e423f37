"""The `sora` command: parse, build a request, call the library, report.

Results go to stdout (the written path, or one JSON record with --json); progress bars and warnings go to
stderr. torch is imported only inside commands, so `sora --help` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .errors import OptionError, SoraError

# typer may vendor its own click: take its usage-error class from typer itself.
UsageError = sys.modules[typer.BadParameter.__module__].UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Text-to-video from the command line.")
stderr = Console(stderr=True)
log = logging.getLogger("sora")


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        stderr.print(f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True)


class Bars:
    """One rich progress bar per pipeline stage, created the first time the stage reports."""

    def __init__(self, quiet: bool):
        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, disable=quiet)
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)

    def __enter__(self) -> "Bars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


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
    shift: Optional[float] = typer.Option(None, help="Timestep shift of the flow schedule."),
    sampler: Optional[str] = typer.Option(None, help="euler or unipc. Default: the model's scheduler."),
    seed: Optional[int] = typer.Option(None, help="Random seed; the same seed gives the same video."),
    negative: Optional[str] = typer.Option(None, help="Negative prompt. Default: the model's."),
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
    from . import options
    from .naming import default_filename

    # Everything the user typed is checked before any model is loaded.
    if size and (aspect or resolution):
        raise OptionError("--size cannot be combined with --aspect/--resolution; use one or the other")
    if frames is not None and seconds is not None:
        raise OptionError("--frames cannot be combined with --seconds; use one or the other")
    if metadata not in ("mp4", "json"):
        raise OptionError(f"--metadata '{metadata}' is not allowed; choose mp4 or json")
    if fps is not None and fps <= 0:
        raise OptionError(f"--fps {fps} is not allowed; use a positive number")
    width, height = options.parse_size(size) if size else (None, None)
    ratio = options.parse_aspect(aspect) if aspect else None
    short_side = options.parse_resolution(resolution) if resolution else None
    options.check_sampling(steps, guidance, shift, sampler, seed)
    if dtype is not None:
        options.parse_dtype(dtype)
    if seed is None:
        import secrets

        seed = secrets.randbelow(2**32)
    path = _output_path(out, default_filename(seed, prompt), overwrite)
    if metadata == "json" and path.with_suffix(".json").exists() and not overwrite:
        raise OptionError(f"{path.with_suffix('.json')} already exists; pass --overwrite to replace it")

    from .pipeline import Pipeline

    started = time.perf_counter()
    with Bars(quiet) as bars:
        bars("load model", 0, 1)
        pipe = Pipeline.from_pretrained(model, device=device, dtype=dtype, offline=offline, offload=offload)
        bars("load model", 1, 1)
        d = pipe.defaults
        if short_side:
            width, height = options.size_for_aspect(ratio or d.width / d.height, short_side, pipe.size_multiple)
        elif ratio:  # the model's own pixel count, reshaped: what it was trained to compose
            width, height = options.size_for_area(ratio, d.width * d.height, pipe.size_multiple)
        if seconds is not None:
            frames = options.frames_for_seconds(seconds, fps or d.fps)
        video = pipe(prompt, negative_prompt=negative, height=height, width=width, num_frames=frames,
                     num_steps=steps, guidance_scale=guidance, shift=shift, sampler=sampler, seed=seed, fps=fps,
                     on_progress=bars)
    from .video import write_json_atomic, write_mp4

    write_mp4(video.frames, path, video.fps, video.metadata, overwrite=overwrite)
    if metadata == "json":
        write_json_atomic(path.with_suffix(".json"), video.metadata, overwrite=overwrite)
    record = dict(path=str(path), seconds=round(time.perf_counter() - started, 3), **video.metadata)
    print(json.dumps(record, ensure_ascii=False) if json_out else str(path))


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


train_app = typer.Typer(no_args_is_help=True, help="Rebuild the embedded model sora-tiny from scratch.")
app.add_typer(train_app, name="train")
TINY_DIR = Path(__file__).resolve().parent.parent / "weights" / "sora-tiny"


@train_app.command("vae")
def train_vae(
    out: Path = typer.Option(TINY_DIR, help="Model folder to write vae/ into."),
    work_dir: Path = typer.Option(Path("runs/sora-tiny"), help="Checkpoints and caches."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps. Default: the recipe's."),
    seed: int = typer.Option(0, help="Seed of the whole run."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --work-dir."),
) -> None:
    """Train the video VAE on the synthetic world (step 1 of 2)."""
    from .train.vae import VAERecipe, train_vae as run

    recipe = VAERecipe(seed=seed, **({"steps": steps} if steps else {}))
    record = run(out, work_dir, recipe, resume, " ".join(["sora", *sys.argv[1:]]))
    print(json.dumps(record["results"]))


@train_app.command("dit")
def train_dit(
    out: Path = typer.Option(TINY_DIR, help="Model folder holding vae/; transformer/ and the rest are written there."),
    work_dir: Path = typer.Option(Path("runs/sora-tiny"), help="Checkpoints and the latent cache."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps. Default: the recipe's."),
    clips: Optional[int] = typer.Option(None, help="Distinct training clips, encoded once. Default: the recipe's."),
    seed: int = typer.Option(0, help="Seed of the whole run."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --work-dir."),
) -> None:
    """Train the diffusion transformer on the VAE's latents and assemble the model (step 2 of 2)."""
    from .train.dit import DiTRecipe, train_dit as run

    given = {k: v for k, v in dict(steps=steps, clips=clips).items() if v}
    record = run(out, work_dir, DiTRecipe(seed=seed, **given), resume, " ".join(["sora", *sys.argv[1:]]))
    print(json.dumps(record["results"]))


def _output_path(out: Path | None, name: str, overwrite: bool) -> Path:
    """--out is a file or a directory; an automatic name always lands inside that directory."""
    if out is None:
        directory, path = Path.cwd(), Path.cwd() / name
    elif out.is_dir() or str(out).endswith(("/", "\\")):
        directory, path = out, out / name
    else:
        if out.suffix.lower() != ".mp4":
            raise OptionError(f"--out '{out}' must be an .mp4 file or a directory")
        directory, path = out.parent, out
    if path.exists() and not overwrite:
        raise OptionError(f"{path} already exists; pass --overwrite to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    handler = _WarningHandler()
    log.addHandler(handler)
    log.propagate = False
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="sora", standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `sora`: the help is the answer
            print(e.ctx.get_help() if e.ctx else e.format_message())
            code = 0
        else:
            print(f"error: {e.format_message()}", file=sys.stderr)
            code = 2
    except SoraError as e:
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    except OSError as e:  # disk full, no permission, a file that appeared meanwhile: still one line
        print(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}", file=sys.stderr)
        code = 1
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
