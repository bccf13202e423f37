"""Running under torchrun: which rank this process is, its GPU, and the two messages the ranks exchange.

torchrun (and its multi-machine rendezvous) sets RANK, WORLD_SIZE and LOCAL_RANK and the address of rank 0.
The ranks meet twice: at the start, when rank 0 hands out the plan, and at the end, when they add up their
counts. A single process (no torchrun, or WORLD_SIZE=1) never creates a process group.

The group always uses gloo, on the CPU, also when the models run on GPUs: it carries a list of item numbers and
two counts, and gloo carries those on any machine without touching GPU memory, so the path tested here on CPU
(two gloo ranks) is the one that runs on a cluster. NCCL would add nothing for a few bytes but a watchdog.

A rank that computes on the CPU uses as many threads as a single process would, because the CPU math is not the
same on one thread as on two. Measured (torch 2.13, MKL 2024.2, 2-core AMD EPYC): MKL's float matrix product
with 5-7 or 9-11 rows rounds differently on 2 threads than on 1; the tiny test VAE's attention has such a product
(a 1x1 convolution from 3 channels to 9), so its decoded frames at 256x256 had 1 to 4 values in 1.8 million one
level apart, and x264 encoded those frames differently: 5 to 8 levels apart once decoded. The transformer, the
text encoder and all of sora-tiny gave the same bits on 1 and 2 threads. torchrun sets OMP_NUM_THREADS=1 for its
workers when it was not set; `Ranks.from_env`, which runs before torch is imported, takes that 1 back out, so torch
starts on its default thread count as a single process does, and sets OMP_WAIT_POLICY=PASSIVE (unless set): the
ranks on one machine now have more threads than it has cores, and OpenMP threads that spin while they wait take
the cores from the other ranks (2 CPU ranks of 2 threads on 2 cores, 4 sora-tiny items: 131 s spinning, 17.4 s
passive, 17.5 s with torchrun's 1 thread each). `Ranks.device` puts a rank that computes on a GPU (or mps) back on
one CPU thread, as torchrun meant. An OMP_NUM_THREADS the user set, 1 included, is left alone, as are ranks that
another launcher started.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta

from .errors import OptionError

# A rank whose share failed fast waits at the end for the others' whole night of rendering, so the meeting at
# the end must outlast any batch.
_TIMEOUT = timedelta(days=30)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # torchrun's OMP_NUM_THREADS=1 was taken back out: torch runs on its default thread count until `device`.
    default_threads: bool = field(default=False, compare=False)

    @classmethod
    def from_env(cls) -> "Ranks":
        try:
            values = {k: int(os.environ.get(k, default)) for k, default in
                      (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))}
        except ValueError:
            raise OptionError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them)") from None
        ranks = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
        if not 0 <= ranks.rank < ranks.world:
            raise OptionError(f"RANK {ranks.rank} is outside WORLD_SIZE {ranks.world}")
        if ranks.world > 1 and _undo_torchrun_threads():
            ranks = dataclasses.replace(ranks, default_threads=True)
        return ranks

    def device(self, requested: str | None) -> str | None:
        """One GPU per rank on each machine: plain `cuda` (or no choice, with CUDA present) is cuda:LOCAL_RANK.
        A rank that computes on the CPU keeps a single process's thread count; on a GPU, one thread (torchrun's)."""
        import torch

        if requested in (None, "cuda") and torch.cuda.is_available():
            requested = f"cuda:{self.local_rank}"
        on_cpu = requested == "cpu" or requested is None and not torch.backends.mps.is_available()
        if self.default_threads and not on_cpu:
            torch.set_num_threads(1)
        return requested


def _undo_torchrun_threads() -> bool:
    """In a torchrun worker whose OMP_NUM_THREADS=1 torchrun set (it does when the environment it was started in
    had none), remove it and let OpenMP wait passively; whether it did. Too late, and so not done, once torch is
    imported: OpenMP reads its settings when torch loads it. Linux only: torchrun's own setting is told from the
    user's by the environment the torchrun process started with (/proc/PPID/environ), which its later changes to
    os.environ do not alter."""
    if os.environ.get("OMP_NUM_THREADS") != "1" or "TORCHELASTIC_RUN_ID" not in os.environ or "torch" in sys.modules:
        return False
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as f:
            launcher = f.read().split(b"\0")
    except OSError:
        return False
    if any(v.startswith(b"OMP_NUM_THREADS=") for v in launcher):
        return False  # the user's choice, passed on by torchrun
    del os.environ["OMP_NUM_THREADS"]
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


class Group:
    """The ranks of one batch; with a single process every exchange is local."""

    def __init__(self, ranks: Ranks):
        self.ranks = ranks

    def __enter__(self) -> "Group":
        if self.ranks.world > 1:
            import torch.distributed as dist

            dist.init_process_group("gloo", timeout=_TIMEOUT)
        return self

    def __exit__(self, *exc) -> None:
        if self.ranks.world > 1:
            import gc

            import torch.distributed as dist

            # Measured, not fully explained: without this collection a rank that had loaded a model aborted at
            # interpreter shutdown in about half of our 2-rank gloo runs (torch 2.13, "terminate called without
            # an active exception"); with it, in none. Objects in reference cycles are then freed while the
            # group still exists rather than during shutdown.
            gc.collect()
            dist.destroy_process_group()

    def broadcast(self, value: object) -> object:
        """Rank 0's `value`, on every rank."""
        if self.ranks.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def total(self, counts: list[int]) -> list[int]:
        """Every rank's counts added up, on every rank."""
        if self.ranks.world == 1:
            return list(counts)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(counts, dtype=torch.int64)
        dist.all_reduce(tensor)
        return tensor.tolist()
