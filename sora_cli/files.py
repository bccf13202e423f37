"""Files that appear whole or not at all: written to a hidden sibling, then moved into place.

A render can be killed at any moment (Ctrl-C, SIGKILL, a full disk); what is left behind must never look like a
finished video. The move is a rename on the same filesystem, so it is atomic, and without `overwrite` it is a
hard link, which fails rather than replace a file that appeared meanwhile.

A SIGKILL still leaves the hidden part file behind. Its writer holds an exclusive flock on it for as long as it
exists, and the kernel drops that lock with the process, so the next writer of the same output can tell what a
killed run left (unlocked: removed) from a file another process is writing right now (locked: left alone).
The same locks keep two `sora batch` runs out of one folder (`take`).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# flock on a filesystem that has no locks (some FUSE or Lustre mounts) fails with one of these.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

# A stop signal that arrives while a part file is being made and handed to its writer, or while the encoder that
# writes into it is being started, would leave the file (or the process) with nobody to remove it. Inside
# `stops_held` the command line's stop handler only notes the stop (`hold_stop`), and it is raised as the block
# ends, when the writer holds both and removes them on the way out.
_holding = 0
_held_stop = False


@contextmanager
def stops_held() -> Iterator[None]:
    global _holding, _held_stop
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if _held_stop and not _holding:
            _held_stop = False
            raise KeyboardInterrupt  # a stop wins over whatever else ended the block


def hold_stop() -> bool:
    """For a stop-signal handler: whether a `stops_held` block is running, which then raises the stop as it ends."""
    global _held_stop
    if _holding:
        _held_stop = True
    return bool(_holding)


def _flock(fd: int) -> bool | None:
    """Take the exclusive lock without waiting: True when taken, False when another holds it, None when the
    filesystem has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _NO_LOCKS:
            return None
        raise


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still leads to the open file `fd`."""
    try:
        named, opened = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def lock(path: Path, create: bool = False) -> int | None:
    """A descriptor of the file at `path`, holding its exclusive flock; None when another process holds it or no
    file is there. `create` makes the file when there is none.

    Lock files are only ever removed by their lock's holder, so a lock taken on a file that has just been removed
    would be a lock on nothing: after locking, the name must still lead to the locked file. With `create` a file
    removed in between is replaced by a new one and that one is locked. On a filesystem without locks nothing can
    be guarded: `create` gives its descriptor all the same, and without it (the caller wants to remove what no
    one holds) the answer is None, as nothing shows that the file is abandoned."""
    # Never through a symlink: the name must lead to the locked file itself (a link would be locked forever).
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW if create else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    while True:
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            got = _flock(fd)
            if got and _names(path, fd) or got is None and create:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not (got and create):
            return None


def unlock(fd: int, path: Path) -> None:
    """Remove the locked file at `path`, then drop its lock. In that order, nobody can lock the file by its name
    between the two and then see it vanish."""
    try:
        Path(path).unlink(missing_ok=True)
    finally:
        os.close(fd)


class Held(Exception):
    """A lock file another process holds; `pid` is the one it wrote into it (None if unknown)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is held by pid {pid}")
        self.path, self.pid = path, pid


def take(path: Path) -> int:
    """Hold the lock file `path` for this process, with its pid written into it, until `unlock`; raise Held at
    once if another process holds it. A file a killed holder left is simply taken over."""
    fd = lock(path, create=True)
    if fd is None:
        raise Held(path, _pid(path))
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid only names the holder in others' messages; a full disk must not stop the run
    return fd


def _pid(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None  # gone meanwhile, or its holder has not written its pid yet


def _part_pattern(path: Path) -> str:
    return f".{glob.escape(path.name[:120])}.*.part{glob.escape(path.suffix)}"


def sweep(path: Path) -> None:
    """Remove the part files of `path` that no writer holds: what killed runs left behind. A live writer of the
    same output, in this process or another, holds its part's lock, so its file stays."""
    for name in glob.glob(_part_pattern(path), root_dir=path.parent):
        part = path.parent / name
        try:
            fd = lock(part)
            if fd is not None:
                unlock(fd, part)
        except OSError:
            pass  # not ours to judge (a folder, a link, no permission): leave it


class Part:
    """The hidden sibling `.{name}.{token}.part{suffix}` an output is written into before `commit` moves it onto
    its name; locked for as long as it exists, and removed by `close` unless committed. Creating one first
    removes the leftovers of killed writers of the same output.

    Whoever fills it must write into the file at `path` (open it, truncate it), not replace it with another file:
    the lock is on this file."""

    def __init__(self, target: Path):
        self.target = Path(target)
        sweep(self.target)
        self.path, self.fd = _reserve(self.target)
        self.committed = False

    def commit(self, overwrite: bool) -> None:
        commit(self.path, self.target, overwrite)
        self.committed = True  # its name is free again: another writer's new part could take it

    def close(self) -> None:
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        if self.committed:
            os.close(fd)
        else:
            unlock(fd, self.path)

    def __enter__(self) -> "Part":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reserve(target: Path) -> tuple[Path, int]:
    """A new, locked part file for `target`: (its path, the descriptor holding its lock)."""
    while True:
        path = target.with_name(f".{target.name[:120]}.{secrets.token_hex(4)}.part{target.suffix}")
        try:
            # 0o666 under the umask: the permissions a plain open gives, unlike mkstemp's 0600
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            if _flock(fd) is not False and _names(path, fd):
                return path, fd
        except BaseException:
            unlock(fd, path)
            raise
        # Another writer's sweep took it for a leftover between its creation and the lock, and removed it.
        os.close(fd)


def not_a_file(path: Path) -> bool:
    """Whether `path` exists but is neither a file nor a pipe: a folder, or a device such as /dev/zero, whose
    reading would never end."""
    path = Path(path)
    return path.exists() and not (path.is_file() or path.is_fifo())


def sentence(text: str) -> str:
    """A message as it reads after "could not write PATH: " ("no space left on device"; "MP4 ..." stays)."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def reason(e: OSError) -> str:
    """Why a write failed, as one phrase: "no space left on device", "permission denied"."""
    return sentence(e.strerror or (os.strerror(e.errno) if e.errno else str(e) or type(e).__name__))


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
    """Let `fill` write a hidden part file (see Part), then move it onto `path`; on any failure, Ctrl-C included,
    remove the part file so nothing half-written is ever left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = None
    try:
        with stops_held():
            part = Part(path)
        fill(part.path)
        part.commit(overwrite)
    finally:
        if part is not None:
            part.close()
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
