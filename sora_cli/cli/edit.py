"""The editing commands: `sora extend`, `loop`, `connect` and `edit`. Each takes its clips as arguments and the
settings the table gives it as options; the work itself is in sora_cli.editing."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import with_settings
from .runner import run

VIDEO = "Video (mp4, mov, webm, gif)"


@with_settings("extend")
def extend(clip: Path = typer.Argument(..., help=f"{VIDEO} or image to extend."), **given) -> None:
    """Continue a clip: its frames as they are, then new frames that carry its motion on."""
    run("extend", given, (clip,))


@with_settings("loop")
def loop(clip: Path = typer.Argument(..., help=f"{VIDEO} to loop."), **given) -> None:
    """Make a clip repeat without a seam: the clip, then a transition from its end back to its start."""
    run("loop", given, (clip,))


@with_settings("connect")
def connect(first: Path = typer.Argument(..., help="The clip that comes first."),
            second: Path = typer.Argument(..., help="The clip the transition leads into (fitted to the first "
                                                    "one's size)."),
            **given) -> None:
    """Join two clips: the first, a transition from its end into the second's start, then the second."""
    run("connect", given, (first, second))


@with_settings("edit")
def edit(clip: Path = typer.Argument(..., help=f"{VIDEO} to redo."), **given) -> None:
    """Video-to-video: the clip's latents partly noised, then denoised with the new prompt (SDEdit)."""
    run("edit", given, (clip,))
