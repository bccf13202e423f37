"""The layers inside a Wan transformer (see `transformer.py`): the 3D rotary position embedding, multi-head
attention with q and k RMS-normed across heads (and, for image-to-video, image keys and values of its own), the
float32 layer norm, the GELU feed-forward and the image embedder.

Parameter names are diffusers' (`attn1.to_q`, `attn1.to_out.0`, `ffn.net.0.proj`, ...), so checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..attention import sdpa


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
    """Multi-head attention with RMS norm on q and k across all heads (before the head split). With `image_dim`
    (image-to-video checkpoints) it also attends to image tokens through keys and values of their own, and adds
    the two results: text and image never compete in one softmax."""

    def __init__(self, dim: int, heads: int, eps: float, image_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # index 0 matches the checkpoint's "to_out.0"
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.kernel = sdpa  # models/attention.py: another kernel where one is chosen and can run
        if image_dim is not None:
            self.add_k_proj = nn.Linear(image_dim, dim)
            self.add_v_proj = nn.Linear(image_dim, dim)
            self.norm_added_k = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: Tensor, context: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None,
                image: Tensor | None = None) -> Tensor:
        kv_src = x if context is None else context
        q = self._heads(self.norm_q(self.to_q(x)))  # (B, H, L, Dh)
        k = self._heads(self.norm_k(self.to_k(kv_src)))  # (B, H, S, Dh)
        v = self._heads(self.to_v(kv_src))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # No mask on text: Wan was trained with zero-padded (unmasked) prompt embeddings.
        out = self.kernel(q, k, v)
        if image is not None:  # (B, S_img, image_dim)
            out = out + self.kernel(q, self._heads(self.norm_added_k(self.add_k_proj(image))),
                                    self._heads(self.add_v_proj(image)))
        return self.to_out[0](rearrange(out, "b h l d -> b l (h d)"))  # (B, L, D)

    def _heads(self, t: Tensor) -> Tensor:
        return rearrange(t, "b l (h d) -> b h l d", h=self.heads)


class GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, approximate: str = "tanh"):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate=self.approximate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None, approximate: str = "tanh"):
        super().__init__()
        # slot 1 is the checkpoint's (parameter-free) dropout; kept so keys read net.0 / net.2
        self.net = nn.ModuleList([GeluProj(dim, hidden, approximate), nn.Identity(), nn.Linear(hidden, out or dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class ImageEmbedder(nn.Module):
    """Image-encoder features (B, S, image_dim) -> image tokens (B, S, D) for the image cross-attention. A
    first-last-frame checkpoint gives both images' features as one sequence, with a learnt position table."""

    def __init__(self, image_dim: int, dim: int, positions: int | None = None):
        super().__init__()
        self.norm1 = LayerNorm32(image_dim)  # torch's default eps, unlike the blocks' norms: as the reference
        self.ff = FeedForward(image_dim, image_dim, dim, approximate="none")
        self.norm2 = LayerNorm32(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, image_dim)) if positions else None

    def forward(self, image: Tensor) -> Tensor:
        if self.pos_embed is not None:
            if image.shape[1] != self.pos_embed.shape[1]:
                raise ValueError(f"this checkpoint takes {self.pos_embed.shape[1]} image tokens (a first and a last "
                                 f"frame), got {image.shape[1]}")
            image = image + self.pos_embed
        h = self.ff(self.norm1(image).type_as(image))
        return self.norm2(h).type_as(h)
