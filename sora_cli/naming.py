"""Output file names derived from prompts, and joining user-given names safely."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from pathlib import Path

_FALLBACK_SLUG = "video"


def slugify(text: str, max_len: int = 48) -> str:
    """An ASCII file-name fragment: lowercase [a-z0-9] words joined by "-".

    Accents are transliterated where NFKD decomposition allows ("café" -> "cafe"); any
    other character only separates words, so the result can never hold a path separator,
    "..", or a leading "." or "-". It is never empty.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    # Apostrophes join rather than split: "don't" -> "dont", not "don-t".
    ascii_text = re.sub(r"['`]", "", ascii_text.lower())
    slug = "-".join(re.findall(r"[a-z0-9]+", ascii_text))
    slug = slug[:max_len].rstrip("-")
    return slug or _FALLBACK_SLUG[:max_len]


def default_filename(seed: int, prompt: str, now: datetime | None = None, suffix: str = ".mp4") -> str:
    """"{YYYYmmdd}_{HHMMSS}_{seed}_{slug}.mp4" (or another suffix): sorts by time and says what it shows."""
    now = now or datetime.now()
    return f"{now:%Y%m%d_%H%M%S}_{seed}_{slugify(prompt)}{suffix}"


def safe_join(directory: Path, name: str) -> Path:
    """`directory / name`, refusing any name that could land outside `directory`.

    Names come from batch files and prompts, so absolute paths, ".." parts and symlinks
    leading out of the directory are rejected rather than trusted.
    """
    directory = Path(directory)
    problem = f"output name {name!r} must stay inside {directory}"
    if not name or "\0" in name:
        raise ValueError(problem)
    # Backslashes count as separators too, so a Windows-style "..\\x" is caught as well.
    parts = name.replace("\\", "/").split("/")
    if Path(name).is_absolute() or Path(name).drive or name.startswith(("/", "\\")) or ".." in parts:
        raise ValueError(problem)
    base = directory.resolve()
    target = (directory / name).resolve()  # follows symlinks, existing or not
    if target == base or not target.is_relative_to(base):
        raise ValueError(problem)
    return directory / name
