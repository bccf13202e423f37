"""Building blocks of the Wan video VAEs (see `vae.py`): the causal 3D convolution, the norm, residual and
attention blocks, the spatial/temporal down- and upsampling, and the parameter-free shortcuts around Wan 2.2's
resampling blocks. Shapes are (B, C, T, H, W) throughout.

Every layer that looks back in time is `Streamable`: inside `streaming(module)` it carries the end of the previous
chunk into the next call, so a clip processed chunk by chunk gives the same result as one pass over all of it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class Streamable:
    """A layer whose output depends on frames of earlier chunks; see `streaming`."""

    def reset_stream(self, streaming: bool) -> None:
        raise NotImplementedError


@contextmanager
def streaming(module: nn.Module) -> Iterator[None]:
    """Inside this block, consecutive calls of `module` are consecutive chunks of one clip."""
    layers = [m for m in module.modules() if isinstance(m, Streamable)]
    for layer in layers:
        layer.reset_stream(True)
    try:
        yield
    finally:
        for layer in layers:
            layer.reset_stream(False)  # also drops the carried frames


class CausalConv3d(Streamable, nn.Conv3d):
    """Conv3d that looks only backwards in time: the 2*p_t frames of padding all go before the clip.

    Streaming, those frames are the last inputs of the previous chunk (zeros before the first one),
    which makes chunked processing identical to one pass over the whole clip.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int | tuple[int, int, int],
                 padding: int | tuple[int, int, int] = 0) -> None:
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_dim, out_dim, kernel_size, padding=(0, ph, pw))
        self.history = 2 * pt
        self.reset_stream(False)

    def reset_stream(self, streaming: bool) -> None:
        self.streaming, self.past = streaming, None

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, C', T, H, W)
        if self.history:
            if self.past is not None:
                x = torch.cat([self.past, x], dim=2)
            else:
                x = F.pad(x, (0, 0, 0, 0, self.history, 0))
            if self.streaming:
                self.past = x[:, :, -self.history:].clone()  # clone: don't keep the whole chunk alive
        if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
                and torch.backends.mkldnn.is_available()):
            # PyTorch's CPU heuristic sends small batch-1 3D convolutions to an im2col kernel 3-15x slower than
            # oneDNN at the sizes a VAE streams (most of a sora-tiny decode); the convolution is the same.
            return torch.mkldnn_convolution(x.contiguous(), self.weight, self.bias, self.padding, self.stride,
                                            self.dilation, self.groups)
        return super().forward(x)


class RMSNorm(nn.Module):
    """Scales each position's channel vector to norm sqrt(C), then by a learned per-channel gain."""

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * spatial_dims))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, ...)
        # The sum of squares over- or underflows in half precision.
        x_unit = F.normalize(x.float(), dim=1).to(x.dtype)
        return x_unit * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(in_dim, 3)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim, 3)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T, H, W) -> (B, C_out, T, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.conv_shortcut(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame separately (so still causal)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W)
        b, _, _, h, w = x.shape
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        qkv = self.to_qkv(self.norm(frames))  # (B*T, 3C, H, W)
        q, k, v = rearrange(qkv, "n (three c) h w -> three n 1 (h w) c", three=3)
        out = F.scaled_dot_product_attention(q, k, v)  # (B*T, 1, H*W, C)
        out = self.proj(rearrange(out, "n 1 (h w) c -> n c h w", h=h, w=w))
        return x + rearrange(out, "(b t) c h w -> b c t h w", b=b)


class Downsample(Streamable, nn.Module):
    """Halves H and W with a strided conv; with `temporal`, also merges frames 2 by 2.

    In time, frame 0 passes through untouched and each later pair of frames is merged with the frame
    before it (kernel 3, stride 2): 1 + 2m frames -> 1 + m. Streaming, that frame before the pair is
    carried over from the previous chunk.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        # Pad right/bottom only, so output pixel (i, j) covers input pixels 2i..2i+2.
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None
        self.reset_stream(False)

    def reset_stream(self, streaming: bool) -> None:
        self.streaming, self.last = streaming, None

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, C, T', H/2, W/2)
        b = x.shape[0]
        x = self.resample(rearrange(x, "b c t h w -> (b t) c h w"))
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b)
        if self.time_conv is None:
            return x
        if self.last is None:  # the clip starts here
            out, before = [x[:, :, :1]], x[:, :, :1]
            x = x[:, :, 1:]
        else:
            out, before = [], self.last
        if x.shape[2] % 2:
            raise ValueError("temporal downsampling needs 1 + 2m frames in the first chunk, 2m after")
        if x.shape[2]:
            out.append(self.time_conv(torch.cat([before, x], dim=2)))
        if self.streaming:
            self.last = (x if x.shape[2] else before)[:, :, -1:].clone()
        return torch.cat(out, dim=2)


class Upsample(Streamable, nn.Module):
    """Doubles H and W (nearest, then a conv to `out_dim` channels, half by default); with `temporal`, also
    doubles frames.

    In time, frame 0 passes through and every later frame becomes two, both predicted by one causal
    conv from the frames up to it (frame 0 excluded): 1 + m frames -> 1 + 2m.
    """

    def __init__(self, dim: int, temporal: bool, out_dim: int | None = None) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest-exact"),
                                      nn.Conv2d(dim, out_dim or dim // 2, 3, padding=1))
        self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0)) if temporal else None
        self.reset_stream(False)

    def reset_stream(self, streaming: bool) -> None:
        self.streaming, self.started = streaming, False

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, C', T', 2H, 2W)
        b = x.shape[0]
        if self.time_conv is not None:
            out = []
            if not self.started:  # the clip starts here
                out.append(x[:, :, :1])
                x = x[:, :, 1:]
                self.started = self.streaming
            if x.shape[2]:
                pairs = self.time_conv(x)  # (B, 2C, T, H, W): the two output frames of each input frame
                out.append(rearrange(pairs, "b (two c) t h w -> b c (t two) h w", two=2))
            x = torch.cat(out, dim=2)
        x = self.resample(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)


class MeanDown(nn.Module):
    """The parameter-free shortcut around a Wan 2.2 down block: each (t, 2, 2) cell of `in_dim` channels is
    folded into channels, and consecutive groups of those are averaged down to `out_dim`. A chunk whose frame
    count does not divide by the time factor (the clip's first frame) is padded with zero frames in front."""

    def __init__(self, in_dim: int, out_dim: int, time: int, space: int) -> None:
        super().__init__()
        if in_dim * time * space * space % out_dim:
            raise ValueError(f"{in_dim} channels x {time * space * space} cannot be averaged to {out_dim}")
        self.out_dim, self.time, self.space = out_dim, time, space

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, out_dim, ceil(T/t), H/s, W/s)
        x = F.pad(x, (0, 0, 0, 0, -x.shape[2] % self.time, 0))
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=self.time, fh=self.space,
                      fw=self.space)
        return x.unflatten(1, (self.out_dim, -1)).mean(dim=2)


class CopyUp(Streamable, nn.Module):
    """The parameter-free shortcut around a Wan 2.2 up block, MeanDown's mirror: each channel is repeated, and
    the copies unfolded into a (t, 2, 2) cell of `out_dim` channels. The clip's first frame stays one frame, as
    in the block it bypasses: the copies before it are dropped."""

    def __init__(self, in_dim: int, out_dim: int, time: int, space: int) -> None:
        super().__init__()
        if out_dim * time * space * space % in_dim:
            raise ValueError(f"{in_dim} channels cannot be copied out to {out_dim} x {time * space * space}")
        self.repeats, self.time, self.space = out_dim * time * space * space // in_dim, time, space
        self.reset_stream(False)

    def reset_stream(self, streaming: bool) -> None:
        self.streaming, self.started = streaming, False

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, out_dim, T*t (- t+1 at the start), 2H, 2W)
        x = rearrange(x.repeat_interleave(self.repeats, dim=1), "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)",
                      ft=self.time, fh=self.space, fw=self.space)
        if not self.started:  # the clip starts here
            x = x[:, :, self.time - 1:]
            self.started = self.streaming
        return x
