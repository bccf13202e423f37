"""Stop signals end every command cleanly: a short message, the shell's exit code 128 + N, and no partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sora_cli.mp4 import write_mp4
from test_editing import moving_square


def stop_mid_render(args: list[str], folder: Path, signum: int) -> subprocess.CompletedProcess:
    """Run `sora ARGS`, wait until its output's hidden part file exists (the model is rendering into it), then
    send `signum`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "sora_cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not list(folder.glob(".*.part.mp4")) and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the render must still be running when the signal is sent"
    proc.send_signal(signum)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.parametrize("signum,code,message", [(signal.SIGTERM, 143, "stopped by SIGTERM"),
                                                  (signal.SIGINT, 130, "interrupted"),
                                                  (signal.SIGHUP, 129, "stopped by SIGHUP")])
def test_generate_stops_cleanly(tiny_wan_dir, tmp_path, signum, code, message):
    out = tmp_path / "out"
    result = stop_mid_render(["generate", "fox", "--model", str(tiny_wan_dir), "--out", str(out / "x.mp4"),
                              "--steps", "500", "--frames", "9", "--quiet"], out, signum)
    assert result.returncode == code, result.stderr
    assert result.stderr.strip().splitlines()[-1] == message and "Traceback" not in result.stderr
    assert result.stdout == "" and list(out.iterdir()) == [], "no partial file"


def test_an_editing_command_stops_cleanly(folders, tmp_path):
    clip, out = tmp_path / "clip.mp4", tmp_path / "out"
    write_mp4(moving_square(9, 48, 32), clip, fps=8)
    result = stop_mid_render(["extend", str(clip), "--prompt", "fox", "--seconds", "4", "--model", str(folders["replace"]),
                              "--out", str(out / "longer.mp4"), "--steps", "500", "--quiet"], out, signal.SIGTERM)
    assert result.returncode == 143 and "stopped by SIGTERM" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and list(out.iterdir()) == []


@pytest.mark.parametrize("writer", ["mp4", "image", "json"])
def test_a_stop_while_the_part_file_is_made_waits_until_it_can_be_removed(tmp_path, monkeypatch, writer):
    """The signal handler runs between any two bytecodes: also after the part file exists and before its writer
    holds it. There the stop is held back and raised once the writer can remove the file."""
    from sora_cli import files
    from sora_cli.mp4 import Mp4Writer
    from sora_cli.still import ImageWriter

    real = files._reserve

    def reserve_then_stop(target):
        made = real(target)
        assert files.hold_stop()  # what the command line's handler does when the signal arrives here
        return made

    monkeypatch.setattr(files, "_reserve", reserve_then_stop)
    with pytest.raises(KeyboardInterrupt):
        if writer == "json":
            files.write_json_atomic(tmp_path / "x.json", {"a": 1})
        else:
            with (Mp4Writer if writer == "mp4" else ImageWriter)(tmp_path / ("x.mp4" if writer == "mp4" else "x.png"), 8):
                pytest.fail("the stop must be raised before the writer is used")
    assert list(tmp_path.iterdir()) == [] and not files.hold_stop()
