"""Attention kernels: PyTorch's scaled-dot-product attention everywhere, and on CUDA GPUs FlashAttention (3 where
its `flash_attn_interface` is installed, else 2) or SageAttention (`sageattention`) when installed.

Every kernel takes q, k, v as (B, H, L, Dh) and returns (B, H, L, Dh); `choose` picks one by name, refusing with
one line a kernel that is missing or cannot run here.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OptionError

KERNELS = ("auto", "sdpa", "flash", "sage")
Kernel = Callable[[Tensor, Tensor, Tensor], Tensor]


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # bf16 training on a CPU: its bf16 attention backward is several times slower than float32's
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).type_as(v)
    return F.scaled_dot_product_attention(q, k, v).type_as(v)


def flash(function: Callable) -> Kernel:
    """A FlashAttention function (its layout is (B, L, H, Dh); version 3 also returns the softmax's log-sum-exp)."""
    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = function(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
    return attend


def sage(function: Callable) -> Kernel:
    return lambda q, k, v: function(q, k, v, tensor_layout="HND", is_causal=False)


def _installed() -> dict[str, Kernel]:
    """The GPU kernels whose packages import here, best first."""
    found = {}
    for name, module, attribute, wrap in (("flash3", "flash_attn_interface", "flash_attn_func", flash),
                                          ("flash", "flash_attn", "flash_attn_func", flash),
                                          ("sage", "sageattention", "sageattn", sage)):
        try:
            found[name] = wrap(getattr(importlib.import_module(module), attribute))
        except (ImportError, AttributeError, OSError):  # absent, or built for another torch
            continue
    return found


def choose(name: str, device: torch.device, dtype: torch.dtype) -> tuple[str, Kernel]:
    """(what runs, its kernel) for `--attention name` on this device and dtype."""
    if name == "sdpa":
        return "sdpa", sdpa
    gpu = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
    installed = _installed() if device.type == "cuda" else {}
    if name == "auto":
        hopper = gpu and torch.cuda.get_device_capability(device)[0] >= 9
        for candidate in (("flash3",) if hopper else ()) + ("sage",):
            if gpu and candidate in installed:
                return candidate, installed[candidate]
        return "sdpa", sdpa
    if not gpu:
        raise OptionError(f"--attention {name} runs on a CUDA GPU in bfloat16 or float16; here it is "
                          f"{device.type} in {str(dtype).removeprefix('torch.')} (use sdpa or auto)")
    for candidate in (("flash3", "flash") if name == "flash" else ("sage",)):
        if candidate in installed:
            return candidate, installed[candidate]
    package = "flash-attn (or FlashAttention 3's flash_attn_interface)" if name == "flash" else "sageattention"
    raise OptionError(f"--attention {name}: {package} is not installed here; install it or use sdpa or auto")


def use(model: torch.nn.Module, kernel: Kernel) -> None:
    """Every attention layer of `model` computes with `kernel` from now on."""
    for module in model.modules():
        if hasattr(module, "kernel"):
            module.kernel = kernel
