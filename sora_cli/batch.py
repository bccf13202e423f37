"""`sora batch`: render a prompt file's items with one model per process, record each, resume where it stopped.

Resume rule: an item is done when its file exists in DIR and the manifest records it with status "ok"; every other
item is rendered (replacing a file left without a record, e.g. by a kill between its rename and its record).
An item's output name holds its line, seed and prompt, so it identifies the item; other settings for the same
line need --force. A failing item is recorded with its error and the batch goes on.

Every item is made as its mode's command makes it: the same `editing` function with the same options, its frames
encoded into the MP4 as they are made (`Stream.write`: no file until it is complete). So a `generate` item is the
file `sora generate` writes with the same settings and seed (up to a rounding step when it is denoised in a
group). An item's inputs are read before the model is loaded: an item that cannot read them fails without it.
Up to N consecutive text-to-video items that differ only in prompt and seed are denoised together
(`editing.generate_many`), then written and recorded one by one: N is --batch-size, or by default (auto) as many
as `auto_batch_size` finds worth it for the item's size.

Under torchrun, rank 0 reads the manifest and hands out the list of items left to do, cut into those groups; rank
r renders the groups at positions r, r + world, r + 2 world, ... of that list. Seeds, names and groups come from
the file and the manifest alone, so the outputs do not depend on the number of ranks.

One batch at a time renders into a folder: a run holds an flock on `DIR/.sora-batch.lock` from before it reads the
manifest until it has merged it, and a second run started meanwhile stops at once with BusyError, having rendered
nothing; run again later, it renders what is left.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from . import batch_file, files, manifest
from .batch_file import BatchFile, Item, read_batch
from .distributed import Group, Ranks
from .errors import BusyError, OptionError, OutputError
from .gallery import Gallery, thumbnail
from .request import Request
from .settings import of_mode

if TYPE_CHECKING:
    from .pipeline import Pipeline

ProgressFn = Callable[[str, int, int], None]
RecordFn = Callable[[dict], None]
SizeFn = Callable[[Item], int]  # how many items of the item's kind are denoised together

# --batch-size auto: at most this many items a group, and this many transformer tokens (all its clips together).
AUTO_ITEMS = 8
AUTO_TOKENS = 4096
LOCK = ".sora-batch.lock"  # in the output folder while a batch renders into it; holds the batch's pid


class Report(Protocol):
    """What a batch tells the person who started it (the command line prints it)."""

    def bad_line(self, batch: BatchFile, line: int, message: str) -> None: ...
    def dry_run(self, batch: BatchFile, rows: list[tuple[Item, str, str | None]]) -> None: ...
    def finished(self, batch: BatchFile, record: dict) -> None: ...
    def summary(self, summary: "Summary", seconds: float) -> None: ...
    def progress(self, stage: str, done: int, total: int) -> None: ...


def execute(file: str, request: Request, defaults: dict, report: Report, ranks: Ranks) -> int:
    """Run `sora batch`: read the prompt file (`defaults`: the command line's settings for its lines, as typed),
    list it (dry run) or render it, and return the exit code: 0 all done, 2 bad lines, 3 some items failed.
    Under torchrun, rank 0 speaks for the whole batch; the others report only their own failures."""
    from . import networks
    from .pipeline import Pipeline
    from .spec import ModelSpec

    r = request
    if file == "-" and ranks.world > 1:
        raise OptionError("torchrun ranks cannot share stdin; give the prompt file's name instead of -")
    lead = ranks.rank == 0
    parsed = read_batch(file, r.out_dir, defaults, r.repeat)
    for line, message in parsed.errors if lead else ():
        report.bad_line(parsed, line, message)
    if r.dry_run:
        rows = preview(parsed.items, r.out_dir, r.force) if lead else []
        if lead:
            report.dry_run(parsed, rows)
        return 2 if parsed.errors else 3 if any(row[1] == "would fail" for row in rows) else 0
    if parsed.errors:
        if not lead:
            return 2
        raise OptionError(f"{parsed.label} has {len(parsed.errors)} bad line(s); nothing was rendered")

    files = (r.transformer, r.transformer_2)
    # read once: for auto sizes and the load
    spec = functools.cache(lambda: ModelSpec.read(r.model, r.offline, networks.replaced(files)))

    def load() -> Pipeline:
        report.progress("load model", 0, 1)
        pipe = Pipeline.from_pretrained(spec(), device=ranks.device(r.device), dtype=r.dtype, offline=r.offline,
                                        offload=r.offload, attention=r.attention, compile=r.compile,
                                        vae_tiling=r.vae_tiling, quantize=r.quantize, transformer_files=files)
        # each item merges its own LoRAs (Pipeline.use_loras)
        report.progress("load model", 1, 1)
        return pipe

    started = time.perf_counter()
    with Group(ranks) as group:
        summary = run(parsed.items, r.out_dir, group, load, r.force, lambda record: report.finished(parsed, record),
                      report.progress, r.batch_size or auto_batch_size(spec))
    if lead:
        report.summary(summary, time.perf_counter() - started)
    return summary.exit_code


@dataclass
class Summary:
    rendered: int = 0
    failed: int = 0
    skipped: int = 0  # done by an earlier run

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0


def done_names(out_dir: Path) -> set[str]:
    """Output names recorded as rendered whose file is still there."""
    names = {r["path"] for r in manifest.read(out_dir) if r.get("status") == "ok" and isinstance(r.get("path"), str)}
    return {name for name in names if (Path(out_dir) / name).is_file()}


def to_render(items: list[Item], out_dir: Path, force: bool = False) -> list[int]:
    """Positions in `items` of the items to render now."""
    done = set() if force else done_names(out_dir)
    return [i for i, item in enumerate(items) if item.name not in done]


def preview(items: list[Item], out_dir: Path, force: bool = False) -> list[tuple[Item, str, str | None]]:
    """What a run would do with each item: (item, "to render" | "would fail" | "done", why it would fail).
    An item would fail when an input that exists cannot be decoded (read_batch refuses missing ones)."""
    from .clips import check

    todo = set(to_render(items, out_dir, force))
    checked: dict[str, str | None] = {}  # repeats and other lines share inputs: each file is checked once
    rows = []
    for i, item in enumerate(items):
        problem = None
        for path in item.inputs if i in todo else ():
            if path not in checked:
                try:
                    check(Path(path))
                    checked[path] = None
                except OptionError as e:
                    checked[path] = str(e)
            problem = problem or checked[path]
        rows.append((item, "done" if i not in todo else "would fail" if problem else "to render", problem))
    return rows


def run(items: list[Item], out_dir: Path, group: Group, load_pipeline: Callable[[], Pipeline], force: bool = False,
        on_record: RecordFn | None = None, on_progress: ProgressFn | None = None,
        batch_size: int | SizeFn = 1) -> Summary:
    """Render this rank's share of the items that are not done; every rank returns the totals of all ranks.
    Up to `batch_size` consecutive text-to-video items with the same settings are denoised as one batch."""
    out_dir = Path(out_dir)
    rank, world = group.ranks.rank, group.ranks.world
    with _own(out_dir, group):
        todo = group.broadcast(to_render(items, out_dir, force) if rank == 0 else None)
        # Ranks share out whole groups, so a group, and so its arithmetic, is the same on any number of ranks.
        mine = [[items[i] for i in unit] for unit in groups(items, todo, batch_size)[rank::world]]
        journal = out_dir / manifest.MANIFEST if world == 1 else manifest.part_path(out_dir, rank)
        shown = Gallery(out_dir, items)

        def recorded(record: dict) -> None:
            shown.update()
            if on_record:
                on_record(record)

        rendered, failed = render(mine, out_dir, journal, load_pipeline, recorded, on_progress)
        # Adding up the counts is also the meeting at the end: after it no rank writes, and rank 0 can merge.
        rendered, failed = group.total([rendered, failed])
        if rank == 0:
            manifest.merge_parts(out_dir)
            shown.update(final=True)
    return Summary(rendered, failed, len(items) - len(todo))


@contextmanager
def _own(out_dir: Path, group: Group) -> Iterator[None]:
    """Hold the folder's batch lock for the whole run: two batches in one folder would each render every item
    and record it twice. Rank 0 holds it for all the ranks of its job and tells them whether it got it; if not,
    every rank stops before anything is rendered. A folder this run created is removed again if the run fails
    leaving nothing in it (a model that would not load)."""
    lock, fd, refusal, created = out_dir / LOCK, None, None, False
    if group.ranks.rank == 0:
        created = not out_dir.exists()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            fd = files.take(lock)
        except files.Held as held:
            refusal = _in_use(out_dir, held.pid)
        except OSError as e:  # told to every rank, which would otherwise wait for rank 0 for good
            refusal = OutputError(f"could not write {out_dir}: {files.reason(e)}")
    refusal = group.broadcast(refusal)
    if refusal:
        raise refusal
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if fd is not None and created and [p.name for p in out_dir.iterdir()] == [LOCK]:
            files.unlock(fd, lock)
            fd = None
            with suppress(OSError):  # something arrived meanwhile: it is not ours to remove
                out_dir.rmdir()
        raise
    finally:
        if fd is not None:
            files.unlock(fd, lock)


def _in_use(out_dir: Path, pid: int | None) -> BusyError:
    holder = f" (pid {pid})" if pid else ""
    return BusyError(f"{out_dir} is in use by another sora batch{holder}; nothing was rendered — run this again when "
                     "it has finished to render what is left")


def auto_batch_size(read_spec: Callable[[], object]) -> SizeFn:
    """--batch-size auto, from the model's configs (`spec.ModelSpec`, read on first use: a batch with nothing
    left to render reads nothing). Batching pays where one clip leaves the device idle between small matrix
    products; a clip of a few thousand tokens keeps it busy alone, and a group would only multiply its memory."""
    read_spec = functools.cache(read_spec)

    def size(item: Item) -> int:
        spec = read_spec()
        kw, d = item.request.pipeline_kwargs(spec), spec.defaults
        tokens = spec.tokens(kw["width"] or d.width, kw["height"] or d.height, kw["num_frames"] or d.num_frames)
        return max(1, min(AUTO_ITEMS, AUTO_TOKENS // tokens))
    return size


def groups(items: list[Item], todo: list[int], size: int | SizeFn) -> list[list[int]]:
    """`todo` cut into groups of consecutive items that can be denoised together: text-to-video items (no input,
    no loop) whose settings differ at most in their seed; at most `size` of them (its value for the first)."""
    out: list[list[int]] = []
    previous, cap = None, 1
    for i in todo:
        item = items[i]
        key = None
        # A step cache decides for a whole batch at once, so a cached clip is made alone, as `generate` makes it.
        if item.mode == "generate" and not (item.inputs or item.request.loop or item.request.cache or
                                            item.request.storyboard):
            key = dataclasses.replace(item.request, seed=None, prompt=None)
        if out and key is not None and key == previous and len(out[-1]) < cap:
            out[-1].append(i)
        else:
            out.append([i])
            cap = 1 if key is None else size(item) if callable(size) else size
        previous = key
    return out


def render(units: list[list[Item]], out_dir: Path, journal: Path, load_pipeline: Callable[[], Pipeline],
           on_record: RecordFn | None = None, on_progress: ProgressFn | None = None) -> tuple[int, int]:
    """Render the items, unit by unit, appending one record each to `journal`; returns (rendered, failed)."""
    from .clips import read

    progress = on_progress or (lambda stage, done, total: None)
    total = sum(map(len, units))
    pipe, rendered, n = None, 0, 0
    if total:  # a rank with nothing to do shows no bar
        progress("items", 0, total)
    for unit in units:
        started = time.perf_counter()
        try:
            sources = [[read(Path(path)) for path in item.inputs] for item in unit]
        except Exception as e:  # one bad item must not sink the batch; Ctrl-C is not an Exception
            records = [_record(item, requested(item), "failed", str(e) or type(e).__name__, started) for item in unit]
        else:
            if pipe is None:  # only when there is something to render; a model error ends the batch
                loading = time.perf_counter()
                pipe = load_pipeline()
                started += time.perf_counter() - loading  # an item's seconds leave the one model load out
            records = _render_unit(pipe, unit, sources, out_dir, progress, started)
        for record in records:
            rendered += record["status"] == "ok"
            n += 1
            manifest.append(journal, record)
            if on_record:
                on_record(record)
            progress("items", n, total)
    return rendered, total - rendered


def requested(item: Item) -> dict:
    """What the line asked for (None: the model's default), for records of items that were not rendered."""
    rows = of_mode(item.mode)
    asked = {k: v for k, v in dataclasses.asdict(item.request).items()
             if k in rows and k not in ("prompt", "seed", *batch_file.LINE_OWN)}
    if item.mode != "generate":
        asked |= dict(mode=item.mode, video=list(item.request.videos))
    return asked


def _render_unit(pipe: Pipeline, unit: list[Item], sources: list[list], out_dir: Path, progress: ProgressFn,
                 started: float) -> Iterator[dict]:
    """Make the unit's items and write each to its file, yielding a record as each is done (failed if anything
    went wrong). A group's shared work is counted in its first item's seconds."""
    from . import editing

    streams = None
    try:  # the unit's LoRAs (its items share them): a LoRA that does not fit fails the unit, not the batch
        pipe.use_loras(unit[0].request.lora or (), unit[0].request.lora_2 or ())
    except Exception as e:
        yield from (_record(item, requested(item), "failed", str(e) or type(e).__name__, started) for item in unit)
        return
    if len(unit) > 1:
        try:
            kw = unit[0].request.pipeline_kwargs(pipe)
            if editing.fits_one_window(pipe, pipe.resolve(unit[0].prompt, **kw)):  # else one by one
                streams = editing.generate_many(pipe, [i.prompt for i in unit], [i.seed for i in unit], progress, **kw)
        except Exception as e:  # one bad group must not sink the batch; Ctrl-C is not an Exception
            yield from (_record(item, requested(item), "failed", str(e) or type(e).__name__, started) for item in unit)
            return
    for i, item in enumerate(unit):
        made = (lambda: streams[i]) if streams else (lambda: editing.make(pipe, item.request, sources[i], progress))
        yield _write(item, made, out_dir, started)  # calls `made` at once, before the loop moves on
        started = time.perf_counter()


def _write(item: Item, make_stream: Callable, out_dir: Path, started: float) -> dict:
    """Make the item's video and write it to its file; its record, failed if anything went wrong."""
    try:
        stream = make_stream()
        # the model runs as the frames are encoded
        stream.write(out_dir / item.name, overwrite=True, preview=bool(item.request.preview),
                     animation=bool(item.request.preview_webp), thumbnail=thumbnail(out_dir, item.name))
    except Exception as e:  # one bad item must not sink the batch; Ctrl-C is not an Exception
        return _record(item, requested(item), "failed", str(e) or type(e).__name__, started)
    return _record(item, stream.metadata, "ok", None, started)


def _record(item: Item, parameters: dict, status: str, error: str | None, started: float) -> dict:
    head = dict(line=item.line, prompt=item.prompt, seed=item.seed, path=item.name)
    tail = dict(status=status, error=error, elapsed=round(time.perf_counter() - started, 3),
                finished=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    return head | parameters | tail
