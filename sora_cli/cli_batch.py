"""`sora batch`, registered on the app by cli.py: parse the command line, read the prompt file, report each item
as it finishes; the work itself is in sora_cli.batch. torch is imported only when the command runs."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from .errors import OptionError
from .progress import Bars
from .request import PASSES_HELP


def register(app: typer.Typer) -> None:
    app.command()(batch)


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
    guidance_2: Optional[float] = typer.Option(None, "--guidance-2", help="Guidance scale of a two-expert model's "
                                               "low-noise expert (Wan 2.2 A14B). Default: the model's, else --guidance."),
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
    from . import options
    from .batch import auto_batch_size, parse_batch_size, preview, run
    from .batch_file import read_batch
    from .distributed import Group, Ranks
    from .request import parse_settings

    defaults = dict(negative=negative, seed=seed, size=size, aspect=aspect, resolution=resolution, frames=frames,
                    seconds=seconds, fps=fps, steps=steps, guidance=guidance, guidance_2=guidance_2, shift=shift,
                    sampler=sampler, passes=passes)
    parse_settings(**defaults)  # the command line's own mistakes are named as such, before the file's
    options.check_number("--repeat", repeat)
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

    started = time.perf_counter()
    with Group(ranks) as group, Bars(quiet or not lead) as bars:
        summary = run(parsed.items, out_dir, group, load, force, report, bars, size)
    if lead and not quiet:
        print(f"batch: {summary.rendered} rendered, {summary.failed} failed, {summary.skipped} already done "
              f"in {time.perf_counter() - started:.1f} s; manifest {out_dir / 'manifest.jsonl'}", file=sys.stderr)
    raise typer.Exit(summary.exit_code)
