"""The Wan video VAEs: causal 3D convolutional autoencoders.

A clip of T = 1 + 4n frames at H x W becomes n + 1 latent frames at H/8 x W/8 (Wan 2.1: 16 channels). The Wan 2.2
VAE (TI2V-5B) first folds each 2x2 pixel patch into channels (`patch_size`), wraps every down and up block in a
parameter-free shortcut (`is_residual`) and keeps 48 channels, for H/16 x W/16.
Every temporal convolution is causal, so latent frame k depends only on video frames up to 4k, and
the first frame is coded on its own (an image is a one-frame video).

A frame too large to code in one piece can be coded in overlapping, cross-faded tiles: set `WanVAE.tiling`
(see `vae_tiling.py`).

Causality lets a clip be processed as a stream of chunks: the first frame, then 4 frames at a time
when encoding, one latent frame at a time when decoding. Inside `streaming(module)` each causal layer
remembers the end of the previous chunk (at most 2 frames), so memory does not grow with clip
length and the result equals a single pass over the whole clip. Outside it the layers are stateless
and the encoder/decoder can be run on a whole clip at once, e.g. for training.

Parameter names follow Diffusers' AutoencoderKLWan so its checkpoints load without conversion.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .. import checks
from .vae_blocks import (AttentionBlock, CausalConv3d, CopyUp, Downsample, MeanDown, ResidualBlock, RMSNorm, Upsample,
                         streaming)
from .vae_tiling import TiledDecoding, Tiling, tiled_encode

# Per-channel statistics of Wan 2.1 latents: encode maps latents to roughly unit scale with them.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclass
class VAEConfig:
    base_dim: int = 96
    decoder_base_dim: int | None = None  # None: same as base_dim
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()  # must be empty: no Wan 2.1 checkpoint has these attention blocks
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # sic, the Diffusers spelling
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    is_residual: bool = False  # Wan 2.2: shortcuts around the down and up blocks
    patch_size: int | None = None  # Wan 2.2: 2, each 2x2 pixel patch folded into channels before the encoder
    in_channels: int = 3  # what the encoder sees (3 x patch_size^2)
    out_channels: int = 3  # what the decoder makes, before unfolding the patches

    def __post_init__(self) -> None:
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            setattr(self, name, tuple(getattr(self, name)))
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"temperal_downsample needs one entry per downsampling ({len(self.dim_mult) - 1}), "
                             f"got {len(self.temperal_downsample)}")
        if not len(self.latents_mean) == len(self.latents_std) == self.z_dim:
            raise ValueError(f"latents_mean and latents_std need z_dim={self.z_dim} values each")
        if self.attn_scales:
            raise ValueError("attn_scales is not supported: Wan VAEs have attention only in the middle blocks")
        if sum(map(bool, self.temperal_downsample)) != 2:  # clip lengths are 4n + 1 throughout (shapes.py)
            raise ValueError(f"temperal_downsample must halve time twice (4 frames a latent frame, as every Wan VAE "
                             f"does), got {list(self.temperal_downsample)}")
        if self.in_channels != 3 * self.patch ** 2 or self.out_channels != 3 * self.patch ** 2:
            raise ValueError(f"in_channels and out_channels must be 3 x patch_size^2 = {3 * self.patch ** 2}, "
                             f"got {self.in_channels} and {self.out_channels}")

    @property
    def patch(self) -> int:
        return self.patch_size or 1

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1) * self.patch

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(map(bool, self.temperal_downsample))

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        """Build from a config.json dict; unknown keys are ignored. A value the network cannot be built from (a
        zero size, a string for a list) is a ValueError naming its key."""
        checks.mapping(d, "VAE")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        checks.whole_numbers(kwargs, "base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels")
        checks.whole_numbers(kwargs, "decoder_base_dim", "patch_size", nullable=True)
        checks.boolean(kwargs, "is_residual")
        checks.whole_list(kwargs, "dim_mult")
        checks.number_list(kwargs, "attn_scales")
        checks.bool_list(kwargs, "temperal_downsample")
        checks.number(kwargs, "dropout", low=0, high=1)
        checks.number_list(kwargs, "latents_mean")
        checks.number_list(kwargs, "latents_std", positive=True)
        return cls(**kwargs)

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"_class_name": "AutoencoderKLWan", **d, "scale_factor_temporal": self.temporal_stride,
                "scale_factor_spatial": self.spatial_stride}


class MidBlock(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, dropout), ResidualBlock(dim, dim, dropout)])
        self.attentions = nn.ModuleList([AttentionBlock(dim)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        return self.resnets[1](self.attentions[0](x))


class UpBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float,
                 upsample: bool, temporal: bool) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList(ResidualBlock(i, o, dropout) for i, o in zip(dims[:-1], dims[1:]))
        self.upsamplers = nn.ModuleList([Upsample(out_dim, temporal)]) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class ShortcutDownBlock(nn.Module):
    """Wan 2.2's down block: residual blocks and a downsampler, beside a parameter-free shortcut that averages
    the block's input down to the same shape."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float,
                 downsample: bool, temporal: bool) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nn.ModuleList(ResidualBlock(i, o, dropout) for i, o in zip(dims[:-1], dims[1:]))
        self.downsampler = Downsample(out_dim, temporal) if downsample else None
        self.shortcut = MeanDown(in_dim, out_dim, 2 if temporal else 1, 2 if downsample else 1)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for resnet in self.resnets:
            h = resnet(h)
        return (self.downsampler(h) if self.downsampler is not None else h) + self.shortcut(x)


class ShortcutUpBlock(nn.Module):
    """Wan 2.2's up block: residual blocks and an upsampler that keeps its channels, beside a parameter-free
    shortcut that copies the block's input up to the same shape."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float,
                 upsample: bool, temporal: bool) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList(ResidualBlock(i, o, dropout) for i, o in zip(dims[:-1], dims[1:]))
        self.upsampler = Upsample(out_dim, temporal, out_dim) if upsample else None
        self.shortcut = CopyUp(in_dim, out_dim, 2 if temporal else 1, 2) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for resnet in self.resnets:
            h = resnet(h)
        if self.upsampler is None:
            return h
        return self.upsampler(h) + self.shortcut(x)


class Encoder(nn.Module):
    """(B, C_in, 1 + s_t*n, H, W) video (patches folded into channels) -> (B, 2*z_dim, 1 + n, H/s, W/s) posterior
    mean and log-variance."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []  # Wan 2.1: one flat list, hence the Diffusers names down_blocks.{i}
        for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            down = level < len(cfg.dim_mult) - 1
            if cfg.is_residual:
                blocks.append(ShortcutDownBlock(in_dim, out_dim, cfg.num_res_blocks, cfg.dropout, down,
                                                down and cfg.temperal_downsample[level]))
                continue
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                in_dim = out_dim
            if down:
                blocks.append(Downsample(out_dim, temporal=cfg.temperal_downsample[level]))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1], cfg.dropout)
        self.norm_out = RMSNorm(dims[-1], 3)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    """(B, z_dim, 1 + n, h, w) latents -> (B, C_out, 1 + s_t*n, h*s, w*s) video (unclamped, patches in channels)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        base = cfg.decoder_base_dim or cfg.base_dim
        mults = cfg.dim_mult[::-1]
        temporal = cfg.temperal_downsample[::-1]
        dims = [base * m for m in (mults[0], *mults)]
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], cfg.dropout)
        blocks = []
        for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            upsample = level < len(mults) - 1
            if cfg.is_residual:
                blocks.append(ShortcutUpBlock(in_dim, out_dim, cfg.num_res_blocks, cfg.dropout, upsample,
                                              upsample and temporal[level]))
                continue
            # Wan 2.1's upsamplers halve the channels, so all blocks but the first get half their nominal input.
            blocks.append(UpBlock(in_dim if level == 0 else in_dim // 2, out_dim, cfg.num_res_blocks, cfg.dropout,
                                  upsample=upsample, temporal=upsample and temporal[level]))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1], 3)
        self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class WanVAE(nn.Module):
    def __init__(self, cfg: VAEConfig, tiling: Tiling | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.tiling = tiling  # None: every frame coded whole
        self.spatial_stride = cfg.spatial_stride
        self.temporal_stride = cfg.temporal_stride
        self.encoder = Encoder(cfg)
        self.quant_conv = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)
        self.post_quant_conv = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder(cfg)

    def _latent_stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        # Built on the fly rather than kept as buffers: checkpoints have no such tensors.
        mean = torch.tensor(self.config.latents_mean, device=like.device, dtype=like.dtype)
        std = torch.tensor(self.config.latents_std, device=like.device, dtype=like.dtype)
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1], T = 1 + 4n -> normalised latents (B, z_dim, 1 + n, H/s, W/s).

        Deterministic: the posterior mean, not a sample.
        """
        b, c, t, h, w = video.shape
        st, ss = self.temporal_stride, self.spatial_stride
        if c != 3 or (t - 1) % st or h % ss or w % ss:
            raise ValueError(f"video of shape {tuple(video.shape)}: expected (B, 3, 1 + {st}n, {ss}i, {ss}j)")
        video = self._fold(video.to(self.quant_conv.weight.dtype))
        if self.tiling is not None and self.tiling.splits_video(h, w, ss):
            mean = tiled_encode(self._posterior_mean, video, self.tiling, ss // self.config.patch)
        else:
            mean = self._posterior_mean(video)
        mu, sigma = self._latent_stats(mean)
        return (mean - mu) / sigma

    def _posterior_mean(self, video: Tensor) -> Tensor:
        """(B, C_in, T, H, W) folded clip -> (B, z_dim, F, h, w) posterior mean, not yet normalised."""
        st = self.temporal_stride
        with streaming(self.encoder):
            # One latent frame per chunk: the first frame alone, then temporal_stride frames at a time.
            chunks = [self.encoder(video[:, :, :1])]
            chunks += [self.encoder(video[:, :, i:i + st]) for i in range(1, video.shape[2], st)]
        moments = self.quant_conv(torch.cat(chunks, dim=2))  # (B, 2*z_dim, F, h, w)
        return moments[:, :self.config.z_dim]  # the other half is the log-variance

    def _fold(self, video: Tensor) -> Tensor:
        """Each p x p pixel patch into channels, ordered (colour, patch column, patch row) as Wan 2.2 trained."""
        p = self.config.patch
        return rearrange(video, "b c t (h ph) (w pw) -> b (c pw ph) t h w", ph=p, pw=p) if p > 1 else video

    def _unfold(self, video: Tensor) -> Tensor:
        p = self.config.patch
        return rearrange(video, "b (c pw ph) t h w -> b c t (h ph) (w pw)", ph=p, pw=p) if p > 1 else video

    def _check_latents(self, latents: Tensor) -> None:
        if latents.ndim != 5 or latents.shape[1] != self.config.z_dim or latents.shape[2] == 0:
            raise ValueError(f"latents of shape {tuple(latents.shape)}: expected (B, {self.config.z_dim}, F, h, w)")

    def decode(self, latents: Tensor, on_chunk: Callable[[int, int], None] | None = None) -> Tensor:
        """Normalised latents (B, z_dim, F, h, w) -> video (B, 3, 1 + 4(F-1), s*h, s*w) in [-1, 1].

        Decodes one latent frame at a time; `on_chunk(done, total)` is called after each.
        """
        self._check_latents(latents)
        n, frames = latents.shape[2], []
        with self.decoding() as decode:
            for i in range(n):  # 1, then temporal_stride frames each
                frames.append(decode(latents[:, :, i:i + 1]))
                if on_chunk is not None:
                    on_chunk(i + 1, n)
        return torch.cat(frames, dim=2)

    @contextmanager
    def decoding(self) -> Iterator[Callable[[Tensor], Tensor]]:
        """A clip decoded in pieces: each call takes the next latent frames (B, z_dim, f, h, w) and returns
        their video frames; together they equal one `decode` of the whole clip. With `tiling`, each latent frame
        is decoded in tiles, all of them before the next latent frame."""
        tiles: TiledDecoding | None = None
        started = False  # whether to tile is decided at the first piece, from its size

        def decode(latents: Tensor) -> Tensor:
            nonlocal tiles, started
            self._check_latents(latents)
            latents = latents.to(self.post_quant_conv.weight.dtype)
            mu, sigma = self._latent_stats(latents)
            z = self.post_quant_conv(latents * sigma + mu)  # a 1x1x1 conv: nothing to carry between pieces
            if not started:
                started, (h, w) = True, z.shape[-2:]
                if self.tiling is not None and self.tiling.splits_latents(h, w, self.spatial_stride):
                    tiles = TiledDecoding(self.decoder, self.tiling, self.spatial_stride, self.config.patch, h, w)
            if tiles is not None:
                video = tiles(z)
            else:
                video = torch.cat([self.decoder(z[:, :, i:i + 1]) for i in range(z.shape[2])], dim=2)
            return self._unfold(video).clamp(-1.0, 1.0)

        with streaming(self.decoder):
            yield decode
