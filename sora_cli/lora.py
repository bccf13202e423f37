"""LoRAs for Wan transformers, read in the formats people download and merged into the weights once, after
loading: a LoRA then costs nothing per step.

Formats, told apart by their keys:
- diffusers / PEFT: `transformer.blocks.0.attn1.to_q.lora_A.weight` and `lora_B.weight` (diffusers' names, which
  are sora's), `lora_B.bias` for a bias delta; alpha from the file's `lora_adapter_metadata`, else the rank.
- ComfyUI / Kijai and the original Wan code: `diffusion_model.blocks.0.self_attn.q.lora_down.weight`, `lora_up`
  (or `lora_A` / `lora_B`) and `alpha`, and full deltas: `diff` for a weight, `diff_b` for a bias; Wan's own
  module names (`self_attn.q`, `ffn.0`, `norm3`, `head.head`, ...).
- musubi / kohya: `lora_unet_blocks_0_self_attn_q.lora_down.weight`: Wan's names with "_" for ".".

A pair adds scale x alpha/rank x (up @ down) to its weight. Loading is strict: a key naming no weight of the
transformer, or a delta of another shape, is a ModelError naming it, never skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError, OptionError
from .loading import first_line

# Wan's original module names -> diffusers' (sora's), in order: the first rule that matches a name rewrites it.
WAN_NAMES = [
    (r"^blocks\.(\d+)\.self_attn\.([qkvo])$", lambda m: f"blocks.{m[1]}.attn1.{_PROJ[m[2]]}"),
    (r"^blocks\.(\d+)\.cross_attn\.([qkvo])$", lambda m: f"blocks.{m[1]}.attn2.{_PROJ[m[2]]}"),
    (r"^blocks\.(\d+)\.cross_attn\.([kv])_img$", lambda m: f"blocks.{m[1]}.attn2.add_{m[2]}_proj"),
    (r"^blocks\.(\d+)\.cross_attn\.norm_k_img$", lambda m: f"blocks.{m[1]}.attn2.norm_added_k"),
    (r"^blocks\.(\d+)\.self_attn\.norm_([qk])$", lambda m: f"blocks.{m[1]}.attn1.norm_{m[2]}"),
    (r"^blocks\.(\d+)\.cross_attn\.norm_([qk])$", lambda m: f"blocks.{m[1]}.attn2.norm_{m[2]}"),
    (r"^blocks\.(\d+)\.ffn\.0$", lambda m: f"blocks.{m[1]}.ffn.net.0.proj"),
    (r"^blocks\.(\d+)\.ffn\.2$", lambda m: f"blocks.{m[1]}.ffn.net.2"),
    (r"^blocks\.(\d+)\.norm3$", lambda m: f"blocks.{m[1]}.norm2"),  # Wan's cross-attention norm is diffusers' norm2
    (r"^blocks\.(\d+)\.modulation$", lambda m: f"blocks.{m[1]}.scale_shift_table"),
    (r"^text_embedding\.([02])$", lambda m: f"condition_embedder.text_embedder.linear_{int(m[1]) // 2 + 1}"),
    (r"^time_embedding\.([02])$", lambda m: f"condition_embedder.time_embedder.linear_{int(m[1]) // 2 + 1}"),
    (r"^time_projection\.1$", lambda m: "condition_embedder.time_proj"),
    (r"^head\.head$", lambda m: "proj_out"),
    (r"^head\.modulation$", lambda m: "scale_shift_table"),
    (r"^img_emb\.proj\.([0134])$",
     lambda m: "condition_embedder.image_embedder." + {"0": "norm1", "1": "ff.net.0.proj", "3": "ff.net.2",
                                                       "4": "norm2"}[m[1]]),
    (r"^img_emb\.emb_pos$", lambda m: "condition_embedder.image_embedder.pos_embed"),
]
_PROJ = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
# A key's module path, and what it holds: a low-rank pair's halves, its alpha, or a full delta.
_PARTS = re.compile(r"^(?P<module>.+?)\.(?P<part>lora_down\.weight|lora_up\.weight|lora_A\.weight|lora_B\.weight|"
                    r"lora_B\.bias|alpha|diff|diff_b)$")


@dataclass(frozen=True)
class Lora:
    path: Path
    scale: float


def read(lora: Lora) -> tuple[dict[str, torch.Tensor], dict, str]:
    """The file's tensors, its metadata and its SHA-256, from one read of it; safetensors only."""
    from safetensors import safe_open
    from safetensors.torch import load

    if lora.path.suffix.lower() != ".safetensors":
        raise OptionError(f"--lora {lora.path}: LoRAs are read from .safetensors files only (never pickles)")
    try:
        data = lora.path.read_bytes()
    except OSError as e:
        raise OptionError(f"--lora {lora.path}: {e.strerror or e}") from None
    try:
        tensors = load(data)
        with safe_open(str(lora.path), framework="pt") as f:  # the header alone, for the metadata
            metadata = f.metadata() or {}
    except Exception as e:  # a damaged or foreign file: safetensors raises several kinds
        raise ModelError(f"--lora {lora.path} is not a readable safetensors file ({first_line(e)[:120]})") from None
    return tensors, metadata, hashlib.sha256(data).hexdigest()


def deltas(tensors: dict[str, torch.Tensor], metadata: dict, names: dict[str, str],
           params: set[str]) -> dict[str, torch.Tensor]:
    """Parameter name (sora's) -> the change the LoRA makes to it at scale 1. `names` maps every module path a
    LoRA may use (sora's, Wan's, Wan's with "_") to sora's; `params` are the model's parameter names."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _PARTS.match(key)
        module = None if m is None else names.get(_strip_prefix(m["module"]))
        if module is None:
            raise ModelError(f"LoRA key {key!r} names no weight of this transformer")
        groups.setdefault(module, {})[m["part"]] = value
    alphas = _peft_alphas(metadata)
    out: dict[str, torch.Tensor] = {}
    for module, parts in groups.items():
        weight = module if module in params else f"{module}.weight"  # a bare parameter is its own module
        down = parts.get("lora_down.weight", parts.get("lora_A.weight"))
        up = parts.get("lora_up.weight", parts.get("lora_B.weight"))
        if (down is None) != (up is None):
            raise ModelError(f"LoRA for {module} has one half of a low-rank pair without the other")
        if down is not None:
            rank = down.shape[0]
            alpha = float(parts["alpha"]) if "alpha" in parts else _alpha(alphas, module, rank)
            delta = (up.flatten(1).float() @ down.flatten(1).float()) * (alpha / rank)
            out[weight] = out.get(weight, 0) + delta
        if "diff" in parts:
            out[weight] = out.get(weight, 0) + parts["diff"].float()
        for bias in ("diff_b", "lora_B.bias"):
            if bias in parts:
                out[f"{module}.bias"] = out.get(f"{module}.bias", 0) + parts[bias].float()
    return out


def merge(model: nn.Module, loras: list[Lora]) -> list[dict]:
    """Merge each LoRA into `model`'s weights at its scale; their metadata records. Strict: a key for no weight,
    or a delta of another shape, is a ModelError naming it."""
    params = dict(model.named_parameters())
    names = module_names(model)
    records = []
    for lora in loras:
        tensors, metadata, digest = read(lora)
        try:
            changes = deltas(tensors, metadata, names, set(params))
        except ModelError as e:
            raise ModelError(f"--lora {lora.path.name}: {e}") from None
        with torch.no_grad():
            for name, delta in changes.items():
                weight = params.get(name)
                if weight is None:
                    raise ModelError(f"--lora {lora.path.name}: this transformer has no {name}")
                if delta.numel() != weight.numel() or (delta.ndim > 1 and delta.shape[0] != weight.shape[0]):
                    raise ModelError(f"--lora {lora.path.name}: its change to {name} has shape {tuple(delta.shape)}, "
                                     f"the weight {tuple(weight.shape)} (a LoRA for another model?)")
                merged = weight.float() + lora.scale * delta.to(weight.device).reshape(weight.shape)
                weight.copy_(merged.to(weight.dtype))
        records.append(dict(file=lora.path.name, sha256=digest, scale=lora.scale))
    return records


def module_names(model: nn.Module) -> dict[str, str]:
    """Every module path a LoRA may name for `model` -> sora's: sora's own (diffusers'), Wan's original, and
    Wan's with "_" for "." (musubi / kohya)."""
    ours = {name.rpartition(".")[0] for name, _ in model.named_parameters()} | {
        name for name, _ in model.named_parameters()}  # a bare parameter (scale_shift_table) is its own path
    names = {name: name for name in ours}
    blocks = len(getattr(model, "blocks", ()))
    for wan in _wan_paths(blocks):
        target = to_ours(wan)
        if target in ours:
            names[wan] = names[wan.replace(".", "_")] = target
    return names


def to_ours(wan: str) -> str | None:
    """sora's module path for one of Wan's original names."""
    for pattern, rewrite in WAN_NAMES:
        m = re.match(pattern, wan)
        if m:
            return rewrite(m)
    return None


def _wan_paths(blocks: int) -> list[str]:
    """Every module path Wan's original code gives a transformer of `blocks` blocks."""
    per_block = [f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in ("q", "k", "v", "o", "norm_q", "norm_k")]
    per_block += ["cross_attn.k_img", "cross_attn.v_img", "cross_attn.norm_k_img", "ffn.0", "ffn.2", "norm3",
                  "modulation"]
    return ([f"blocks.{n}.{p}" for n in range(blocks) for p in per_block]
            + ["text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2", "time_projection.1",
               "head.head", "head.modulation", "img_emb.emb_pos"] + [f"img_emb.proj.{i}" for i in "0134"])


def _strip_prefix(module: str) -> str:
    for prefix in ("transformer.", "diffusion_model.", "lora_unet_", "model.diffusion_model."):
        if module.startswith(prefix):
            return module[len(prefix):]
    return module


def _alpha(alphas: dict[str, float], module: str, rank: int) -> float:
    """A module's alpha: the first `alpha_pattern` key that ends its path (PEFT matches them as suffixes), else
    the LoRA's `lora_alpha`, else its rank."""
    for pattern, alpha in alphas.items():
        if pattern and re.fullmatch(rf"(.*\.)?{pattern}", module):
            return alpha
    return alphas.get("", rank)


def _peft_alphas(metadata: dict) -> dict[str, float]:
    """diffusers' `lora_adapter_metadata`: {"": lora_alpha} and per-module alphas (`alpha_pattern`)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        config = json.loads(raw)
        config = config.get("transformer", config) if isinstance(config, dict) else {}
        alphas = {"": float(config["lora_alpha"])} if "lora_alpha" in config else {}
        alphas |= {k.removeprefix("transformer."): float(v) for k, v in (config.get("alpha_pattern") or {}).items()}
        return alphas
    except (ValueError, TypeError, AttributeError):
        raise ModelError("its lora_adapter_metadata is not valid JSON with a number for lora_alpha") from None
