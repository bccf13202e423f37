"""Spatial tiling for the Wan VAEs (see `vae.py`): a frame too large to code in one piece is coded as a grid of
overlapping tiles whose seams are cross-faded, so the memory a convolution or the mid-block attention needs is
bounded by one tile instead of growing with the frame.

The geometry and the cross-fade are Diffusers' (`AutoencoderKLWan.enable_tiling`), so that a checkpoint gives the
same pictures here and there for the same tile size and stride:

- tiles start every `stride` along each side and are `tile` long (shorter at the far edge); each tile is faded
  into the one above it and the one to its left over `tile - stride`, in raster order with the neighbours already
  faded, and keeps its first `stride` rows and columns;
- decoding cuts the latents into tiles of tile / s latent pixels (s the VAE's spatial stride) and fades in the
  decoder's output space, which for Wan 2.2 is the grid of 2x2 pixel patches before they are unfolded;
- encoding cuts the clip after Wan 2.2's patches are folded into channels, and measures `tile` and `stride` on
  that folded grid, so a Wan 2.2 encode tile covers patch x patch times the pixels of a decode tile (Diffusers'
  arithmetic, kept for parity);
- a frame is tiled only when a side exceeds one tile (for encoding, the clip's side in pixels); otherwise it is
  coded whole, exactly as without tiling.

Decoding keeps sora's streaming: each call takes the next latent frames and returns their video frames. All tiles
advance together one latent frame at a time, each with its own copy of the frames that the causal layers carry
from one latent frame to the next (`Streamable`), so a tile decodes exactly as if it were a whole clip of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .vae_blocks import Streamable


@dataclass(frozen=True)
class Tiling:
    """Square tiles of `tile` pixels, one every `stride` pixels: neighbours overlap by tile - stride, cross-faded.
    Both must be multiples of the VAE's spatial stride (8 for Wan 2.1, 16 for Wan 2.2)."""

    tile: int = 256
    stride: int = 192

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.tile, self.stride)):
            raise ValueError(f"tile and stride must be whole numbers of pixels, got {self.tile!r}, {self.stride!r}")
        if not 0 < self.stride <= self.tile:
            raise ValueError(f"tiling needs 0 < stride <= tile, got tile {self.tile}, stride {self.stride}")

    def check(self, spatial_stride: int) -> None:
        # Otherwise the latent tiles and the pixel tiles they decode to would not line up.
        if self.tile % spatial_stride or self.stride % spatial_stride:
            raise ValueError(f"tile {self.tile} and stride {self.stride} must be multiples of the VAE's spatial "
                             f"stride {spatial_stride}")

    def splits_latents(self, h: int, w: int, spatial_stride: int) -> bool:
        """Whether latent frames of h x w are decoded in tiles (a side longer than one tile)."""
        self.check(spatial_stride)
        return max(h, w) > self.tile // spatial_stride

    def splits_video(self, height: int, width: int, spatial_stride: int) -> bool:
        """Whether frames of height x width pixels are encoded in tiles (a side longer than one tile)."""
        self.check(spatial_stride)
        return max(height, width) > self.tile


def _starts(size: int, stride: int) -> range:
    return range(0, size, stride)


def _fade(a: Tensor, b: Tensor, extent: int, dim: int) -> None:
    """Cross-fade the first `extent` positions of b along `dim` from a's last ones (weight 1 on a) to b's own
    (weight 1 on b, reached just past the overlap), in place."""
    n = min(a.shape[dim], b.shape[dim], extent)
    if n <= 0:
        return
    ramp = torch.arange(n, dtype=torch.float64) / n
    shape = [1] * b.ndim
    shape[dim] = n
    into = ramp.to(b.device, b.dtype).view(shape)
    out_of = (1 - ramp).to(b.device, b.dtype).view(shape)
    head = b.narrow(dim, 0, n)
    head.copy_(a.narrow(dim, a.shape[dim] - n, n) * out_of + head * into)


def stitch(grid: list[list[Tensor]], stride: int, overlap: int, height: int, width: int) -> Tensor:
    """One frame-stack (B, C, T, height, width) from a raster grid of overlapping tiles (B, C, T, h_i, w_j) that
    start every `stride` positions. The tiles are faded into each other in place."""
    for i, row in enumerate(grid):
        for j, tile in enumerate(row):
            # The neighbours were faded already (raster order); Diffusers fades from them in that state too.
            if i:
                _fade(grid[i - 1][j], tile, overlap, dim=-2)
            if j:
                _fade(row[j - 1], tile, overlap, dim=-1)
    rows = [torch.cat([tile[..., :stride, :stride] for tile in row], dim=-1) for row in grid]
    return torch.cat(rows, dim=-2)[..., :height, :width]


def tiled_encode(encode: Callable[[Tensor], Tensor], folded: Tensor, tiling: Tiling, encoder_stride: int) -> Tensor:
    """Latents of a clip (B, C, T, H, W) already folded into patches, encoded tile by tile by `encode` (a folded
    clip -> its latents, H / encoder_stride x W / encoder_stride) and faded together.

    Each tile is encoded as a whole clip before the next starts. The clip is in memory already and its latents are
    returned at once, so walking the tiles in lockstep would save nothing and would keep every tile's carried
    frames alive together; one tile after another needs one tile's activations and carry at a time.
    """
    tiling.check(encoder_stride)
    height, width = folded.shape[-2:]
    t, s = tiling.tile, tiling.stride
    grid = [[encode(folded[..., i:i + t, j:j + t]) for j in _starts(width, s)] for i in _starts(height, s)]
    latent_stride = s // encoder_stride
    return stitch(grid, latent_stride, t // encoder_stride - latent_stride, height // encoder_stride,
                  width // encoder_stride)


class _Carries:
    """Every tile's own copy of what a module's `Streamable` layers carry from one call to the next.

    The layers keep that state in plain instance attributes (the last input frames, whether the clip has started),
    so a snapshot of each layer's public attributes captures it whatever the layer; putting back those that did
    not change (sizes, flags) is harmless. Snapshots hold references, not copies: the layers replace their carried
    tensors on each call rather than writing into them.
    """

    def __init__(self, module: nn.Module, count: int) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, Streamable)]
        start = self._snapshot()  # taken inside `streaming`: the state of a clip not yet begun
        self.states = [start] * count

    def _snapshot(self) -> list[dict]:
        return [{k: v for k, v in vars(layer).items() if not k.startswith("_") and k != "training"}
                for layer in self.layers]

    def run(self, index: int, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """fn(x) with the layers carrying tile `index`'s state in and out."""
        for layer, state in zip(self.layers, self.states[index]):
            vars(layer).update(state)
        try:
            return fn(x)
        finally:
            self.states[index] = self._snapshot()


class TiledDecoding:
    """Decodes the latent frames of one clip, of h x w latent pixels, in overlapping tiles that all advance one
    latent frame at a time. Must be made and called inside `streaming(decoder)`.

    Memory: the activations of one tile at a time, plus every tile's carried frames (about the whole frame's,
    times the overlap) and the current latent frame's decoded tiles.
    """

    def __init__(self, decoder: nn.Module, tiling: Tiling, spatial_stride: int, patch: int, h: int, w: int) -> None:
        tiling.check(spatial_stride)
        self.decoder, self.h, self.w = decoder, h, w
        t, s = tiling.tile // spatial_stride, tiling.stride // spatial_stride
        self.windows = [[(slice(i, i + t), slice(j, j + t)) for j in _starts(w, s)] for i in _starts(h, s)]
        self.carries = _Carries(decoder, sum(map(len, self.windows)))
        # The decoder's output is on the patch grid (Wan 2.2): the fade and the crop are measured there.
        self.stride, self.overlap = tiling.stride // patch, (tiling.tile - tiling.stride) // patch
        self.scale = spatial_stride // patch

    def __call__(self, z: Tensor) -> Tensor:
        """(B, z_dim, f, h, w) latents, past `post_quant_conv` -> (B, C_out, frames, h*s/p, w*s/p) decoder output."""
        if z.shape[-2:] != (self.h, self.w):
            raise ValueError(f"latent frames of {tuple(z.shape[-2:])} in a clip of {(self.h, self.w)}")
        frames = []
        for k in range(z.shape[2]):  # one latent frame at a time: its video frames are done before the next's start
            latent = z[:, :, k:k + 1]
            grid, index = [], 0
            for row in self.windows:
                grid.append([])
                for rows, cols in row:
                    grid[-1].append(self.carries.run(index, self.decoder, latent[..., rows, cols]))
                    index += 1
            frames.append(stitch(grid, self.stride, self.overlap, self.h * self.scale, self.w * self.scale))
        return torch.cat(frames, dim=2)
