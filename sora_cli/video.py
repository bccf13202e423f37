"""Reading videos and images through the ffmpeg binary bundled with imageio-ffmpeg (writing: mp4.py).

There is no ffprobe and no system ffmpeg to rely on, so every fact about a file comes
from the bundled ffmpeg: raw frames go through pipes, stream facts are read from its
log, container tags from its `ffmetadata` output and frame counts from `framecrc`.
Frames are never resized: a size the encoder cannot take is an error, not a surprise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

_PKT_FLAG_DISCARD = 0x4  # AV_PKT_FLAG_DISCARD, as printed in framecrc's "F=0x.." column
_RECONFIGURED = re.compile(
    rb"Reconfiguring filter graph because video parameters changed to .*? (\d+)x(\d+)"
)


@dataclass
class VideoInfo:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    metadata: dict[str, str]
    faststart: bool


def ffmpeg() -> str:
    # Imported here so that importing sora_cli never pays for locating the binary.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [ffmpeg(), "-hide_banner", "-nostdin", *args]
    return subprocess.run(cmd, input=input, capture_output=True)


def _tail(stderr: bytes, lines: int = 1) -> str:
    text = stderr.decode("utf-8", "replace").strip().splitlines()
    return "\n".join(text[-lines:]) or "ffmpeg gave no reason"


def file_arg(path: Path) -> str:
    # "file:" stops ffmpeg from reading a name like "-x.mp4" as an option or "a:b.mp4"
    # as a protocol.
    return "file:" + str(path)


def _parse_video_stream(stderr: bytes) -> tuple[str, str, int, int, float | None]:
    """(codec, pix_fmt, width, height, fps) of the first input video stream in ffmpeg's log,
    e.g. "Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709), 64x48, ..., 16 fps"."""
    log = stderr.decode("utf-8", "replace").split("\nOutput #")[0]
    m = re.search(r"^\s*Stream #\d+:\d+\S*: Video: (.*)$", log, re.MULTILINE)
    if not m:
        raise ValueError("ffmpeg reported no video stream")
    parts = [p.strip() for p in re.split(r",(?![^()]*\))", m.group(1))]  # commas outside (...)
    codec = parts[0].split()[0]
    pix_fmt = re.match(r"\w*", parts[1]).group(0) if len(parts) > 1 else ""
    size = next((s for p in parts if (s := re.match(r"(\d+)x(\d+)", p))), None)
    if not size:
        raise ValueError("ffmpeg reported no frame size")
    rates = {}
    for p in parts:
        if r := re.fullmatch(r"([\d.]+)(k?) (fps|tbr)", p):
            rates[r.group(3)] = float(r.group(1)) * (1000 if r.group(2) else 1)  # "1k" = 1000
    fps = rates.get("fps") or rates.get("tbr")  # tbr: ffmpeg's guess when no average is known
    return codec, pix_fmt or "unknown", int(size.group(1)), int(size.group(2)), fps


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Global tags of an ffmetadata file, undoing its backslash escapes."""
    tags: dict[str, str] = {}
    # A logical line may span physical lines: newlines inside values are escaped.
    for line in re.findall(r"(?:\\.|[^\\\n])+", text, re.DOTALL):
        if line[0] in ";#":
            continue
        if line[0] == "[":
            break  # per-stream and chapter sections follow; only global tags wanted
        m = re.fullmatch(r"((?:\\.|[^\\=])*)=(.*)", line, re.DOTALL)
        if m:
            key, value = (re.sub(r"\\(.)", r"\1", g, flags=re.DOTALL) for g in m.groups())
            tags[key] = value
    return tags


def _has_faststart(path: Path) -> bool:
    """True when the top-level `moov` box comes before `mdat` (playback can start early)."""
    with open(path, "rb") as f:
        size_total = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size_total:
            f.seek(pos)
            header = f.read(16)
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if size == 1 and len(header) == 16:
                size = int.from_bytes(header[8:16], "big")  # 64-bit "largesize"
            elif size == 0:
                size = size_total - pos  # box runs to the end of the file
            if kind == b"moov":
                return True
            if kind == b"mdat" or size < 8:
                return False
            pos += size
    return False


def probe(path: Path) -> VideoInfo:
    """Stream facts of the first video stream, with the frame count taken from its packets."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    src = file_arg(path)
    # Copying packets into framecrc counts every frame exactly and gives their timestamps.
    res = _run(["-i", src, "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "pipe:1"])
    if res.returncode != 0:
        raise ValueError(f"cannot probe {path}: {_tail(res.stderr)}")
    codec, pix_fmt, width, height, fps = _parse_video_stream(res.stderr)

    timebase, starts, ends = Fraction(0), [], []
    for line in res.stdout.decode("ascii", "replace").splitlines():
        if line.startswith("#tb 0:"):
            timebase = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            # stream, dts, pts, duration, size, crc[, F=flags]
            fields = [f.strip() for f in line.split(",")]
            flags = fields[6] if len(fields) > 6 else "F=0x0"
            if int(flags.removeprefix("F="), 16) & _PKT_FLAG_DISCARD:
                continue  # cut away by an edit list: decoders never show it
            pts, dur = int(fields[2]), int(fields[3])
            starts.append(pts)
            ends.append(pts + dur)
    num_frames = len(starts)
    duration = float((max(ends) - min(starts)) * timebase) if starts else 0.0
    if not fps and duration > 0:
        fps = num_frames / duration
    if duration <= 0 and fps:
        duration = num_frames / fps

    meta = _run(["-loglevel", "error", "-i", src, "-f", "ffmetadata", "pipe:1"])
    tags = _parse_ffmetadata(meta.stdout.decode("utf-8", "replace")) if meta.returncode == 0 else {}
    return VideoInfo(
        codec=codec, pix_fmt=pix_fmt, width=width, height=height, fps=float(fps or 0.0),
        num_frames=num_frames, duration=duration, metadata=tags, faststart=_has_faststart(path),
    )


def read_metadata(path: Path) -> dict:
    """The JSON written by write_mp4 into the comment tag; {} when there is none."""
    comment = probe(path).metadata.get("comment", "")
    try:
        data = json.loads(comment)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _split_ppm_stream(data: bytes) -> list[np.ndarray]:
    """Frames from ffmpeg's PPM pipe. Unlike the stream header, each PPM header gives
    the size after ffmpeg has turned a phone video upright."""
    frames, pos = [], 0
    header = re.compile(rb"P6\n(\d+) (\d+)\n255\n")
    while pos < len(data):
        m = header.match(data, pos)
        if not m:
            raise ValueError("unexpected data in ffmpeg's frame stream")
        w, h = int(m.group(1)), int(m.group(2))
        start, pos = m.end(), m.end() + w * h * 3
        if pos > len(data):
            raise ValueError("truncated frame in ffmpeg's frame stream")
        frames.append(np.frombuffer(data, np.uint8, w * h * 3, start).reshape(h, w, 3))
    return frames


def _decode(
    args: list[str], input: bytes | None, what: str, path: Path
) -> tuple[list[np.ndarray], bytes]:
    out = ["-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"]
    res = _run([*args, *out], input=input)
    if res.returncode != 0:
        raise ValueError(f"cannot read {what} {path}: {_tail(res.stderr)}")
    frames = _split_ppm_stream(res.stdout)
    if not frames:
        raise ValueError(f"cannot read {what} {path}: it has no frames")
    return frames, res.stderr


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """All frames of the first video stream as (T, H, W, 3) uint8 RGB, and its fps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    # passthrough: hand over each decoded frame once, never duplicating or dropping any
    # to force a constant rate (GIFs have per-frame delays).
    args = ["-i", file_arg(path), "-map", "0:v:0", "-fps_mode", "passthrough"]
    frames, log = _decode(args, None, "video", path)
    # After a mid-stream size change ffmpeg scales frames to the first size, and its log
    # is the only trace of that: a silent resize is not acceptable.
    _, _, width, height, fps = _parse_video_stream(log)
    for w, h in _RECONFIGURED.findall(log):
        if (int(w), int(h)) != (width, height):
            raise ValueError(f"cannot read video {path}: its frame size changes mid-stream")
    return np.stack(frames), float(fps or 0.0)


def read_image(path: Path) -> np.ndarray:
    """An image (png, jpg, webp, ...) as (H, W, 3) uint8 RGB; any alpha channel is dropped."""
    path = Path(path)
    # Piped in, so ffmpeg identifies the format from the bytes alone and never reads a
    # "%" in the file name as an image-sequence pattern.
    data = path.read_bytes()
    if not data:
        raise ValueError(f"cannot read image {path}: the file is empty")
    frames, _ = _decode(["-i", "pipe:0", "-frames:v", "1"], data, "image", path)
    return frames[0].copy()
