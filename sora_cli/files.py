"""Files that appear whole or not at all: written to a hidden sibling, then moved into place.

A render can be killed at any moment (Ctrl-C, SIGKILL, a full disk); what is left behind must never look like a
finished video. The move is a rename on the same filesystem, so it is atomic, and without `overwrite` it is a
hard link, which fails rather than replace a file that appeared meanwhile.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable


def temp_sibling(path: Path) -> Path:
    """Reserve a hidden, unique file next to `path` (same filesystem, so renames are atomic)."""
    while True:
        tmp = path.with_name(f".{path.name[:120]}.{secrets.token_hex(4)}.part{path.suffix}")
        try:
            tmp.open("xb").close()  # "x" keeps the umask's permissions, unlike mkstemp's 0600
            return tmp
        except FileExistsError:
            continue


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} already exists (pass overwrite to replace it)")


def commit(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    # A hard link fails if `path` exists, so a file that appeared meanwhile is never clobbered.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:
        # Filesystems without hard links: fall back to a check with a tiny race window.
        if path.exists():
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def write_atomically(path: Path, overwrite: bool, fill: Callable[[Path], None]) -> Path:
    """Let `fill` write a hidden temp file, then move it onto `path`; on any failure,
    Ctrl-C included, remove the temp file so nothing half-written is ever left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        fill(tmp)
        commit(tmp, path, overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def refuse_existing(path: Path, overwrite: bool) -> None:
    # Checked up front so that no time is spent encoding a file that cannot be saved.
    if not overwrite and Path(path).exists():
        raise _exists_error(path)


def write_json_atomic(path: Path, data: dict, overwrite: bool = False) -> Path:
    """Write `data` as pretty UTF-8 JSON, whole or not at all, never over an existing file unless told."""
    refuse_existing(path, overwrite)
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"
    return write_atomically(path, overwrite, lambda tmp: tmp.write_text(text, encoding="utf-8"))
