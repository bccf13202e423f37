"""Running under torchrun: which rank this process is, its GPU, and the two messages the ranks exchange.

torchrun (and its multi-machine rendezvous) sets RANK, WORLD_SIZE and LOCAL_RANK and the address of rank 0.
The ranks meet twice: at the start, when rank 0 hands out the plan, and at the end, when they add up their
counts. A single process (no torchrun, or WORLD_SIZE=1) never creates a process group.

The group always uses gloo, on the CPU, also when the models run on GPUs: it carries a list of item numbers and
two counts, and gloo carries those on any machine without touching GPU memory, so the path tested here on CPU
(two gloo ranks) is the one that runs on a cluster. NCCL would add nothing for a few bytes but a watchdog.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
        return ranks

    def device(self, requested: str | None) -> str | None:
        """One GPU per rank on each machine: plain `cuda` (or no choice, with CUDA present) is cuda:LOCAL_RANK."""
        import torch

        if requested in (None, "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested


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
