"""Flow-matching samplers for Wan 2.1: noise schedules, Euler and UniPC (bh2).

Wan is trained on the straight path x(sigma) = (1 - sigma) * x0 + sigma * noise and predicts
the velocity v = noise - x0. Sampling walks sigma from ~1 (noise) down to 0 (data) over an
explicit schedule `sigmas` (num_steps + 1 values ending at 0); a solver moves x from
sigmas[i] to sigmas[i + 1] given the velocity at sigmas[i].

The schedules reproduce diffusers' UniPCMultistepScheduler (flow sigmas) and
FlowMatchEulerDiscreteScheduler value for value, quirks included, because the checkpoints
ship those scheduler configs and the transformer is conditioned on the exact timestep values.
Classifier-free guidance is the caller's business: it lives inside `velocity_fn`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .settings import SAMPLERS

PREDICTIONS = ("flow_prediction", "sample")
_CLASS_NAMES = {"unipc": "UniPCMultistepScheduler", "euler": "FlowMatchEulerDiscreteScheduler"}

# Settings of the diffusers schedulers that change the sampling result and that we only
# support at one value. Keys absent from a config take diffusers' default, which equals
# the value listed here except where _MISSING_MEANS says otherwise.
_UNIPC_REQUIRED: dict[str, Any] = {
    "use_flow_sigmas": True,
    "solver_order": 2,
    "solver_type": "bh2",
    "predict_x0": True,
    "lower_order_final": True,
    "final_sigmas_type": "zero",
    "thresholding": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": False,
    "shift_terminal": None,
    "disable_corrector": [],
    "solver_p": None,
}
_EULER_REQUIRED: dict[str, Any] = {
    "use_dynamic_shifting": False,
    "invert_sigmas": False,
    "shift_terminal": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "stochastic_sampling": False,
}
_MISSING_MEANS = {"UniPCMultistepScheduler": {"use_flow_sigmas": False}}


def _check_supported(d: dict, class_name: str, required: dict[str, Any]) -> None:
    missing_means = _MISSING_MEANS.get(class_name, {})
    for key, want in required.items():
        got = d.get(key, missing_means.get(key, want))
        # diffusers tests its off-switches by truthiness (None, False, [] and 0 all mean "off")
        if (got or None) != (want or None):
            raise ValueError(
                f"unsupported scheduler setting: {class_name} with {key}={got!r} "
                f"(sora implements only {key}={want!r})"
            )


@dataclass
class SamplerConfig:
    """Which sampler a checkpoint uses, as read from its scheduler/scheduler_config.json."""

    sampler: str  # "unipc" or "euler"
    shift: float  # time shift: > 1 spends more of the steps at high noise
    num_train_timesteps: int = 1000
    # What the network predicts: the velocity noise - x0 (Wan), or x0 itself ("sample", sora-tiny). Either way
    # the solvers are driven by a velocity; the pipeline converts an x0 prediction into one.
    prediction: str = "flow_prediction"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of {SAMPLERS}")
        if not self.shift > 0:
            raise ValueError(f"shift must be positive, got {self.shift}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {self.prediction!r} (sora implements {PREDICTIONS})")

    @classmethod
    def from_scheduler_config(cls, d: dict) -> SamplerConfig:
        class_name = d.get("_class_name")
        if class_name == _CLASS_NAMES["unipc"]:
            _check_supported(d, class_name, _UNIPC_REQUIRED)
            sampler, shift = "unipc", d.get("flow_shift", 1.0)
            prediction = d.get("prediction_type", "epsilon")
        elif class_name == _CLASS_NAMES["euler"]:
            _check_supported(d, class_name, _EULER_REQUIRED)
            sampler, shift, prediction = "euler", d.get("shift", 1.0), "flow_prediction"
        else:
            raise ValueError(
                f"unsupported scheduler class {class_name!r}; sora implements "
                f"{' and '.join(_CLASS_NAMES.values())}"
            )
        return cls(sampler, float(shift), int(d.get("num_train_timesteps", 1000)), prediction)

    def to_scheduler_config(self) -> dict:
        """scheduler_config.json content that diffusers loads into the equivalent scheduler."""
        d: dict[str, Any] = {
            "_class_name": _CLASS_NAMES[self.sampler],
            "num_train_timesteps": self.num_train_timesteps,
        }
        if self.sampler == "unipc":
            d.update(copy.deepcopy(_UNIPC_REQUIRED), flow_shift=self.shift, prediction_type=self.prediction)
        else:
            if self.prediction != "flow_prediction":
                raise ValueError("diffusers' FlowMatchEulerDiscreteScheduler only takes velocity predictions")
            d.update(copy.deepcopy(_EULER_REQUIRED), shift=self.shift)
        return d


# ---------------------------------------------------------------------------- schedules


def _linspace(start: float, stop: float, num: int) -> list[float]:
    # numpy.linspace's float64 arithmetic, so the schedules match the reference to the bit
    if num == 1:
        return [start]
    step = (stop - start) / (num - 1)
    return [i * step + start for i in range(num - 1)] + [stop]


def _shift(sigma: float, shift: float) -> float:
    # SD3's time shift: scales sigma / (1 - sigma) by `shift` (the SNR by 1 / shift**2), so
    # more of the steps are spent at high noise, which larger frames need
    return shift * sigma / (1 + (shift - 1) * sigma)


def _unipc_schedule(num_steps: int, shift: float, num_train: int) -> tuple[Tensor, Tensor]:
    grid = _linspace(1.0, 1.0 / num_train, num_steps + 1)[:-1]
    sigmas = [_shift(s, shift) for s in grid]
    # UniPC works in log-SNR, which is -inf at sigma = 1; the reference nudges it below 1
    if abs(sigmas[0] - 1) < 1e-6:
        sigmas[0] -= 1e-6
    # the reference truncates the float64 values to integers; the model sees those integers
    timesteps = torch.tensor([int(s * num_train) for s in sigmas], dtype=torch.int64)
    return torch.tensor(sigmas + [0.0], dtype=torch.float32), timesteps


def _euler_schedule(num_steps: int, shift: float, num_train: int) -> tuple[Tensor, Tensor]:
    # The reference first builds a float32 table of shifted training sigmas, spaces the steps
    # linearly between its ends, and then shifts them again: the low end is shifted twice.
    # That is what the checkpoints were tuned with, so it is reproduced rather than fixed.
    ends = torch.tensor([float(num_train), 1.0]) / num_train
    ends = shift * ends / (1 + (shift - 1) * ends)
    hi, lo = (e * num_train for e in ends.tolist())
    sigmas = [_shift(t / num_train, shift) for t in _linspace(hi, lo, num_steps)]
    sigmas32 = torch.tensor(sigmas, dtype=torch.float32)
    timesteps = sigmas32 * num_train  # float32, as the model receives them
    return torch.cat([sigmas32, torch.zeros(1)]), timesteps


def flow_sigmas(
    num_steps: int, shift: float, sampler: str, num_train_timesteps: int = 1000
) -> tuple[Tensor, Tensor]:
    """The noise schedule of `sampler`.

    Returns (sigmas, timesteps): sigmas is float32 (num_steps + 1,), descending, ending at 0;
    timesteps is (num_steps,), the values to condition the transformer on at each step:
    int64 for "unipc", float32 for "euler", exactly as the diffusers schedulers produce them.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if sampler == "unipc":
        return _unipc_schedule(num_steps, float(shift), num_train_timesteps)
    if sampler == "euler":
        return _euler_schedule(num_steps, float(shift), num_train_timesteps)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


def frame_noise(shape: tuple[int, ...], generator: torch.Generator, correlation: float = 0.0) -> Tensor:
    """Unit Gaussian noise (B, C, F, h, w) whose latent frames correlate by `correlation` (PYoCo's mixed noise
    prior, Ge et al. 2023): a pattern shared by every frame plus one of each frame's own. A model trained with
    it starts every frame of a sample from the same pattern, so what it draws in one frame it draws in the same
    place in the next. 0 is plain independent noise, drawn exactly as before."""
    if not 0 <= correlation < 1:
        raise ValueError(f"noise correlation must be in [0, 1), got {correlation}")
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if correlation == 0:
        return noise
    shared = torch.randn((*shape[:2], 1, *shape[3:]), generator=generator, dtype=torch.float32)
    return math.sqrt(1 - correlation) * noise + math.sqrt(correlation) * shared


def add_noise(x0: Tensor, noise: Tensor, sigma: float | Tensor) -> Tensor:
    """The flow-matching forward process: the point at noise level sigma between x0 and noise.

    sigma may be a number, a 0-d tensor, or one value per batch item (shape (batch,)).
    """
    if isinstance(sigma, Tensor) and sigma.ndim == 1:
        sigma = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    return (1 - sigma) * x0 + sigma * noise


# ---------------------------------------------------------------------------- solvers


class EulerSolver:
    """First-order step along the predicted velocity: x + (sigma[i+1] - sigma[i]) * v."""

    def __init__(self, sigmas: Tensor) -> None:
        self.sigmas = sigmas.detach().to("cpu", torch.float32)

    def step(self, velocity: Tensor, x: Tensor, i: int) -> Tensor:
        # dt as a float32 difference, like the reference, so the step is bit-identical to it
        dt = (self.sigmas[i + 1] - self.sigmas[i]).item()
        return (x.float() + dt * velocity.float()).to(x.dtype)


def _log_snr(sigma: float) -> float:
    # lambda = log(alpha / sigma) with alpha = 1 - sigma on the flow path; +inf for clean data
    return math.inf if sigma == 0 else math.log((1 - sigma) / sigma)


class UniPCSolver:
    """UniPC (Zhao et al. 2023) as Wan 2.1 samples with it: order 2, B(h) = e^h - 1 ("bh2").

    It integrates in log-SNR on the model's clean-data estimate x0 = x - sigma * v. Each step
    first refines the incoming x with the new x0 estimate (corrector, UniC), then extrapolates
    to the next sigma from the last two x0 estimates (predictor, UniP). The first step after a
    (re)start and the last step are first order, which keeps few-step sampling stable.
    Steps must be taken in order, i, i + 1, ...; build a new solver to start over.
    """

    def __init__(self, sigmas: Tensor) -> None:
        self.sigmas = [float(s) for s in sigmas]
        if not all(0 < s < 1 for s in self.sigmas[:-1]) or not 0 <= self.sigmas[-1] < 1:
            raise ValueError("UniPC needs sigmas in (0, 1), the last one in [0, 1)")
        self.lambdas = [_log_snr(s) for s in self.sigmas]
        self._last_i: int | None = None
        self._last_x: Tensor | None = None  # the x the last predictor started from
        self._last_order = 0
        self._x0s: list[Tensor] = []  # x0 estimates of the latest steps, newest last

    def step(self, velocity: Tensor, x: Tensor, i: int) -> Tensor:
        if self._last_i is not None and i != self._last_i + 1:
            raise ValueError(f"UniPC steps must be consecutive: got step {i} after {self._last_i}")
        num_steps = len(self.sigmas) - 1
        xf = x.float()
        x0 = xf - self.sigmas[i] * velocity.float()
        if self._last_i is not None:
            xf = self._correct(xf, x0, i)
        self._x0s = (self._x0s + [x0])[-2:]
        order = min(2, len(self._x0s), num_steps - i)
        x_next = self._predict(xf, i, order)
        self._last_i, self._last_x, self._last_order = i, xf, order
        return x_next.to(x.dtype)

    def _propagate(self, x: Tensor, s: int, t: int, x0: Tensor) -> Tensor:
        """x at sigmas[t] from x at sigmas[s], holding the clean estimate at x0 (the exact
        solution for a constant x0, i.e. a DDIM step). With bh2 the higher-order terms enter
        with the same weight e^-h - 1, so callers fold them into x0."""
        phi = math.expm1(self.lambdas[s] - self.lambdas[t])  # e^-h - 1, in (-1, 0]
        return (self.sigmas[t] / self.sigmas[s]) * x - ((1 - self.sigmas[t]) * phi) * x0

    def _predict(self, x: Tensor, i: int, order: int) -> Tensor:
        x0 = self._x0s[-1]
        if order == 1:
            return self._propagate(x, i, i + 1, x0)
        # finite difference of x0 in log-SNR against the previous step, weighted 1/2
        h = self.lambdas[i + 1] - self.lambdas[i]
        r = (self.lambdas[i - 1] - self.lambdas[i]) / h
        d1 = (self._x0s[-2] - x0) / r
        return self._propagate(x, i, i + 1, x0 + 0.5 * d1)

    def _correct(self, x: Tensor, x0_new: Tensor, i: int) -> Tensor:
        # Redo the previous step from the same start, now also using the x0 estimate at its
        # end point: the corrector is one order higher than the predictor it replaces.
        s = i - 1
        x0 = self._x0s[-1]
        d_new = x0_new - x0
        if self._last_order == 1:
            return self._propagate(self._last_x, s, i, x0 + 0.5 * d_new)
        h = self.lambdas[i] - self.lambdas[s]
        r = (self.lambdas[s - 1] - self.lambdas[s]) / h
        d1 = (self._x0s[-2] - x0) / r
        # weights rho solve [[1, 1], [r, 1]] rho = b, b from the phi-function expansion of bh2
        hh = -h
        phi = math.expm1(hh)
        g1 = phi / hh - 1
        g2 = g1 / hh - 0.5
        b1, b2 = g1 / phi, 2 * g2 / phi
        rho0 = (b1 - b2) / (1 - r)
        rho1 = b1 - rho0
        return self._propagate(self._last_x, s, i, x0 + rho0 * d1 + rho1 * d_new)


def make_solver(sampler: str, sigmas: Tensor) -> EulerSolver | UniPCSolver:
    if sampler == "unipc":
        return UniPCSolver(sigmas)
    if sampler == "euler":
        return EulerSolver(sigmas)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


# ---------------------------------------------------------------------------- the loop


def sample(
    velocity_fn: Callable[[Tensor, Tensor, int], Tensor],
    x: Tensor,
    sigmas: Tensor,
    timesteps: Tensor,
    sampler: str,
    *,
    start: int = 0,
    before_step: Callable[[Tensor, int], Tensor] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Denoise x from sigmas[start] to 0.

    velocity_fn(x, timesteps[i], i) returns the (guided) velocity at step i. `start` > 0
    resumes part-way down the schedule (SDEdit): x must already sit at sigmas[start], e.g.
    add_noise(x0, noise, sigmas[start]). before_step(x, i), if given, may rewrite x (at
    sigmas[i]) before step i, for latent replacement. on_step(done, total) reports progress.
    """
    num_steps = len(timesteps)
    if len(sigmas) != num_steps + 1:
        raise ValueError(f"expected {num_steps + 1} sigmas for {num_steps} timesteps, got {len(sigmas)}")
    if not 0 <= start <= num_steps:
        raise ValueError(f"start must be in [0, {num_steps}], got {start}")
    solver = make_solver(sampler, sigmas)
    for i in range(start, num_steps):
        if before_step is not None:
            x = before_step(x, i)
        x = solver.step(velocity_fn(x, timesteps[i], i), x, i)
        if on_step is not None:
            on_step(i + 1, num_steps)
    return x
