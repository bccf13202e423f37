"""What a run shows on stderr while it works: a rich progress bar per stage, and each distinct warning once.

stdout is left to results (paths, or JSON records with --json), so scripts can read it while a person watches
the bars.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = Console(stderr=True)


class WarningHandler(logging.Handler):
    """Each distinct warning once a run: a batch whose items are all snapped alike says so once, not per item."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.shown:
            self.shown.add(message)
            label = "[yellow]warning:[/]" if record.levelno >= logging.WARNING else "[cyan]info:[/]"
            stderr.print(f"{label} {escape(message)}", highlight=False, soft_wrap=True)


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

    def __exit__(self, exc_type, *exc) -> None:
        if self.tasks:
            if exc_type is not None:  # an error's line stands alone, not under bars stopped half-way
                for task in self.progress.tasks:
                    if not task.finished:
                        self.progress.update(task.id, visible=False)
            self.progress.stop()
