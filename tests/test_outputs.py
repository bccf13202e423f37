"""What a write leaves behind when it goes wrong: part files of killed runs, two batches in one folder, a full
disk, an MP4 and its sidecar. Each output is whole and in place, or absent, with one line saying why."""

from __future__ import annotations

import errno
import fcntl
import inspect
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sora_cli import files, manifest, mp4
from sora_cli.batch import LOCK
from sora_cli.errors import OutputError
from sora_cli.mp4 import Mp4Writer, write_mp4
from sora_cli.video import probe
from test_batch import finished_folder
from test_cli import call_sora
from test_video import META, gradient_clip, leftovers

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
NO_SPACE = os.strerror(errno.ENOSPC)


def sora(*args: str) -> list[str]:
    return [sys.executable, "-m", "sora_cli", *args]


def held_elsewhere(path: Path) -> int:
    """A descriptor holding `path`'s flock as another process would: flock locks belong to the open file
    description, so this one conflicts with any other open of the file, in this process too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------- part files


def test_a_killed_writers_part_file_is_removed_and_a_live_ones_is_not(tmp_path: Path) -> None:
    path = tmp_path / "shot [1].mp4"  # glob characters in the name match only themselves
    stale = tmp_path / ".shot [1].mp4.abcd1234.part.mp4"  # as a SIGKILLed run leaves it: unlocked
    live = tmp_path / ".shot [1].mp4.0badf00d.part.mp4"
    other = tmp_path / ".shot 1.mp4.abcd1234.part.mp4"  # another output's: not this write's business
    for part in (stale, live, other):
        part.write_bytes(b"half a video")
    fd = held_elsewhere(live)
    try:
        write_mp4(gradient_clip(t=3), path, fps=8)
        assert leftovers(tmp_path) == sorted([path.name, live.name, other.name])
    finally:
        os.close(fd)  # its writer dies: now it is a leftover too
    write_mp4(gradient_clip(t=3), path, fps=8, overwrite=True)
    assert leftovers(tmp_path) == sorted([path.name, other.name])


def test_a_writer_holds_its_part_file_locked_until_it_is_gone(tmp_path: Path) -> None:
    path, before = tmp_path / "out.mp4", open_fds()
    with Mp4Writer(path, 8, overwrite=True) as first:
        first.write(gradient_clip(t=2))
        part = first.part.path
        with pytest.raises(BlockingIOError):
            held_elsewhere(part)
        # a second writer of the same output, here or in another process, leaves the first one's file alone
        with Mp4Writer(path, 8, overwrite=True) as second:
            second.write(gradient_clip(t=2))
            assert part.exists()
        assert part.exists()
    assert leftovers(tmp_path) == ["out.mp4"]
    assert open_fds() == before


@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
def test_the_lock_and_the_part_go_on_every_exit(tmp_path: Path, stop: type[BaseException]) -> None:
    def half_written(tmp: Path) -> None:
        tmp.write_text("{")
        raise stop()

    before = open_fds()
    with pytest.raises(stop):
        with Mp4Writer(tmp_path / "out.mp4", 8) as out:
            out.write(gradient_clip(t=2))
            raise stop()
    with pytest.raises(stop):
        files.write_atomically(tmp_path / "out.json", False, half_written)
    assert leftovers(tmp_path) == [] and open_fds() == before


def test_write_atomically_removes_its_own_leftovers(tmp_path: Path) -> None:
    (tmp_path / ".run.json.abcd1234.part.json").write_text("{")
    files.write_json_atomic(tmp_path / "run.json", {"seed": 1})
    assert leftovers(tmp_path) == ["run.json"]


def test_sigkill_then_rerun_leaves_only_the_video(tiny_wan_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = ["generate", "fox", "--model", str(tiny_wan_dir), "--out", str(out / "x.mp4"), "--frames", "9", "--quiet"]
    proc = subprocess.Popen(sora(*args, "--steps", "50"), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while not list(out.glob(".x.mp4.*.part.mp4")) and proc.poll() is None:
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert list(out.glob(".x.mp4.*.part.mp4")), "the kill must land while the video is being made"
    result = subprocess.run(sora(*args, "--steps", "1"), env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert leftovers(out) == ["x.mp4"]


# ---------------------------------------------------------------------------- errors in one line


def test_a_failing_pipe_is_an_output_error_and_leaves_nothing(tmp_path: Path) -> None:
    class Full:
        def __init__(self, pipe):
            self.pipe = pipe

        def write(self, data: bytes) -> None:
            raise OSError(errno.ENOSPC, NO_SPACE)

        def close(self) -> None:
            self.pipe.close()

    path = tmp_path / "out.mp4"
    with pytest.raises(OutputError) as err:
        with Mp4Writer(path, 8) as out:
            out.write(gradient_clip(t=2))
            out.proc.stdin = Full(out.proc.stdin)
            out.write(gradient_clip(t=2))
    assert str(err.value) == f"could not write {path}: no space left on device"
    assert leftovers(tmp_path) == []


def test_a_failing_commit_is_an_output_error_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def broken(tmp: Path, target: Path, overwrite: bool) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(files, "commit", broken)
    path = tmp_path / "out.mp4"
    with pytest.raises(OutputError) as err:
        write_mp4(gradient_clip(t=2), path, fps=8)
    assert str(err.value) == f"could not write {path}: input/output error"
    assert leftovers(tmp_path) == []


def test_a_failed_batch_item_records_one_line(tiny_wan_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(mp4, "_X264_ARGS", ["-c:v", "no_such_encoder"])
    file, out = tmp_path / "p.txt", tmp_path / "out"
    file.write_text("a fox\n")
    code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), "--model", str(tiny_wan_dir),
                             "--steps", "1", "--frames", "5", "--quiet")
    (record,) = manifest.read(out)
    assert code == 3 and record["status"] == "failed"
    assert record["error"] == f"could not write {out / record['path']}: unknown encoder 'no_such_encoder'"
    assert err.splitlines() == [f"error: {file}:1: {record['error']}"]


# ---------------------------------------------------------------------------- sidecars


def test_sidecars_appear_with_the_video(tmp_path: Path) -> None:
    path, side = tmp_path / "out.mp4", tmp_path / "out.json"
    with Mp4Writer(path, 8, META, sidecars={side: META}) as out:
        out.write(gradient_clip(t=2))
        assert not side.exists()
    assert json.loads(side.read_text(encoding="utf-8")) == META
    assert probe(path).num_frames == 2 and leftovers(tmp_path) == ["out.json", "out.mp4"]
    with pytest.raises(FileExistsError, match="out.json"):  # refused before anything is encoded
        Mp4Writer(tmp_path / "new.mp4", 8, sidecars={side: {}})
    assert json.loads(side.read_text(encoding="utf-8")) == META


def test_a_sidecar_that_cannot_be_written_takes_the_video_with_it(tmp_path: Path, monkeypatch) -> None:
    real = files.write_json_atomic

    def full_on_second(path: Path, data: dict, overwrite: bool = False) -> Path:
        if path.name == "b.json":
            raise OSError(errno.ENOSPC, NO_SPACE)
        return real(path, data, overwrite)

    monkeypatch.setattr(files, "write_json_atomic", full_on_second)
    path = tmp_path / "out.mp4"
    with pytest.raises(OutputError) as err:
        with Mp4Writer(path, 8, sidecars={tmp_path / "a.json": {"a": 1}, tmp_path / "b.json": {"b": 2}}) as out:
            out.write(gradient_clip(t=2))
    assert str(err.value) == f"could not write {tmp_path / 'b.json'}: no space left on device"
    assert leftovers(tmp_path) == []


def test_a_video_that_cannot_be_moved_into_place_takes_its_sidecar_with_it(tmp_path: Path, monkeypatch) -> None:
    real = files.commit

    def fail_for_the_video(tmp: Path, target: Path, overwrite: bool) -> None:
        if target.suffix == ".mp4":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(tmp, target, overwrite)

    monkeypatch.setattr(files, "commit", fail_for_the_video)
    with pytest.raises(OutputError, match="out.mp4: input/output error"):
        with Mp4Writer(tmp_path / "out.mp4", 8, sidecars={tmp_path / "out.json": {}}) as out:
            out.write(gradient_clip(t=2))
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)]).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def leave_room(disk: Path, size: int) -> None:
    """Fill the disk with `disk/filler` but for the pages `size` bytes take."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    page = os.statvfs(disk).f_frsize
    filler = disk / "filler"
    os.truncate(filler, filler.stat().st_size - math.ceil(size / page) * page)


def test_a_full_disk_is_one_line_and_leaves_nothing(tiny_wan_dir: Path, small_disk: Path, capsys) -> None:
    leave_room(small_disk, 0)
    path = small_disk / "x.mp4"
    code, out, err = call_sora(capsys, "generate", "fox", "--model", str(tiny_wan_dir), "--out", str(path),
                               "--steps", "1", "--frames", "9", "--quiet")
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"error: could not write {path}: no space left on device"]
    assert leftovers(small_disk) == ["filler"]


def test_a_sidecar_without_room_on_the_disk_takes_the_video_with_it(small_disk: Path) -> None:
    frames, path, side = gradient_clip(t=3), small_disk / "x.mp4", small_disk / "x.json"
    write_mp4(frames, path, 8, META)
    size = path.stat().st_size
    path.unlink()
    leave_room(small_disk, size)  # room for the video, none for the sidecar
    with pytest.raises(OutputError) as err:
        with Mp4Writer(path, 8, META, sidecars={side: META}) as out:
            out.write(frames)
    assert str(err.value) == f"could not write {side}: no space left on device"
    assert leftovers(small_disk) == ["filler"]


def _sidecars_wired() -> bool:
    from sora_cli.editing import Stream

    return "sidecars" in inspect.signature(Stream.write).parameters


@pytest.mark.skipif(not _sidecars_wired(), reason="Stream.write does not pass sidecars to Mp4Writer yet")
def test_generate_with_a_json_sidecar_on_a_full_disk_leaves_nothing(tiny_wan_dir: Path, small_disk: Path,
                                                                    capsys) -> None:
    path = small_disk / "x.mp4"
    args = ["generate", "fox", "--model", str(tiny_wan_dir), "--out", str(path), "--steps", "1", "--frames", "9",
            "--seed", "1", "--quiet"]
    assert call_sora(capsys, *args)[0] == 0
    size = path.stat().st_size
    path.unlink()
    leave_room(small_disk, size)  # the same video fits again; its sidecar does not
    code, out, err = call_sora(capsys, *args, "--metadata", "json")
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"error: could not write {path.with_suffix('.json')}: no space left on device"]
    assert leftovers(small_disk) == ["filler"]
    # With room again, the rerun is not refused: nothing was left to say "already exists".
    (small_disk / "filler").unlink()
    assert call_sora(capsys, *args, "--metadata", "json")[0] == 0
    assert leftovers(small_disk) == ["x.json", "x.mp4"]


# ---------------------------------------------------------------------------- one batch per folder


def prompts(tmp_path: Path, count: int = 5) -> Path:
    file = tmp_path / "p.txt"
    file.write_text("".join(f"prompt number {i}\n" for i in range(count)))
    return file


def videos(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.mp4"))


def oks(out: Path) -> list[str]:
    return sorted(r["path"] for r in manifest.read(out) if r["status"] == "ok")


def test_a_batch_into_a_folder_in_use_stops_before_rendering(tiny_wan_dir: Path, tmp_path: Path, capsys) -> None:
    file, out = prompts(tmp_path), tmp_path / "out"
    out.mkdir()
    args = ["batch", str(file), "--out-dir", str(out), "--model", str(tiny_wan_dir), "--steps", "2", "--frames", "5",
            "--quiet"]
    fd = files.take(out / LOCK)  # another batch rendering into the folder
    try:
        code, stdout, err = call_sora(capsys, *args)
        assert (code, stdout) == (1, "")
        assert err.splitlines() == [f"error: {out} is in use by another sora batch (pid {os.getpid()}); nothing was "
                                    "rendered — run this again when it has finished to render what is left"]
        assert leftovers(out) == [LOCK]
        assert call_sora(capsys, *args, "--dry-run")[0] == 0  # a dry run renders nothing: it needs no lock
    finally:
        files.unlock(fd, out / LOCK)
    code, stdout, _ = call_sora(capsys, *args)
    assert code == 0 and len(stdout.splitlines()) == 5
    assert len(videos(out)) == 5 and oks(out) == videos(out)
    assert leftovers(out) == finished_folder(out)


def test_two_batches_started_together_render_each_item_once(tiny_wan_dir: Path, tmp_path: Path) -> None:
    file, out = prompts(tmp_path), tmp_path / "out"
    args = sora("batch", str(file), "--out-dir", str(out), "--model", str(tiny_wan_dir), "--steps", "2",
                "--frames", "5", "--quiet")
    procs = [subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = sorted((p.returncode, out, err) for p in procs for out, err in [p.communicate()])
    assert len(videos(out)) == 5 and oks(out) == videos(out), "each item rendered and recorded once"
    assert sum(len(stdout.splitlines()) for _, stdout, _ in results) == 5
    assert results[0][0] == 0, results[0][2]
    if results[1][0] != 0:  # they overlapped: the second stopped at once
        assert results[1][0] == 1 and results[1][1] == ""
        assert results[1][2].splitlines() == [results[1][2].splitlines()[0]]
        assert results[1][2].startswith(f"error: {out} is in use by another sora batch (pid ")
    assert leftovers(out) == finished_folder(out)


def test_every_torchrun_rank_stops_when_the_folder_is_in_use(tiny_wan_dir: Path, tmp_path: Path) -> None:
    file, out = prompts(tmp_path, 2), tmp_path / "out"
    out.mkdir()
    fd = files.take(out / LOCK)
    try:
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", "-m", "sora_cli", "batch", str(file), "--out-dir", str(out), "--model",
                                 str(tiny_wan_dir), "--steps", "1", "--frames", "1", "--quiet"],
                                env=ENV, capture_output=True, text=True)
    finally:
        files.unlock(fd, out / LOCK)
    assert result.returncode != 0
    assert result.stderr.count(f"error: {out} is in use by another sora batch (pid {os.getpid()})") == 2
    assert leftovers(out) == []


def test_a_batch_that_fails_before_writing_leaves_no_folder(tmp_path: Path, capsys) -> None:
    model = tmp_path / "model"
    model.mkdir()  # a model folder without a model
    (model / "model_index.json").write_text("{}")
    file, out = prompts(tmp_path, 1), tmp_path / "new" / "out"
    code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), "--model", str(model), "--quiet")
    assert code != 0 and err.startswith("error: ")
    assert not out.exists()
    out.mkdir(parents=True)  # a folder the run did not create stays
    assert call_sora(capsys, "batch", str(file), "--out-dir", str(out), "--model", str(model), "--quiet")[0] != 0
    assert out.is_dir() and leftovers(out) == []
