"""The layers inside a Wan transformer block (see `transformer.py`): the 3D rotary position embedding, multi-head
attention with q and k RMS-normed across heads, the float32 layer norm and the GELU-tanh feed-forward.

Parameter names are diffusers' (`attn1.to_q`, `attn1.to_out.0`, `ffn.net.0.proj`, ...), so checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def rope_angles(head_dim: int, grid: tuple[int, int, int], device: torch.device) -> Tensor:
    """Rotation angles (L, head_dim/2) for tokens on a (f, h, w) grid, L = f*h*w.

    The head dim is split into a time part and equal height/width parts (each a multiple of
    2, time takes the remainder); each part rotates by its own axis position.
    """
    hw_dim = 2 * (head_dim // 6)
    parts = (head_dim - 2 * hw_dim, hw_dim, hw_dim)
    # float64 keeps large positions accurate; MPS has no float64
    dtype = torch.float32 if device.type == "mps" else torch.float64
    per_axis = []
    for n, part in zip(grid, parts):
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, part, 2, dtype=dtype, device=device) / part))
        per_axis.append(torch.outer(torch.arange(n, dtype=dtype, device=device), inv_freq))  # (n, part/2)
    f, h, w = grid
    ang_f = per_axis[0][:, None, None, :].expand(f, h, w, -1)
    ang_h = per_axis[1][None, :, None, :].expand(f, h, w, -1)
    ang_w = per_axis[2][None, None, :, :].expand(f, h, w, -1)
    return torch.cat([ang_f, ang_h, ang_w], dim=-1).reshape(f * h * w, head_dim // 2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent channel pairs (x[2i], x[2i+1]) of x (B, H, L, Dh) by the angles in cos/sin (L, Dh/2)."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, L, Dh/2) each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input/weight dtype; returns float32."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class Attention(nn.Module):
    """Multi-head attention with RMS norm on q and k across all heads (before the head split)."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # index 0 matches the checkpoint's "to_out.0"
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: Tensor, context: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        kv_src = x if context is None else context
        split = lambda t: rearrange(t, "b l (h d) -> b h l d", h=self.heads)
        q = split(self.norm_q(self.to_q(x)))  # (B, H, L, Dh)
        k = split(self.norm_k(self.to_k(kv_src)))  # (B, H, S, Dh)
        v = split(self.to_v(kv_src))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # No mask on text: Wan was trained with zero-padded (unmasked) prompt embeddings.
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # bf16 training on a CPU: its bf16 attention backward is several times slower than float32's
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.type_as(v)
        return self.to_out[0](rearrange(out, "b h l d -> b l (h d)"))  # (B, L, D)


class GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        # slot 1 is the checkpoint's (parameter-free) dropout; kept so keys read net.0 / net.2
        self.net = nn.ModuleList([GeluProj(dim, hidden), nn.Identity(), nn.Linear(hidden, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x
