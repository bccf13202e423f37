"""Wan diffusion transformer (Wan 2.1 and 2.2; text-to-video, and image-to-video), readable top to bottom.

Checkpoint layout, parameter names and config.json keys are those of diffusers'
`WanTransformer3DModel`, so published Diffusers-format checkpoints load with
`load_state_dict(strict=True)` and no key conversion.

Data flow:
    latents (B, C, F, H, W) --Conv3d patchify--> tokens (B, L, D), L = f*h*w in (f, h, w) raster order
    text (B, S, text_dim) --MLP--> (B, S, D)
    image-to-video only: image features (B, S_img, image_dim) --MLP--> (B, S_img, D), attended beside the text
    timestep --sinusoid--> time MLP --> temb (D) --> 6 modulation vectors per block (adaLN)
    N x [self-attn with 3D RoPE, cross-attn to text, GELU feed-forward]
    final norm + scale/shift --> linear --> unpatchify --> velocity (B, C_out, F, H, W)

fp32 islands (kept as the reference keeps them, so bf16 runs stay stable):
  * the sinusoidal timestep features and the time-embedding MLP (when its weights are fp32,
    see `WanTransformer.cast_params`);
  * every layer norm (norm1/norm2/norm3/norm_out) and all modulation arithmetic:
    `table + temb`, `norm(x) * (1 + scale) + shift`, and the gated residual adds;
  * the rotary rotation of q and k (cos/sin tables are computed in float64, applied in float32).
Attention, linear layers and the residual stream otherwise run in the weights' dtype.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .. import checks
from .transformer_layers import Attention, FeedForward, ImageEmbedder, LayerNorm32, rope_angles

# Parameter-name fragments the reference keeps in float32 when the rest is cast to bf16/fp16.
FP32_PARAM_PATTERNS = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")


@dataclass
class TransformerConfig:
    """The keys of diffusers' WanTransformer3DModel config.json (defaults: Wan 2.1 14B)."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    qk_norm: str | None = "rms_norm_across_heads"
    eps: float = 1e-6
    image_dim: int | None = None  # Wan 2.1 image-to-video: the image encoder's feature size
    added_kv_proj_dim: int | None = None  # Wan 2.1 image-to-video: image keys and values in every cross-attention
    rope_max_seq_len: int = 1024
    pos_embed_seq_len: int | None = None  # first-last-frame: image tokens of both frames, with learnt positions

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        """Build from a config.json dict; `_`-prefixed and unknown keys are ignored. A value the network cannot be
        built from (a zero size, a string for a count), or does not implement, is a ValueError naming it."""
        checks.mapping(d, "transformer")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known and not k.startswith("_")}
        checks.whole_list(kwargs, "patch_size", length=3)
        checks.whole_numbers(kwargs, "num_attention_heads", "attention_head_dim", "in_channels", "text_dim",
                             "freq_dim", "ffn_dim", "num_layers", "rope_max_seq_len")
        checks.whole_numbers(kwargs, "out_channels", "image_dim", "added_kv_proj_dim", "pos_embed_seq_len",
                             nullable=True)
        checks.boolean(kwargs, "cross_attn_norm")
        checks.string(kwargs, "qk_norm", nullable=True)
        checks.number(kwargs, "eps", low=0, above=True)
        if kwargs.get("freq_dim", cls.freq_dim) % 2:
            raise ValueError(f"freq_dim must be even (a cosine and a sine half), got {kwargs['freq_dim']}")
        if "patch_size" in kwargs:
            kwargs["patch_size"] = tuple(kwargs["patch_size"])
        if "out_channels" in kwargs and kwargs["out_channels"] is None:  # diffusers: None means in_channels
            kwargs["out_channels"] = kwargs.get("in_channels", cls.in_channels)
        config = cls(**kwargs)
        check_supported(config)
        return config

    def to_dict(self) -> dict:
        """config.json content that diffusers' WanTransformer3DModel also accepts."""
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return {"_class_name": "WanTransformer3DModel", **d}

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


def frame_timesteps_to_tokens(t_frames: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """Per-token timesteps (B, f*h*w) from one timestep per token-frame (B, f).

    `grid` is `WanTransformer.token_grid(...)`; with the usual temporal patch of 1, f is the
    number of latent frames. E.g. t=0 on frame 0 marks a known (clean) first frame.
    """
    f, h, w = grid
    if t_frames.ndim != 2 or t_frames.shape[1] != f:
        raise ValueError(f"expected timesteps of shape (B, {f}), got {tuple(t_frames.shape)}")
    return t_frames[:, :, None].expand(-1, f, h * w).reshape(t_frames.shape[0], f * h * w)


def timestep_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features (N,) -> (N, dim), cos half first (the reference's flip_sin_to_cos)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (N, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulation_table(rows: int, dim: int) -> nn.Parameter:
    """A learnt (1, rows, dim) shift/scale/gate table. Left empty on the meta device, where a loader builds the
    model only to fill it from disk: normal_ there goes through torch's Python decompositions, whose first use
    imports torch._dynamo, 1.5 s of every start."""
    table = torch.empty(1, rows, dim)
    if table.device.type != "meta":
        nn.init.normal_(table, std=dim**-0.5)
    return nn.Parameter(table)


class Modulation:
    """Per-sample or per-token adaLN vectors, stored compactly.

    `values` (U, n, D) holds one row per distinct timestep; `index` (B, Lt) picks a row for
    every sample (Lt=1, broadcast over tokens) or every token (Lt=L). Gathering one vector at
    a time keeps the per-token case from materialising a (B, L, 6, D) tensor.
    """

    def __init__(self, values: Tensor, index: Tensor):
        self.values, self.index = values, index

    def vectors(self, table: Tensor) -> list[Tensor]:
        mod = table.float() + self.values.float()  # (U, n, D) fp32: table is (1, n, D)
        # A one-hot product rather than indexing: the same values exactly, and in training its backward is one
        # matrix product instead of a scattered accumulation (on the CPU the slowest op of a training step).
        pick = F.one_hot(self.index, mod.shape[0]).to(mod.dtype)  # (B, Lt, U)
        with torch.autocast(mod.device.type, enabled=False):  # an fp32 island under bf16 autocast too
            rows = pick @ mod.flatten(1)  # (B, Lt, n*D)
        return list(rows.unflatten(-1, mod.shape[1:]).unbind(-2))  # n x (B, Lt, D)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm32(dim, cfg.eps, elementwise_affine=False)
        self.attn1 = Attention(dim, cfg.num_attention_heads, cfg.eps)
        self.attn2 = Attention(dim, cfg.num_attention_heads, cfg.eps, image_dim=cfg.added_kv_proj_dim)
        self.norm2 = LayerNorm32(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.ffn = FeedForward(dim, cfg.ffn_dim)
        self.norm3 = LayerNorm32(dim, cfg.eps, elementwise_affine=False)
        # learned offsets added to the timestep's 6 modulation vectors
        self.scale_shift_table = modulation_table(6, dim)

    def forward(self, x: Tensor, context: Tensor, mod: Modulation, rope: tuple[Tensor, Tensor],
                image: Tensor | None = None) -> Tensor:
        # x: (B, L, D) in compute dtype; modulation vectors are fp32 (B, 1 or L, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.vectors(self.scale_shift_table)

        h = (self.norm1(x) * (1 + scale1) + shift1).type_as(x)
        x = (x.float() + self.attn1(h, rope=rope) * gate1).type_as(x)

        h = self.norm2(x.float()).type_as(x)
        x = x + self.attn2(h, context=context, image=image)

        h = (self.norm3(x) * (1 + scale2) + shift2).type_as(x)
        x = (x.float() + self.ffn(h).float() * gate2).type_as(x)
        return x


class TwoLayerMLP(nn.Module):
    """linear_1 -> activation -> linear_2: the time embedder (SiLU) and the text embedder (GELU-tanh)."""

    def __init__(self, in_dim: int, dim: int, activation):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.activation(self.linear_1(x)))


class ConditionEmbedder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.freq_dim = cfg.freq_dim
        self.time_embedder = TwoLayerMLP(cfg.freq_dim, cfg.dim, F.silu)
        self.time_proj = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.text_embedder = TwoLayerMLP(cfg.text_dim, cfg.dim, partial(F.gelu, approximate="tanh"))
        if cfg.image_dim is not None:
            self.image_embedder = ImageEmbedder(cfg.image_dim, cfg.dim, cfg.pos_embed_seq_len)

    def time(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Distinct timesteps (U,) -> temb (U, D) and block modulation (U, 6, D)."""
        feats = timestep_features(t, self.freq_dim).to(self.time_embedder.linear_1.weight.dtype)
        temb = self.time_embedder(feats).to(self.time_proj.weight.dtype)  # (U, D)
        return temb, self.time_proj(F.silu(temb)).unflatten(1, (6, -1))  # (U, 6, D)


def check_supported(cfg: TransformerConfig) -> None:
    """ValueError for a config this network does not implement (WanTransformer checks it too, when built)."""
    if (cfg.image_dim is None) != (cfg.added_kv_proj_dim is None) or (cfg.pos_embed_seq_len and not cfg.image_dim):
        raise ValueError("image_dim and added_kv_proj_dim come together (image-to-video), and pos_embed_seq_len "
                         "needs them")
    if cfg.added_kv_proj_dim not in (None, cfg.dim):
        raise ValueError(f"added_kv_proj_dim must be the model width {cfg.dim}, got {cfg.added_kv_proj_dim}")
    if cfg.qk_norm != "rms_norm_across_heads":
        raise ValueError(f"qk_norm={cfg.qk_norm!r} is not supported (Wan uses 'rms_norm_across_heads')")
    if cfg.attention_head_dim % 2:
        raise ValueError(f"attention_head_dim must be even for rotary embeddings, got {cfg.attention_head_dim}")


class WanTransformer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        check_supported(config)
        self.config = config
        dim, patch = config.dim, tuple(config.patch_size)
        self.out_channels = config.out_channels or config.in_channels
        self.patch_embedding = nn.Conv3d(config.in_channels, dim, kernel_size=patch, stride=patch)
        self.condition_embedder = ConditionEmbedder(config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.norm_out = LayerNorm32(dim, config.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, self.out_channels * math.prod(patch))
        self.scale_shift_table = modulation_table(2, dim)
        # plain attribute, not a buffer: meta construction + assign=True loading must not need it
        self._rope_cache: tuple[tuple, tuple[Tensor, Tensor]] | None = None

    def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid (f, h, w) for a latent of F frames and H x W; the sequence length is f*h*w."""
        pt, ph, pw = self.config.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent (F, H, W)=({frames}, {height}, {width}) not divisible by patch {(pt, ph, pw)}")
        return frames // pt, height // ph, width // pw

    def patchify(self, x: Tensor) -> Tensor:
        """(B, C, F, H, W) -> tokens (B, L, D): the patch embedding, a Conv3d whose stride is its kernel, computed
        as the linear map it is. (PyTorch 2.13's CPU bf16 Conv3d returns wrong values for this kernel, so bf16
        training on a CPU cannot use the convolution itself.)"""
        pt, ph, pw = self.config.patch_size
        patches = rearrange(x, "b c (f pt) (h ph) (w pw) -> b (f h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)
        return F.linear(patches, self.patch_embedding.weight.flatten(1), self.patch_embedding.bias)

    def cast_params(self, dtype: torch.dtype) -> "WanTransformer":
        """Cast floating weights to `dtype`, keeping the reference's fp32 modules in float32."""
        for name, p in self.named_parameters():
            if p.is_floating_point() and not any(s in name for s in FP32_PARAM_PATTERNS):
                p.data = p.data.to(dtype)
        return self

    def _rope(self, grid: tuple[int, int, int], device: torch.device) -> tuple[Tensor, Tensor]:
        if max(grid) > self.config.rope_max_seq_len:
            raise ValueError(f"token grid {grid} exceeds rope_max_seq_len={self.config.rope_max_seq_len}")
        key = (grid, device)
        if self._rope_cache is None or self._rope_cache[0] != key:
            angles = rope_angles(self.config.attention_head_dim, grid, device)  # (L, Dh/2)
            self._rope_cache = (key, (angles.cos().float(), angles.sin().float()))
        return self._rope_cache[1]

    def forward(self, x: Tensor, timestep: Tensor, context: Tensor, image: Tensor | None = None,
                cache=None) -> Tensor:
        """Predict the flow-matching velocity.

        x: (B, C_in, F, H, W) latents, F/H/W divisible by the patch size.
        timestep: (B,) one per sample (a 0-d tensor is shared by the batch), or (B, L) one
            per token in (f, h, w) raster order
            (L = f*h*w, see `token_grid` / `frame_timesteps_to_tokens`); values may differ
            per token, e.g. 0 for known clean frames.
        context: (B, S, text_dim) text hidden states, zero-padded past the prompt.
        image: (B, S_img, image_dim) image-encoder features, for an image-to-video checkpoint (and only there).
        cache: a step cache (caching.py) that may skip blocks, told the step and the batch's guidance branches.
        Returns (B, C_out, F, H, W) in x's dtype.
        """
        b = x.shape[0]
        grid = self.token_grid(*x.shape[2:])
        n_tokens = math.prod(grid)
        dtype = self.patch_embedding.weight.dtype

        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        if timestep.ndim == 1 and timestep.shape[0] == b:
            # one row per sample; every token shares it
            t_values, t_index = timestep, torch.arange(b, device=x.device)[:, None]  # (B,), (B, 1)
        elif timestep.ndim == 2 and timestep.shape == (b, n_tokens):
            # few distinct values (e.g. clean vs noisy): embed each once, then gather per token
            t_values, inverse = torch.unique(timestep, return_inverse=True)
            t_index = inverse.reshape(b, n_tokens)  # (B, L)
        else:
            raise ValueError(f"timestep must be ({b},) or ({b}, {n_tokens}), got {tuple(timestep.shape)}")

        temb, t_mod = self.condition_embedder.time(t_values)  # (U, D), (U, 6, D)
        block_mod = Modulation(t_mod, t_index)
        context = self.condition_embedder.text_embedder(context.to(dtype))  # (B, S, D)
        if (image is None) != (self.config.image_dim is None):
            raise ValueError("image features go with an image-to-video checkpoint, and it needs them")
        if image is not None:
            image = self.condition_embedder.image_embedder(image.to(dtype))  # (B, S_img, D)
        rope = self._rope(grid, x.device)

        h = self.patchify(x.to(dtype))  # (B, L, D)

        def run(h: Tensor, first: int = 0, last: int | None = None) -> Tensor:
            for block in self.blocks[first:last]:
                h = block(h, context, block_mod, rope, image)
            return h

        # A step cache runs the blocks, or adds again what they added when they last ran (caching.py).
        h = run(h) if cache is None else cache(h, run, t_mod)

        shift, scale = Modulation(temb[:, None], t_index).vectors(self.scale_shift_table)  # (B, 1|L, D) fp32
        h = (self.norm_out(h) * (1 + scale) + shift).type_as(h)
        h = self.proj_out(h)  # (B, L, pt*ph*pw*C_out)

        pt, ph, pw = self.config.patch_size
        f, gh, gw = grid
        out = rearrange(
            h, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)", f=f, h=gh, w=gw, pt=pt, ph=ph, pw=pw
        )
        return out.to(x.dtype)
