"""Writing MP4s through the ffmpeg binary bundled with imageio-ffmpeg: frames are encoded as they are made, into a
file that appears only once complete, with the settings in its tags.

Frames are never resized: a size the encoder cannot take is an error, not a surprise.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager, suppress
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from . import files
from .errors import OutputError
from .video import ffmpeg, file_arg

# Web players assume BT.709 for untagged video while ffmpeg converts RGB with BT.601 by
# default; converting and tagging explicitly keeps colours the same everywhere.
_X264_ARGS = [
    "-vf",
    "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
    "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709",
    "-c:v", "libx264", "-preset", "medium", "-crf", "18",
    "-movflags", "+faststart",
]
# The system errors ffmpeg reports about its output file, most telling first; each is named in its log as strerror
# writes it, e.g. "Could not write header (incorrect codec parameters ?): No space left on device".
_SYSTEM_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*")  # "[vost#0:0 @ 0x5559...] ": which part of ffmpeg speaks


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        got = getattr(frames, "dtype", type(frames).__name__)
        raise ValueError(f"frames must be a uint8 numpy array, got {got}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    t, h, w, _ = frames.shape
    if t == 0 or h == 0 or w == 0:
        raise ValueError(f"frames are empty: shape {frames.shape}")
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs an even width and height, got {w}x{h} (WxH)")


def _utf8_safe(text: str) -> str:
    # Lone surrogates cannot be encoded into argv, and NUL cannot appear in it at all.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\0", "")


def _metadata_args(metadata: dict | None) -> list[str]:
    if not metadata:
        return []
    comment = json.dumps(metadata, ensure_ascii=False, default=str)
    args = ["-metadata", "comment=" + _utf8_safe(comment)]
    if metadata.get("prompt"):
        args += ["-metadata", "title=" + _utf8_safe(str(metadata["prompt"]))]
    return args


class Mp4Writer:
    """Frames encoded as they come, into an MP4 that appears only once complete (write_mp4's rules):

        with Mp4Writer(path, fps, metadata) as out:
            out.write(frames)  # (t, H, W, 3) uint8, as many times as needed, all of one size

    An exception inside the block, Ctrl-C included, stops ffmpeg and leaves no file behind. A file that cannot be
    written (a full disk, ffmpeg refusing) raises OutputError: one line naming the output and why.

    `sidecars` ({path: data}) are companion JSON files that appear with the MP4 or not at all: each is written
    once the video is encoded and before it is moved into place, and removed again if that move fails.
    """

    def __init__(self, path: Path, fps: float, metadata: dict | None = None, overwrite: bool = False,
                 sidecars: dict[Path, dict] | None = None):
        self.sidecars = {Path(side): data for side, data in (sidecars or {}).items()}
        for target in [path, *self.sidecars]:
            files.refuse_existing(target, overwrite)
        if not (fps > 0 and np.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.path, self.fps, self.metadata, self.overwrite = Path(path), fps, metadata, overwrite
        self.proc: subprocess.Popen | None = None
        self.size: tuple[int, int] | None = None

    def __enter__(self) -> "Mp4Writer":
        # stderr goes to a file, not a pipe, so a chatty ffmpeg can never block while we feed its stdin.
        self.log = tempfile.TemporaryFile()
        try:
            open_part(self)
        except BaseException:
            self.log.close()
            raise
        return self

    def write(self, frames: np.ndarray) -> None:
        _check_frames(frames)
        h, w = frames.shape[1:3]
        if self.proc is not None and (w, h) != self.size:
            raise ValueError(f"frames of {w}x{h} cannot follow frames of {self.size[0]}x{self.size[1]}")
        with writing(self.path):
            if self.proc is None:
                self._start(w, h)
            try:
                for frame in frames:
                    self.proc.stdin.write(frame.tobytes())
            except BrokenPipeError:
                pass  # ffmpeg quit early; its exit code and log say why when the file is closed

    def _start(self, w: int, h: int) -> None:
        rate = str(Fraction(self.fps).limit_denominator(100_000))
        cmd = [
            ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", rate, "-i", "pipe:0",
            *_X264_ARGS, *_metadata_args(self.metadata), "-f", "mp4", file_arg(self.part.path),
        ]
        self.size = (w, h)
        # A stop inside Popen, after the fork, would leave an ffmpeg nobody kills, writing the part file again
        # after it is removed: it waits until `proc` is known.
        with files.stops_held():
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log)

    def _finish(self) -> None:
        if self.proc is None:
            raise ValueError("no frames were written")
        with writing(self.path):
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait()
            if self.proc.returncode != 0:
                self.log.seek(0)
                reason = _ffmpeg_reason(self.log.read(), self.proc.returncode)
                raise OutputError(f"could not write {self.path}: {reason}")
            commit(self)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self.proc is not None:
                self._stop()
            self.log.close()
            self.part.close()

    def _stop(self) -> None:
        if self.proc.poll() is None:
            # Stopped before the part file is removed, so ffmpeg cannot re-create a file nobody wants.
            self.proc.kill()
            self.proc.wait()
        with suppress(OSError):  # frames still buffered for a stopped ffmpeg have nowhere to go
            self.proc.stdin.close()


def commit(writer) -> None:
    """Move `writer.part` onto its name, its sidecars written first and removed again if the move fails: the
    output and its sidecars appear together or not at all."""
    written = write_sidecars(writer.sidecars, writer.overwrite)
    try:
        writer.part.commit(writer.overwrite)
    except BaseException:
        remove_all(written)
        raise


def open_part(writer) -> None:
    """`writer.part`: a new part file for `writer.path`, its folder made. Stop signals wait until the writer holds
    it (files.stops_held): a stop meanwhile removes it again on the way out."""
    writer.part = None
    try:
        with writing(writer.path):
            writer.path.parent.mkdir(parents=True, exist_ok=True)
            with files.stops_held():
                writer.part = files.Part(writer.path)
    except BaseException:
        if writer.part is not None:
            writer.part.close()
        raise


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError while writing `path` (a full disk, no permission) as one OutputError line naming it. A file that
    appeared meanwhile stays a FileExistsError, as when it was there from the start."""
    try:
        yield
    except FileExistsError:
        raise
    except OSError as e:
        raise OutputError(f"could not write {path}: {files.reason(e)}") from e


def write_sidecars(sidecars: dict[Path, dict], overwrite: bool) -> list[Path]:
    """Each sidecar, whole; if one cannot be written, those written before it are removed again."""
    written: list[Path] = []
    try:
        for side, data in sidecars.items():
            with writing(side):
                files.write_json_atomic(side, data, overwrite)
            written.append(side)
    except BaseException:
        remove_all(written)
        raise
    return written


def remove_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _ffmpeg_reason(log: bytes, code: int) -> str:
    """Why ffmpeg failed, in one line: a system error its log names (a full disk), else its first message (the
    cause; the lines after it are its consequences), else its exit status."""
    text = log.decode("utf-8", "replace")
    for number in _SYSTEM_ERRORS:
        if os.strerror(number) in text:
            return files.sentence(os.strerror(number))
    for line in text.splitlines():
        line = _LOG_PREFIX.sub("", line).strip()
        if line:
            return files.sentence(line)
    return f"ffmpeg was killed by signal {-code}" if code < 0 else f"ffmpeg stopped with exit code {code}"


def write_mp4(
    frames: np.ndarray, path: Path, fps: float, metadata: dict | None = None, overwrite: bool = False
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264/yuv420p MP4, atomically.

    `metadata` is stored as JSON in the `comment` tag (its prompt also as `title`), so
    that read_metadata() and ordinary media tools can read it back.
    """
    with Mp4Writer(path, fps, metadata, overwrite) as out:
        out.write(frames)
    return Path(path)
