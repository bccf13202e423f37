"""The `sora` command: parse, build a request, call the library, report.

Results go to stdout (the written path, or one JSON record with --json); progress bars and warnings go to
stderr. torch is imported only inside commands, so `sora --help` is instant.
"""

from __future__ import annotations

import functools
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

from .cli_edit import register as register_editing
from .errors import OptionError, SoraError

# typer may vendor its own click: take its usage-error class from typer itself.
UsageError = sys.modules[typer.BadParameter.__module__].UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Text-to-video from the command line.")
stderr = Console(stderr=True)
log = logging.getLogger("sora")
PASSES_HELP = ("Text-to-video in 1 pass, or 2: draw the first frame, then animate it (follows direction words far "
               "better where the model was trained for it; twice the time). Default: the model's (sora-tiny: 2).")


class _WarningHandler(logging.Handler):
    """Each distinct warning once a run: a batch whose items are all snapped alike says so once, not per item."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.shown:
            self.shown.add(message)
            stderr.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


class Bars:
    """One rich progress bar per pipeline stage, created the first time the stage reports."""

    def __init__(self, quiet: bool):
        # rich sends what is printed on stdout through the bars' console while they show; that is only right
        # when stdout is that terminal too, not a pipe or a file a script is reading.
        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, disable=quiet,
                                 redirect_stdout=sys.stdout.isatty())
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.tasks:  # shown from the first report on: a batch with nothing left to do shows nothing
            self.progress.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)

    def __enter__(self) -> "Bars":
        return self

    def __exit__(self, *exc) -> None:
        if self.tasks:
            self.progress.stop()


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
    from .request import parse_settings

    # Everything the user typed is checked before any model is loaded.
    settings = parse_settings(size=size, aspect=aspect, resolution=resolution, frames=frames, seconds=seconds,
                              fps=fps, steps=steps, guidance=guidance, shift=shift, sampler=sampler, seed=seed,
                              negative=negative, passes=passes)
    check_fit(fit)
    source = read(image) if image is not None else None
    c = dict(model=model, out=out, device=device, dtype=dtype, offload=offload, offline=offline, metadata=metadata,
             overwrite=overwrite, json_out=json_out, quiet=quiet)
    render_to_file(prompt, settings, c, lambda pipe, kw: editing.generate(pipe, prompt, source, loop, fit, **kw))


def render_to_file(label: str, settings, c: dict, make) -> None:
    """What every rendering command ends with: name the output, load the model, encode what
    `make(pipe, pipeline_kwargs)` renders to the MP4 as it is made, report. `c` holds the common options."""
    import dataclasses
    import secrets

    from . import options
    from .naming import default_filename

    if c["metadata"] not in ("mp4", "json"):
        raise OptionError(f"--metadata '{c['metadata']}' is not allowed; choose mp4 or json")
    if c["dtype"] is not None:
        options.parse_dtype(c["dtype"])
    if c["device"] is not None:
        options.parse_device(c["device"])
    if settings.seed is None:
        settings = dataclasses.replace(settings, seed=secrets.randbelow(2**32))
    path = _output_path(c["out"], default_filename(settings.seed, label), c["overwrite"])
    sidecar = path.with_suffix(".json")
    if c["metadata"] == "json" and sidecar.exists() and not c["overwrite"]:
        raise OptionError(f"{sidecar} already exists; pass --overwrite to replace it")

    from .pipeline import Pipeline
    from .files import write_json_atomic

    started = time.perf_counter()
    with Bars(c["quiet"]) as bars:
        bars("load model", 0, 1)
        pipe = Pipeline.from_pretrained(c["model"], device=c["device"], dtype=c["dtype"], offline=c["offline"],
                                        offload=c["offload"])
        bars("load model", 1, 1)
        render = make(pipe, dict(settings.pipeline_kwargs(pipe), on_progress=bars))
        render.write(path, overwrite=c["overwrite"])  # the model runs as the frames are encoded
    if c["metadata"] == "json":
        write_json_atomic(sidecar, render.metadata, overwrite=c["overwrite"])
    record = dict(path=str(path), elapsed=round(time.perf_counter() - started, 3), **render.metadata)
    print(json.dumps(record, ensure_ascii=False) if c["json_out"] else str(path))


@app.command()
def batch(
    file: str = typer.Argument(..., help="Prompts: .txt (one a line) or .jsonl (one JSON object a line); - is stdin."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Folder for the videos and manifest.jsonl."),
    model: Optional[str] = typer.Option(None, help="Model folder, known name or hub repo id. Default: sora-tiny."),
    size: Optional[str] = typer.Option(None, help="WIDTHxHEIGHT for every line that gives no size."),
    aspect: Optional[str] = typer.Option(None, help="Aspect ratio W:H of generate lines (with --resolution)."),
    resolution: Optional[str] = typer.Option(None, help="Short side of generate lines, e.g. 480p."),
    frames: Optional[int] = typer.Option(None, help="Number of frames (4n+1) of generate lines."),
    seconds: Optional[float] = typer.Option(None, help="Seconds of generate lines (instead of --frames)."),
    fps: Optional[int] = typer.Option(None, help="Frames per second of generate lines."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale."),
    shift: Optional[float] = typer.Option(None, help="Timestep shift of the flow schedule."),
    sampler: Optional[str] = typer.Option(None, help="euler or unipc."),
    seed: Optional[int] = typer.Option(None, help="Seed of the lines that give none. Default: derived from each line."),
    negative: Optional[str] = typer.Option(None, help="Negative prompt of the lines that give none."),
    passes: Optional[int] = typer.Option(None, help=PASSES_HELP),
    repeat: int = typer.Option(1, help="Render each line N times, with seeds seed, seed+1, ..."),
    batch_size: str = typer.Option("auto", help="Denoise up to N consecutive text-to-video items that differ only "
                                   "in prompt and seed at once: faster per clip, N times the activations' memory. "
                                   "auto: up to 8 small clips (4096 transformer tokens in all), large ones alone."),
    force: bool = typer.Option(False, help="Render again the items the manifest records as done."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check every line, list what would render; load no model."),
    device: Optional[str] = typer.Option(None, help="cuda, mps or cpu. Under torchrun: cuda:LOCAL_RANK."),
    dtype: Optional[str] = typer.Option(None, help="float32, bfloat16 or float16."),
    offload: bool = typer.Option(False, help="Keep each module on the accelerator only while it runs."),
    offline: bool = typer.Option(False, help="Never contact the hub; use the local cache only."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON record per item."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no summary."),
) -> None:
    """Render every line of a file (prompts, or editing commands) with one model load; run it again to resume.
    Exit 3 if some items failed."""
    import signal

    from . import options
    from .batch import auto_batch_size, parse_batch_size, preview, run
    from .batch_file import read_batch
    from .distributed import Group, Ranks
    from .request import parse_settings

    defaults = dict(negative=negative, seed=seed, size=size, aspect=aspect, resolution=resolution, frames=frames,
                    seconds=seconds, fps=fps, steps=steps, guidance=guidance, shift=shift, sampler=sampler,
                    passes=passes)
    parse_settings(**defaults)  # the command line's own mistakes are named as such, before the file's
    if repeat < 1:
        raise OptionError(f"--repeat {repeat} is not allowed; use 1 or more")
    size = parse_batch_size(batch_size)
    if dtype is not None:
        options.parse_dtype(dtype)
    if device is not None:
        options.parse_device(device)
    ranks = Ranks.from_env()
    if file == "-" and ranks.world > 1:
        raise OptionError("torchrun ranks cannot share stdin; give the prompt file's name instead of -")
    lead = ranks.rank == 0  # rank 0 speaks for the whole batch; the others report only their own failures
    parsed = read_batch(file, out_dir, defaults, repeat)
    for line, message in parsed.errors if lead else ():
        print(f"error: {parsed.label}:{line}: {message}", file=sys.stderr)

    if dry_run:
        rows = preview(parsed.items, out_dir, force) if lead else []
        for item, status, problem in rows:
            if problem:
                print(f"error: {parsed.label}:{item.line}: {problem}", file=sys.stderr)
            path = str(out_dir / item.name)
            if json_out:
                print(json.dumps(dict(line=item.line, prompt=item.prompt, seed=item.seed, path=path, status=status,
                                      error=problem), ensure_ascii=False))
            elif status == "to render":
                print(path)
        count = {s: sum(row[1] == s for row in rows) for s in ("to render", "would fail", "done")}
        if lead and not quiet:
            print(f"dry run: {len(rows)} items, {count['to render']} to render, {count['would fail']} would fail, "
                  f"{count['done']} already done, {len(parsed.errors)} bad lines", file=sys.stderr)
        raise typer.Exit(2 if parsed.errors else 3 if count["would fail"] else 0)
    if parsed.errors:
        if not lead:
            raise typer.Exit(2)
        raise OptionError(f"{parsed.label} has {len(parsed.errors)} bad line(s); nothing was rendered")

    from .pipeline import ModelSpec, Pipeline

    spec = functools.cache(lambda: ModelSpec.read(model, offline))  # read once: for auto batch sizes and the load
    if size is None:
        size = auto_batch_size(spec)

    def load() -> Pipeline:
        bars("load model", 0, 1)
        pipe = Pipeline.from_pretrained(spec(), device=ranks.device(device), dtype=dtype, offline=offline,
                                        offload=offload)
        bars("load model", 1, 1)
        return pipe

    def say(text: str, stream) -> None:
        # One write a line: every rank reports through the same pipes, and print writes the newline apart
        # (unbuffered, as under PYTHONUNBUFFERED), so another rank's line could land between a line and its end.
        stream.write(text + "\n")
        stream.flush()

    def report(record: dict) -> None:
        shown = record | dict(path=str(out_dir / record["path"]))
        if record["status"] != "ok":
            say(f"error: {parsed.label}:{record['line']}: {record['error']}", sys.stderr)
        if json_out or record["status"] == "ok":
            say(json.dumps(shown, ensure_ascii=False) if json_out else shown["path"], sys.stdout)

    def stop(signum, frame):  # a scheduler's SIGTERM (preemption, torchrun) cleans up like Ctrl-C
        raise KeyboardInterrupt

    started, previous = time.perf_counter(), signal.signal(signal.SIGTERM, stop)
    try:
        with Group(ranks) as group, Bars(quiet or not lead) as bars:
            summary = run(parsed.items, out_dir, group, load, force, report, bars, size)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if lead and not quiet:
        print(f"batch: {summary.rendered} rendered, {summary.failed} failed, {summary.skipped} already done "
              f"in {time.perf_counter() - started:.1f} s; manifest {out_dir / 'manifest.jsonl'}", file=sys.stderr)
    raise typer.Exit(summary.exit_code)


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
    batch: Optional[int] = typer.Option(None, help="Clips per step. Default: the recipe's."),
    drill_steps: Optional[int] = typer.Option(None, help="Steps of the start-known motion drill after the main "
                                                        "steps (0: none). Default: the recipe's."),
    settle_steps: Optional[int] = typer.Option(None, help="Steps mixing the drill into the recipe's batches after "
                                                         "it (0: none). Default: the recipe's."),
    seed: int = typer.Option(0, help="Seed of the whole run."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --work-dir."),
    device: str = typer.Option("cpu", help="cpu, or cuda to train further on a GPU; the data is the same."),
    bf16: bool = typer.Option(True, "--bf16/--fp32", help="bf16 autocast, fast on a GPU or a CPU with AMX; --fp32 "
                                                          "where bf16 is slow (older CPUs)."),
) -> None:
    """Train the diffusion transformer on the VAE's latents and assemble the model (step 2 of 2)."""
    from .options import parse_device
    from .train.dit import DiTRecipe, train_dit as run

    device = parse_device(device)
    given = {k: v for k, v in dict(steps=steps, clips=clips, batch=batch).items() if v}
    given |= {k: v for k, v in dict(drill_steps=drill_steps, settle_steps=settle_steps).items() if v is not None}
    recipe = DiTRecipe(seed=seed, bf16=bf16, **given)
    record = run(out, work_dir, recipe, resume, " ".join(["sora", *sys.argv[1:]]), device)
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


register_editing(app)  # extend, loop, connect, edit


def main() -> None:
    log.handlers[:] = [_WarningHandler()]  # one per run, also when a test calls main() again
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
        code = 130
    if code == 130:  # typer turns a Ctrl-C inside a command into this exit code before it reaches us
        print("interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
