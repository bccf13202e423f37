"""Video/image I/O against the real bundled ffmpeg, and output naming rules."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest

from sora_cli import files, mp4
from sora_cli.errors import OutputError
from sora_cli.naming import default_filename, safe_join, slugify
from sora_cli.files import write_json_atomic
from sora_cli.mp4 import write_mp4
from sora_cli.video import probe, read_image, read_metadata, read_video

# Non-ASCII, quotes, newlines and the characters ffmetadata escapes (= ; # \ and a "[" line).
PROMPT = 'Un café « spécial » — 猫が走る 🐈\n"quoted"; a=b #not-a-comment \\ back\n[style: anime]'
META = {"prompt": PROMPT, "negative_prompt": "blurry", "seed": 42, "model": "tiny",
        "size": "64x48", "steps": 4, "guidance": 5.0, "shift": 3.0, "sampler": "unipc"}


def gradient_clip(t: int = 17, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth gradient that slides right by a few pixels per frame."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([(x * 3 + 4 * i) % 256, y * 5, np.full_like(x, 10 * i)], -1) for i in range(t)]
    return np.stack(frames).astype(np.uint8)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    frames = gradient_clip()
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_mp4(frames, path, fps=16, metadata=META)
    return frames, path


def test_probe_reports_what_was_written(clip: tuple[np.ndarray, Path]) -> None:
    _, path = clip
    info = probe(path)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.width, info.height) == (64, 48)
    assert info.num_frames == 17
    assert info.fps == 16.0
    assert info.duration == pytest.approx(17 / 16)
    assert info.faststart is True


def test_metadata_round_trips(clip: tuple[np.ndarray, Path]) -> None:
    _, path = clip
    assert read_metadata(path) == META
    tags = probe(path).metadata
    assert tags["title"] == PROMPT
    assert json.loads(tags["comment"]) == META


def test_decoded_frames_match_input(clip: tuple[np.ndarray, Path]) -> None:
    frames, path = clip
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert fps == 16.0
    error = np.abs(decoded.astype(np.int16) - frames.astype(np.int16))
    assert error.mean() < 4.0
    # Frames come back in order: each decoded frame is nearest to its own source frame.
    for i in range(len(frames)):
        errors = [np.abs(decoded[i].astype(np.int16) - f).mean() for f in frames]
        assert int(np.argmin(errors)) == i


def test_file_without_faststart_or_metadata_is_reported_as_such(
    clip: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    _, path = clip
    plain = tmp_path / "plain.mp4"
    ffmpeg("-i", str(path), "-c", "copy", "-map_metadata", "-1", str(plain))
    info = probe(plain)
    assert info.faststart is False
    assert info.num_frames == 17
    assert read_metadata(plain) == {}


def test_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    write_mp4(gradient_clip(t=3), path, fps=8)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_mp4(gradient_clip(t=5), path, fps=8)
    assert path.read_bytes() == before

    write_mp4(gradient_clip(t=5), path, fps=8, overwrite=True)
    assert probe(path).num_frames == 5
    assert leftovers(tmp_path) == ["out.mp4"]


def test_file_appearing_during_the_write_is_not_clobbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.mp4"
    real_commit = files.commit

    def someone_else_writes_first(tmp: Path, target: Path, overwrite: bool) -> None:
        target.write_bytes(b"theirs")
        real_commit(tmp, target, overwrite)

    monkeypatch.setattr(files, "commit", someone_else_writes_first)
    with pytest.raises(FileExistsError):
        write_mp4(gradient_clip(t=2), path, fps=8)
    assert path.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == ["out.mp4"]


def test_odd_size_is_rejected_without_leaving_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="63x48"):
        write_mp4(gradient_clip(w=63), tmp_path / "odd.mp4", fps=16)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((0, 48, 64, 3), np.uint8),
        np.zeros((2, 48, 64, 3), np.float32),
        np.zeros((48, 64, 3), np.uint8),
        np.zeros((2, 48, 64, 4), np.uint8),
    ],
    ids=["empty", "float", "no-time-axis", "rgba"],
)
def test_bad_frames_are_rejected(tmp_path: Path, frames: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_mp4(frames, tmp_path / "bad.mp4", fps=16)
    assert leftovers(tmp_path) == []


def test_interrupt_mid_write_leaves_nothing(tmp_path: Path) -> None:
    class InterruptedAtFrame5(np.ndarray):
        def __getitem__(self, index):  # type: ignore[no-untyped-def]
            if index == 5:
                raise KeyboardInterrupt
            return super().__getitem__(index)

    frames = gradient_clip().view(InterruptedAtFrame5)
    with pytest.raises(KeyboardInterrupt):
        write_mp4(frames, tmp_path / "out.mp4", fps=16)
    assert leftovers(tmp_path) == []


def test_streaming_writer_appends_chunks_and_appears_only_when_complete(tmp_path: Path) -> None:
    frames, path = gradient_clip(), tmp_path / "stream.mp4"
    with mp4.Mp4Writer(path, 16, META) as out:
        for i in range(0, len(frames), 5):
            out.write(frames[i:i + 5])
            assert not path.exists()
    assert leftovers(tmp_path) == ["stream.mp4"]
    assert probe(path).num_frames == 17 and read_metadata(path) == META
    assert np.abs(read_video(path)[0].astype(int) - frames).mean() < 3


def test_streaming_writer_leaves_nothing_when_stopped(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot follow"):
        with mp4.Mp4Writer(tmp_path / "a.mp4", 16) as out:
            out.write(gradient_clip(t=3))
            out.write(gradient_clip(t=3, w=32))
    with pytest.raises(RuntimeError, match="the model failed"):
        with mp4.Mp4Writer(tmp_path / "b.mp4", 16) as out:
            out.write(gradient_clip(t=3))
            raise RuntimeError("the model failed")
    with pytest.raises(ValueError, match="no frames"):
        with mp4.Mp4Writer(tmp_path / "c.mp4", 16):
            pass
    assert leftovers(tmp_path) == []


def test_ffmpeg_failure_raises_its_first_message_in_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mp4, "_X264_ARGS", ["-c:v", "no_such_encoder"])
    path = tmp_path / "out.mp4"
    with pytest.raises(OutputError) as err:
        write_mp4(gradient_clip(t=2), path, fps=16)
    # ffmpeg logs four lines; the first is the cause, the others its consequences
    assert str(err.value) == f"could not write {path}: unknown encoder 'no_such_encoder'"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 20], ids=["empty", "text"])
def test_unreadable_files_give_one_line_value_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    for reader in (read_video, read_image, probe):
        with pytest.raises(ValueError, match="broken.mp4") as err:
            reader(path)
        assert "\n" not in str(err.value)


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", *args], check=True)


def test_size_change_mid_stream_is_an_error_not_a_resize(tmp_path: Path) -> None:
    # Raw H.264 streams concatenate into one stream whose frame size changes halfway.
    for name, size in (("a.h264", "64x48"), ("b.h264", "32x32")):
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=16", "-frames:v", "3",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", str(tmp_path / name))
    joined = tmp_path / "joined.h264"
    joined.write_bytes((tmp_path / "a.h264").read_bytes() + (tmp_path / "b.h264").read_bytes())
    assert read_video(tmp_path / "a.h264")[0].shape == (3, 48, 64, 3)
    with pytest.raises(ValueError, match="size changes"):
        read_video(joined)


def test_rotated_video_is_read_upright(clip: tuple[np.ndarray, Path], tmp_path: Path) -> None:
    frames, path = clip
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(path), "-c", "copy", str(rotated))
    decoded, _ = read_video(rotated)
    assert decoded.shape == (17, 64, 48, 3)
    # Undo the quarter turn: it must match the original frames.
    upright = np.rot90(decoded, k=-1, axes=(1, 2))
    assert np.abs(upright.astype(np.int16) - frames).mean() < 4.0


def test_gif_round_trip(tmp_path: Path) -> None:
    # Four flat colours survive the GIF palette exactly.
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    index = np.random.default_rng(0).integers(0, 4, (5, 6, 8)).repeat(8, axis=1).repeat(8, axis=2)
    frames = palette[index]
    path = tmp_path / "anim.gif"
    iio.imwrite(path, frames, duration=100, loop=0)

    decoded, fps = read_video(path)
    np.testing.assert_array_equal(decoded, frames)
    assert fps == 10.0


def test_webm_round_trip(tmp_path: Path) -> None:
    frames = gradient_clip(t=6)
    path = tmp_path / "clip.webm"
    writer = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=16, codec="libvpx-vp9")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()

    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and fps == 16.0
    assert np.abs(decoded.astype(np.int16) - frames).mean() < 6.0
    assert probe(path).codec == "vp9"


def test_png_and_webp_round_trip_exactly_with_alpha_dropped(tmp_path: Path) -> None:
    rgba = np.random.default_rng(1).integers(0, 256, (20, 30, 4)).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", rgba)
    iio.imwrite(tmp_path / "a.webp", rgba[..., :3], lossless=True)
    for name in ("a.png", "a.webp"):
        image = read_image(tmp_path / name)
        assert image.shape == (20, 30, 3)
        np.testing.assert_array_equal(image, rgba[..., :3])


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    image = gradient_clip(t=1)[0]
    iio.imwrite(tmp_path / "a.jpg", image, quality=95)
    decoded = read_image(tmp_path / "a.jpg")
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(np.int16) - image).mean() < 3.0


def test_json_sidecar_is_atomic_and_respects_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_json_atomic(path, META)
    assert json.loads(path.read_text(encoding="utf-8")) == META
    with pytest.raises(FileExistsError):
        write_json_atomic(path, {"seed": 1})
    assert json.loads(path.read_text(encoding="utf-8")) == META
    write_json_atomic(path, {"seed": 1}, overwrite=True)
    assert json.loads(path.read_text(encoding="utf-8")) == {"seed": 1}
    assert leftovers(tmp_path) == ["run.json"]


# ---------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Cat, running!", "a-cat-running"),
        ("Crème brûlée à Montréal", "creme-brulee-a-montreal"),
        ("Don't stop", "dont-stop"),
        ("", "video"),
        ("🐈🚀", "video"),
        ("猫が走る", "video"),
        ("../../etc/passwd", "etc-passwd"),
        ("..", "video"),
        ("-leading dash", "leading-dash"),
        (".hidden", "hidden"),
        ("C:\\Windows\\system32", "c-windows-system32"),
    ],
)
def test_slugify(text: str, expected: str) -> None:
    assert slugify(text) == expected


def test_slugify_caps_length_without_trailing_dash() -> None:
    slug = slugify("word " * 100)
    assert len(slug) <= 48 and not slug.endswith("-")
    assert slugify("abcd efgh", max_len=5) == "abcd"
    assert slugify("x" * 200, max_len=10) == "x" * 10


def test_default_filename() -> None:
    now = datetime(2025, 3, 4, 5, 6, 7)
    assert default_filename(42, "A cat surfing!", now=now) == "20250304_050607_42_a-cat-surfing.mp4"
    assert default_filename(7, "../../etc/passwd", now=now) == "20250304_050607_7_etc-passwd.mp4"


def test_safe_join_accepts_names_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "clip.mp4") == tmp_path / "clip.mp4"
    assert safe_join(tmp_path, "sub/clip.mp4") == tmp_path / "sub" / "clip.mp4"


@pytest.mark.parametrize(
    "name", ["", ".", "../x.mp4", "a/../../x.mp4", "..\\x.mp4", "/etc/passwd", "sub/..", "a\0b"]
)
def test_safe_join_rejects_escapes(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="must stay inside"):
        safe_join(tmp_path, name)


def test_safe_join_rejects_symlink_out_of_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="must stay inside"):
        safe_join(root, "link/clip.mp4")
