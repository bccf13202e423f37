"""`sora generate`: its options are the settings table's for the command (cli/options.py)."""

from __future__ import annotations

from .options import with_settings
from .runner import run


@with_settings("generate")
def generate(**given) -> None:
    """Generate a video from a text prompt."""
    run("generate", given)
