"""The batch manifest: `DIR/manifest.jsonl`, one JSON record per finished item, never rewritten, only appended.

Every record is written with a single write() of one whole line on an O_APPEND descriptor, then fsync'ed, so a
crash or SIGKILL leaves either the whole record or (at worst, on a full disk) one torn last line, which readers
skip and the next append closes off.

Several processes never share one file: the folder's batch lock (`batch.LOCK`) keeps a second batch out, and
under torchrun each rank appends to its own `manifest.rank{N}.jsonl` and rank 0 merges those into
`manifest.jsonl` at the end. O_APPEND writes from several processes only stay whole on a local filesystem; on
the NFS or Lustre volumes that ranks on several machines share, appends from different machines can overwrite
each other. One writer per file is safe on any filesystem. Readers take the union of all the files, so the
records of a run killed before its merge still count, and the next run merges them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("sora")

MANIFEST = "manifest.jsonl"
_PART_GLOB = "manifest.rank*.jsonl"


def part_path(directory: Path, rank: int) -> Path:
    return Path(directory) / f"manifest.rank{rank}.jsonl"


def append(path: Path, record: dict) -> None:
    """Add one record as one line, durably."""
    _append_lines(path, [json.dumps(record, ensure_ascii=False, default=str)])


def read(directory: Path) -> list[dict]:
    """Every intact record of the manifest and of any rank files not merged yet."""
    records = []
    for path in _files(directory):
        for number, line in enumerate(_lines(path), 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                log.warning("%s line %d is damaged; ignored", path, number)
    return records


def merge_parts(directory: Path) -> None:
    """Move the rank files' records into manifest.jsonl, then remove the rank files.

    Lines already in the manifest are not added again, so a merge cut short (killed between appending and
    removing) can simply be repeated.
    """
    main = Path(directory) / MANIFEST
    for part in sorted(Path(directory).glob(_PART_GLOB)):
        present = set(_lines(main)) if main.exists() else set()
        new = [line for line in _lines(part) if line not in present]
        if new:
            _append_lines(main, new)
        part.unlink()


def _files(directory: Path) -> list[Path]:
    main = Path(directory) / MANIFEST
    return ([main] if main.exists() else []) + sorted(Path(directory).glob(_PART_GLOB))


def _lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", "replace")
    return [line for line in text.split("\n") if line.strip()]


def _append_lines(path: Path, lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # close off a line torn by a crash, so this record starts on its own line
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"could not append to {path}: only {written} of {len(data)} bytes were written")
        os.fsync(fd)
    finally:
        os.close(fd)
