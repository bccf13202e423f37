"""Wan 2.2 A14B's two experts.

A two-expert checkpoint names a `transformer_2` component and a `boundary_ratio` in model_index.json. Its
`transformer` is the high-noise expert: it denoises every step whose timestep is at or above
boundary_ratio * num_train_timesteps (the scheduler's); `transformer_2`, the low-noise expert, denoises the
rest. Each has its own guidance scale (`guidance_scale_2` is the low-noise expert's); an expert whose scale is
at most 1 runs unguided, on the prompt alone. (diffusers guides both experts or neither, by the first scale
alone, so it renders otherwise where the first scale is above 1 and the second below 1, or the first at most 1
and the second above.) The two share one shape, so the latents, the text context and the token grid are the
same whichever runs; only the weights differ.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .errors import OptionError
from .loading import is_named
from .models.wan.transformer import TransformerConfig

# What the two experts must agree on for either to take the other's latents and text context.
SHARED_SHAPE = ("in_channels", "out_channels", "patch_size", "text_dim")


def boundary_ratio(index: dict) -> float | None:
    """The checked boundary_ratio of a two-expert model; None for a model with one transformer. A ratio without
    a second expert, or a second expert without a ratio, is a ValueError: either alone cannot be rendered."""
    ratio, second = index.get("boundary_ratio"), is_named(index.get("transformer_2"))
    if ratio is None and not second:
        own = index.get("_sora")
        if isinstance(own, dict) and own.get("guidance_scale_2") is not None:
            raise ValueError("_sora.guidance_scale_2 is set, but the model has one transformer")
        return None
    if ratio is None:
        raise ValueError("model_index.json names a transformer_2 but no boundary_ratio, so when the second "
                         "expert runs is unknown")
    if not second:
        raise ValueError("model_index.json sets boundary_ratio but names no transformer_2 (the low-noise expert)")
    number = isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and math.isfinite(ratio)
    if not (number and 0 < ratio < 1):
        raise ValueError(f"boundary_ratio must be a number above 0 and below 1, got {str(ratio)[:60]}")
    return float(ratio)


def low_noise_config(raw: dict, high: TransformerConfig) -> TransformerConfig:
    """transformer_2's config, checked to be buildable and of the high-noise expert's shape."""
    try:
        low = type(high).from_dict(raw)  # the high-noise expert's family
    except ValueError as e:
        raise ValueError(f"transformer_2: {e}") from None
    for key in SHARED_SHAPE:
        if getattr(low, key) != getattr(high, key):
            raise ValueError(f"transformer_2 has {key} {_show(getattr(low, key))} but transformer has "
                             f"{_show(getattr(high, key))}; the two experts must match")
    return low


def _show(value: object) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def guidance_2(value: float | None, two_experts: bool, default: float | None, guidance: float) -> float | None:
    """The low-noise expert's guidance scale: the one given, else the model's default, else the guidance scale;
    None for a model with one transformer, for which giving one is an OptionError. Its range is checked with the
    other sampling settings (settings.check_keywords)."""
    if not two_experts:
        if value is not None:
            raise OptionError("a second guidance scale is only for a model with two experts (Wan 2.2 A14B)")
        return None
    return value if value is not None else guidance if default is None else default


def expert_index(t: Tensor, boundary: float | None) -> int:
    """0 (transformer, high noise) for a timestep at or above the boundary, else 1 (transformer_2). Compared as
    a tensor, as diffusers compares it: a float32 timestep (Euler) meets the boundary in float32."""
    return 0 if boundary is None or bool(t >= boundary) else 1


class ExpertSwitch:
    """Picks the expert and guidance scale of each step, by its timestep. With offload only the expert in use
    sits on the accelerator: switching moves the other back to the CPU first, so two experts never share it.
    Used as a context manager, which sends the last expert in use back to the CPU at the end."""

    def __init__(self, experts: Sequence[nn.Module], scales: Sequence[float], boundary: float | None,
                 device: torch.device | str, offload: bool):
        self.experts, self.scales, self.boundary = list(experts), list(scales), boundary
        self.device, self.offload = device, offload
        self.current: int | None = None  # the expert on the accelerator, with offload

    def pick(self, t: Tensor) -> tuple[nn.Module, float]:
        k = expert_index(t, self.boundary)
        if self.offload and k != self.current:
            # Sampling runs in inference mode; moved there, the weights would become inference tensors.
            with torch.inference_mode(False):
                self.release()
                self.experts[k].to(self.device)
            self.current = k
        return self.experts[k], self.scales[k]

    def release(self) -> None:
        if self.current is not None:
            self.experts[self.current].to("cpu")
        self.current = None

    def __enter__(self) -> "ExpertSwitch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
