"""Step caching: skip the transformer's blocks on steps where their work would barely change, and add again what
they added the last time they ran (their residual).

Three ways to decide, one interface: the transformer hands its token states and a way to run its blocks to the
cache (`__call__`), which runs them or not. The decision is taken per guidance branch (the prompts' half of the
batch and the negative prompts' half), each with its own memory, as the methods' own code keeps one per branch;
a batch runs its blocks when any branch asks for them, and then every branch starts counting again. So a clip's
skipped steps may depend on the clips batched with it: `sora batch` never groups cached items. Threshold 0 never
skips a step.

- first-block (ParaAttention's FirstBlockCache, as diffusers ships it): every step runs the first block; when
  what it adds differs from the last fully computed step's by less than the threshold (relative to its mean
  size), the other blocks are skipped.
- magcache (MagCache, Ma et al. 2025): the ratio of consecutive residuals' magnitudes is nearly the same for every
  prompt, so a model's calibrated ratios predict the error of reusing a residual. Steps are skipped while the
  accumulated error stays under the threshold, at most `max_skips` in a row, never in the first `retention`
  share of the steps.
- teacache (TeaCache, Liu et al. 2025, its retention mode for Wan): the relative change of the timestep
  modulation, rescaled by a model's calibrated polynomial, estimates how much the output changes; steps are
  skipped while the accumulated estimate stays under the threshold, never in the first 5 steps.

MagCache and TeaCache need a calibration of the model: `calibration.json` holds the published ones by hub id, and
a model folder may carry its own under `_sora.caches` (same layout). `calibrate` measures MagCache's for any
model: it skips nothing and reports the ratios of one render, ready for `_sora.caches`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .errors import OptionError

FIRST_BLOCK_THRESHOLD = 0.05  # diffusers' default for FirstBlockCache
MAGCACHE_THRESHOLD = 0.12  # MagCache's default for Wan 2.1, with at most 2 skips in a row and 20% kept
CALIBRATION = json.loads((Path(__file__).with_name("calibration.json")).read_text())

Blocks = Callable[..., Tensor]  # run(h, first=0, last=None): h through blocks[first:last]


@dataclass
class StepCache:
    threshold: float
    skipped: int = 0  # calls that reused the cached residual
    step: int = 0  # the sampler's step index, set by `at` before each call
    branches: int = 1

    def at(self, step: int, branches: int) -> "StepCache":
        """This call's step index, and how many guidance branches its batch holds (contiguous halves)."""
        self.step, self.branches = step, branches
        return self

    def __call__(self, h: Tensor, run: Blocks, modulation: Tensor) -> Tensor:
        """h (B, L, D) after the blocks, or as the cache predicts it. modulation: the step's timestep modulation."""
        raise NotImplementedError


@dataclass
class FirstBlockCache(StepCache):
    head: list[Tensor] = field(default_factory=list)  # per branch: the first block's residual
    tail: Tensor | None = None  # what the other blocks added, the last time they ran

    def __call__(self, h: Tensor, run: Blocks, modulation: Tensor) -> Tensor:
        head = run(h, 0, 1)
        residual = head - h  # what the first block added
        if self._similar(residual):
            self.skipped += 1
            return head + self.tail
        out = run(head, 1)
        self.head, self.tail = list(residual.chunk(self.branches)), out - head
        return out

    def _similar(self, residual: Tensor) -> bool:
        if len(self.head) != self.branches or self.tail is None or self.tail.shape != residual.shape:
            return False  # nothing stored for a batch of this shape
        return all(float((part - prev).abs().mean() / prev.abs().mean()) <= self.threshold
                   for part, prev in zip(residual.chunk(self.branches), self.head))


@dataclass
class _Drift:
    """One branch's error estimate since its blocks last ran."""

    ratio: float = 1.0
    error: float = 0.0
    skips: int = 0


@dataclass
class _ResidualCache(StepCache):
    """Skip all the blocks, adding their last residual, while every branch's estimated error allows it."""

    residual: Tensor | None = None
    drift: list[_Drift] = field(default_factory=list)

    def __call__(self, h: Tensor, run: Blocks, modulation: Tensor) -> Tensor:
        ready = self.residual is not None and self.residual.shape == h.shape and len(self.drift) == self.branches
        # every branch's estimate moves on (a list, not a generator: all of them), and all must allow the skip
        if ready and all([self._may_skip(b, d, modulation) for b, d in enumerate(self.drift)]):
            self.skipped += 1
            return h + self.residual
        self.drift = [_Drift() for _ in range(self.branches)]  # every branch computes now: counting starts again
        out = run(h)
        self.residual = out - h
        return out

    def _may_skip(self, branch: int, drift: _Drift, modulation: Tensor) -> bool:
        raise NotImplementedError


@dataclass
class MagCache(_ResidualCache):
    ratios: list[list[float]] = field(default_factory=list)  # per branch (cond, uncond): one a step
    max_skips: int = 2
    retention: float = 0.2

    def _may_skip(self, branch: int, drift: _Drift, modulation: Tensor) -> bool:
        steps = len(self.ratios[0])
        if self.step < int(self.retention * steps + 0.5):
            return False
        drift.ratio *= self.ratios[branch % len(self.ratios)][self.step]
        drift.skips += 1
        drift.error += abs(1.0 - drift.ratio)
        return drift.error < self.threshold and drift.skips <= self.max_skips


@dataclass
class TeaCache(_ResidualCache):
    coefficients: list[float] = field(default_factory=list)  # highest power first
    retention_steps: int = 5
    previous: Tensor | None = None  # the modulation of the previous call
    change: float | None = None  # the relative change from it to this call's

    def __call__(self, h: Tensor, run: Blocks, modulation: Tensor) -> Tensor:
        now = modulation[-1].float()  # the noisiest timestep's: rows ascend, and clean tokens sit at 0
        self.change = None if self.previous is None or self.previous.shape != now.shape else \
            float((now - self.previous).abs().mean() / self.previous.abs().mean())
        self.previous = now
        return super().__call__(h, run, modulation)

    def _may_skip(self, branch: int, drift: _Drift, modulation: Tensor) -> bool:
        if self.step < self.retention_steps or self.change is None:
            return False
        drift.error += sum(c * self.change ** p for p, c in enumerate(reversed(self.coefficients)))
        return drift.error < self.threshold


@dataclass
class Calibration(StepCache):
    """Skips nothing, and measures MagCache's ratios on the way: each step's mean over tokens of the blocks'
    residual magnitude over the previous step's, per guidance branch (1 on the first step)."""

    previous: Tensor | None = None
    ratios: dict[int, list[float]] = field(default_factory=dict)  # step -> one ratio per branch

    def __call__(self, h: Tensor, run: Blocks, modulation: Tensor) -> Tensor:
        out = run(h)
        norm = (out - h).float().norm(dim=-1)  # (B, L)
        same = self.previous is not None and self.previous.shape == norm.shape
        ratio = (norm / self.previous.clamp(min=1e-8)).mean(dim=-1) if same else torch.ones(norm.shape[0])
        self.ratios[self.step] = [round(float(r.mean()), 5) for r in ratio.chunk(self.branches)]
        self.previous = norm
        return out


def calibrated(caches: list[StepCache], steps: int) -> dict | None:
    """The MagCache calibration the `Calibration` caches of one render measured (two experts: each its own steps),
    in the layout `_sora.caches` takes; None if none measured."""
    measured = {step: r for c in caches if isinstance(c, Calibration) for step, r in c.ratios.items()}
    if not measured:
        return None
    branches = max(len(r) for r in measured.values())
    rows = [measured.get(step, [1.0]) for step in range(steps)]
    ratios = [[row[min(b, len(row) - 1)] for row in rows] for b in range(branches)]
    return {"magcache": {"ratios": ratios, "threshold": MAGCACHE_THRESHOLD, "max_skips": 2, "retention": 0.2}}


def nearest(values: list[float], length: int) -> list[float]:
    """`values` stretched or shrunk to `length` by nearest neighbour, first and last kept."""
    if length == 1:
        return values[-1:]
    scale = (len(values) - 1) / (length - 1)
    return [values[round(i * scale)] for i in range(length)]


def calibration(source: str | None, own: dict | None = None) -> dict:
    """{method: its calibration} for a model: the published one for its hub id, then its folder's own (checked:
    ValueError names what is not usable)."""
    own = own or {}
    if not isinstance(own, dict) or set(own) - {"magcache", "teacache"}:
        raise ValueError("_sora.caches must be an object with magcache and/or teacache entries")
    for method, entry in own.items():
        lists = {"magcache": "ratios", "teacache": "coefficients"}[method]
        values = entry.get(lists) if isinstance(entry, dict) else None
        rows = values if values and isinstance(values[0], list) else [values]
        if not (isinstance(entry, dict) and _number(entry.get("threshold")) and values
                and all(isinstance(r, list) and r and all(map(_number, r)) for r in rows)):
            raise ValueError(f"_sora.caches.{method} needs a threshold and a non-empty list of numbers as {lists}")
    return CALIBRATION.get(source or "", {}) | own


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def threshold(method: str, given: float | None, calibrated: dict) -> float:
    """The threshold a method runs at: the given one, else first-block's fixed one or the calibration's.
    OptionError if the method needs a calibration the model lacks."""
    if method == "calibrate":
        return 0.0
    if method != "first-block" and method not in calibrated:
        known = ", ".join(sorted(k for k, v in CALIBRATION.items() if method in v and not k.startswith("_")))
        raise OptionError(f"--cache {method} needs the model's calibration, and this model has none (published "
                          f"for {known}; a folder may add its own under _sora.caches); --cache first-block needs "
                          "none")
    if given is not None:
        return given
    return FIRST_BLOCK_THRESHOLD if method == "first-block" else float(calibrated[method]["threshold"])


def make(method: str, threshold: float, steps: int, calibrated: dict) -> StepCache:
    """A fresh cache for one render of `steps` steps."""
    if method == "first-block":
        return FirstBlockCache(threshold)
    if method == "calibrate":
        return Calibration(0.0)
    own = calibrated[method]
    if method == "magcache":
        ratios = own["ratios"]
        per_branch = ratios if isinstance(ratios[0], list) else [ratios]
        return MagCache(threshold, ratios=[nearest(r, steps) for r in per_branch],
                        max_skips=int(own.get("max_skips", 2)), retention=float(own.get("retention", 0.2)))
    return TeaCache(threshold, coefficients=list(own["coefficients"]))

