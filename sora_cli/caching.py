"""Step caching: skip most of the transformer on steps where its work would barely change.

First-block cache (ParaAttention's FirstBlockCache, as diffusers ships it): every step runs the first block. When
what that block adds (its residual) differs from the last fully computed step's by less than `threshold`, relative
to that residual's mean size, the other blocks are skipped and what they added last time is added again. The
decision is taken per guidance branch (the prompts' half of the batch and the negative prompts' half), each with
its own memory, as diffusers keeps one per branch; a batch runs its blocks when any branch asks for them. So a
clip's skipped steps depend on the clips batched with it: `sora batch` never groups cached items.
Threshold 0 never skips a step whose first block changed at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

FIRST_BLOCK_THRESHOLD = 0.05  # diffusers' default for FirstBlockCache


@dataclass
class FirstBlockCache:
    threshold: float
    skipped: int = 0  # steps that reused the cached residual
    head: list[Tensor] = field(default_factory=list)  # per branch: the first block's residual
    tail: Tensor | None = None  # what the other blocks added, the last time they ran

    def skip(self, head_residual: Tensor, branches: int) -> bool:
        """Whether this call may skip the blocks after the first; `head_residual` (B, L, D) holds `branches`
        contiguous branches."""
        if len(self.head) != branches or self.tail is None or self.tail.shape != head_residual.shape:
            return False  # nothing stored for a batch of this shape
        skip = all(float((part - prev).abs().mean() / prev.abs().mean()) <= self.threshold
                   for part, prev in zip(head_residual.chunk(branches), self.head))
        self.skipped += skip
        return skip

    def store(self, head_residual: Tensor, tail_residual: Tensor, branches: int) -> None:
        self.head, self.tail = list(head_residual.chunk(branches)), tail_residual
