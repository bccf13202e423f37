"""torchrun's ranks render the files one process renders, in the environment a user has: torchrun sets
OMP_NUM_THREADS=1 for its workers, a single process computes on all its cores, and the CPU math is not the same
on one thread as on two (see `sora_cli.distributed`). test_batch's torchrun test sets OMP_NUM_THREADS=1 for both
runs, which hid that; these tests take it out of the environment instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from sora_cli.video import read_video

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def user_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    return dict(env, HF_HUB_OFFLINE="1", **extra)


def finish(procs: list[subprocess.Popen]) -> list[str]:
    outs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return [out for out, _ in outs]


def test_two_torchrun_ranks_render_what_one_process_renders_by_default(tiny_wan_dir, tmp_path):
    file = tmp_path / "p.txt"
    file.write_text("a red fox running\nblue ball bouncing\ngreen star spinning\n")
    # 256x256: the tiny VAE's 1x1 convolutions then round differently on one thread than on two (on this
    # project's 2-core AMD EPYC machine a pixel or two one level apart, which x264 turns into 8 levels)
    options = ["--model", str(tiny_wan_dir), "--steps", "1", "--frames", "9", "--size", "256x256", "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    finish([subprocess.Popen([sys.executable, "-m", "sora_cli", "batch", str(file), "--out-dir", str(one), *options],
                             env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            subprocess.Popen([*TORCHRUN, "-m", "sora_cli", "batch", str(file), "--out-dir", str(two), *options],
                             env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)])
    names = sorted(p.name for p in one.glob("*.mp4"))
    assert len(names) == 3 and sorted(p.name for p in two.glob("*.mp4")) == names
    differ = {}
    for name in names:
        a, b = read_video(one / name)[0], read_video(two / name)[0]
        if not np.array_equal(a, b):
            differ[name] = int(np.abs(a.astype(int) - b.astype(int)).max())
    assert differ == {}, f"most levels apart: {differ}"


PROBE = """
import os

from sora_cli.distributed import Ranks

ranks = Ranks.from_env()  # as `sora batch` calls it: before torch is imported
import torch

started = torch.get_num_threads()
ranks.device("cpu" if ranks.rank == 0 else "mps")  # rank 1 as a rank whose model runs elsewhere than on the CPU
# one write of the whole line: the ranks share the pipe, and print may write the newline apart
os.write(1, f"{ranks.rank} {started} {torch.get_num_threads()}\\n".encode())
"""


def test_a_cpu_rank_has_the_threads_of_one_process_unless_the_user_chose(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = user_env(PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                               os.environ.get("PYTHONPATH", "")]))
    runs = [([*TORCHRUN, str(script)], env), ([*TORCHRUN, str(script)], dict(env, OMP_NUM_THREADS="1")),
            ([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env)]
    *ranked, single = finish([subprocess.Popen(args, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                              for args, e in runs])
    n = int(single)
    rows = [sorted(tuple(map(int, line.split())) for line in out.splitlines()) for out in ranked]
    # torchrun's own OMP_NUM_THREADS=1 undone: one process's count on the CPU, torchrun's one thread elsewhere
    assert rows[0] == [(0, n, n), (1, n, 1)]
    assert rows[1] == [(0, 1, 1), (1, 1, 1)]  # the user's own OMP_NUM_THREADS=1 is kept
