"""`sora batch`: parse the command line, and report what `batch.execute` does: the bad lines, the dry run's list,
each item as it finishes (stdout: its path, or its JSON record), and the summary (stderr)."""

from __future__ import annotations

import json
import sys

import typer

from ..progress import Bars
from .options import with_settings


@with_settings("batch")
def batch(file: str = typer.Argument(..., help="Prompts: .txt (one a line) or .jsonl (one JSON object a line); - is "
                                               "stdin."),
          **given) -> None:
    """Render every line of a file (prompts, or editing commands) with one model load; run it again to resume.
    The options are defaults for the lines that give none. Exit 3 if some items failed."""
    from ..batch import execute
    from ..distributed import Ranks
    from ..request import parse
    from ..settings import of_command

    request = parse(of_command("batch"), given, "batch")  # the command line's own mistakes, before the file's
    ranks = Ranks.from_env()  # before torch is imported (see distributed.py)
    with Bars(request.quiet or ranks.rank != 0) as bars:
        code = execute(file, request, given, Report(request.out_dir, request.json, request.quiet, bars), ranks)
    raise typer.Exit(code)


class Report:
    """Prints what a batch tells: results on stdout, errors and the summary on stderr."""

    def __init__(self, out_dir, json_out: bool, quiet: bool, bars: Bars):
        self.out_dir, self.json_out, self.quiet, self.progress = out_dir, json_out, quiet, bars

    def bad_line(self, batch, line: int, message: str) -> None:
        _say(f"error: {batch.label}:{line}: {message}", sys.stderr)

    def dry_run(self, batch, rows) -> None:
        for item, status, problem in rows:
            if problem:
                self.bad_line(batch, item.line, problem)
            path = str(self.out_dir / item.name)
            if self.json_out:
                print(json.dumps(dict(line=item.line, prompt=item.prompt, seed=item.seed, path=path, status=status,
                                      error=problem), ensure_ascii=False))
            elif status == "to render":
                print(path)
        count = {s: sum(row[1] == s for row in rows) for s in ("to render", "would fail", "done")}
        if not self.quiet:
            print(f"dry run: {len(rows)} items, {count['to render']} to render, {count['would fail']} would fail, "
                  f"{count['done']} already done, {len(batch.errors)} bad lines", file=sys.stderr)

    def finished(self, batch, record: dict) -> None:
        shown = record | dict(path=str(self.out_dir / record["path"]))
        if record["status"] != "ok":
            self.bad_line(batch, record["line"], record["error"])
        if self.json_out or record["status"] == "ok":
            _say(json.dumps(shown, ensure_ascii=False) if self.json_out else shown["path"], sys.stdout)

    def summary(self, summary, seconds: float) -> None:
        if not self.quiet:
            print(f"batch: {summary.rendered} rendered, {summary.failed} failed, {summary.skipped} already done "
                  f"in {seconds:.1f} s; manifest {self.out_dir / 'manifest.jsonl'}", file=sys.stderr)


def _say(text: str, stream) -> None:
    # One write a line: every rank reports through the same pipes, and print writes the newline apart
    # (unbuffered, as under PYTHONUNBUFFERED), so another rank's line could land between a line and its end.
    stream.write(text + "\n")
    stream.flush()
