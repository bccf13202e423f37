"""Quantised weights for the Wan transformer, so a 14B model fits where its bf16 weights (28 GB) do not.

All of it is weight-only: weights are stored small and turned back into the compute dtype one layer at a time,
inside that layer's call; activations and arithmetic stay as they are. Only the blocks' linear layers (attention
q/k/v/o, the image keys and values, the feed-forward) are stored small: they hold nearly every parameter, while the
embeddings, norms, modulation tables and `proj_out` are small and steer every token, so they keep the model dtype
(and `FP32_PARAM_PATTERNS` keep float32).

- `to_fp8`: converts a loaded model's block linears to float8_e4m3fn with a float32 scale per output channel.
- `load_single_file`: the fp8 single-file checkpoints ComfyUI users download (Wan's original key names, fp8
  linears, optionally a per-tensor `scale_weight`); fp8 weights stay fp8.
- `load_gguf`: city96's GGUF files (Wan's names, ggml block formats); quantised block linears stay in their
  blocks and are dequantised in torch, on the layer's device, in each call.

The loaders are strict like `loading.load_module`: a key naming no weight, a missing weight or another shape is a
ModelError naming it. Quantised weights are buffers, not parameters: `cast_params` leaves them alone, and
`lora.merge` refuses them (LoRAs go into float weights: merge before `to_fp8`). `model.to(dtype)` would turn fp8
buffers back into `dtype`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ModelError
from .loading import first_line
from .lora import to_ours
from .models.wan.transformer import FP32_PARAM_PATTERNS

FP8_MAX = 448.0  # the largest finite float8_e4m3fn
FP8_TYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
PREFIXES = ("model.diffusion_model.", "diffusion_model.")
SHARED_NAMES = ("patch_embedding",)  # Wan's names that diffusers (and sora) kept


class Fp8Linear(nn.Module):
    """A Linear whose weight is float8 times a float32 scale per output channel."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: torch.dtype = torch.float8_e4m3fn, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=dtype, device=device))
        self.register_buffer("scale", torch.ones(out_features, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        w = linear.weight.detach().float()
        amax = w.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))  # an all-zero row stays zero
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device)
        # the clamp: w / scale can round a hair past 448, which e4m3fn has no value for (it would become NaN)
        layer.weight = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return layer

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        # fp8 -> bf16 or float32 is exact; the scale multiplies in the compute dtype, saving a float32 copy
        return self.weight.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight={self.weight.dtype}"


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The transformer blocks' float linear layers by name: the ones worth storing small."""
    return {name: m for name, m in model.named_modules() if name.startswith("blocks.") and type(m) is nn.Linear
            and not any(p in name for p in FP32_PARAM_PATTERNS)}


def to_fp8(model: nn.Module) -> int:
    """Replace the blocks' linear layers by `Fp8Linear`s, in place; the bytes saved."""
    saved = 0
    for name, linear in block_linears(model).items():
        layer = Fp8Linear.from_linear(linear)
        saved += _nbytes(linear.weight) - _nbytes(layer.weight) - _nbytes(layer.scale)
        _replace(model, name, layer)
    return saved


def load_single_file(model: nn.Module, path: str | Path, dtype: torch.dtype) -> None:
    """Fill `model` (best built on the meta device) from a single-file Wan checkpoint in Wan's original layout, as
    ComfyUI and Kijai publish them: fp8 block linears become `Fp8Linear`s (a per-tensor `scale_weight` folded into
    their scale), every other tensor is cast to `dtype` (float32 for `FP32_PARAM_PATTERNS`). `scale_input` keys
    (for fp8 activations) are read past: this runs activations in `dtype`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    linears = block_linears(model)
    state: dict[str, Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            names, scales = {}, {}  # sora's name -> the file's key
            for key in f.keys():  # every key checked before any weight is read
                bare = _strip(key)
                if bare == "scaled_fp8" or bare.endswith(".scale_input"):  # ComfyUI's marker; see the docstring
                    continue
                if bare.endswith(".scale_weight"):
                    _our_name(path, key, bare.removesuffix("scale_weight") + "weight", expected, scales)
                    continue
                ours = _our_name(path, key, bare, expected, names)
                _check_shape(path, key, tuple(f.get_slice(key).get_shape()), expected[ours])
            _check_complete(path, set(names), expected)
            for ours, key in scales.items():  # one scale for the tensor, or one per row
                if ours not in names or math.prod(f.get_slice(key).get_shape()) not in (1, expected[ours][0]):
                    raise ModelError(f"{path}: {key!r} is no scale of a weight the file holds")
            for ours, key in names.items():
                tensor, scale = f.get_tensor(key), scales.get(ours)
                scale = None if scale is None else f.get_tensor(scale).float()
                module = ours.removesuffix(".weight")
                if module in linears and tensor.dtype in FP8_TYPES:
                    layer, out = linears[module], tensor.shape[0]
                    _replace(model, module, Fp8Linear(layer.in_features, out, layer.bias is not None, tensor.dtype,
                                                      device="meta"))
                    state[ours] = tensor
                    state[f"{module}.scale"] = torch.ones(out) if scale is None else scale.flatten().expand(out).clone()
                else:
                    state[ours] = _cast(tensor if scale is None else tensor.float() * scale, ours, dtype)
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{path} is not a readable safetensors file ({first_line(e)})") from None
    _assign(model, state, path)


# ggml tensor types sora reads: type id -> (name, values per block, bytes per block)
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
              6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84),
              11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210)}
FLOAT_TYPES = (0, 1, 30)


class GGUFLinear(nn.Module):
    """A Linear whose weight stays in a ggml block format: `qweight` holds the raw blocks, one row per block, in
    the weight's row-major order; each call dequantises them on the layer's device."""

    def __init__(self, in_features: int, out_features: int, qtype: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features, self.qtype = in_features, out_features, qtype
        _, per_block, size = GGML_TYPES[qtype]
        self.register_buffer("qweight", torch.empty(in_features * out_features // per_block, size,
                                                    dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        return dequantize(self.qweight, self.qtype).reshape(self.out_features, self.in_features).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={GGML_TYPES[self.qtype][0]}"


def load_gguf(model: nn.Module, path: str | Path, dtype: torch.dtype) -> None:
    """Fill `model` (best built on the meta device) from a GGUF Wan transformer as city96 publishes them:
    quantised block linears become `GGUFLinear`s, every other tensor is dequantised now and cast to `dtype`
    (float32 for `FP32_PARAM_PATTERNS`). The file is memory-mapped and parsed by `gguf.GGUFReader`: no pickle."""
    try:
        import gguf
    except ImportError:
        raise ModelError("reading GGUF files needs the gguf package: pip install gguf") from None
    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as e:  # unknown tensor types and damaged headers included
        raise ModelError(f"{path} is not a readable GGUF file ({first_line(e)})") from None
    arch = reader.get_field("general.architecture")
    if arch is not None and arch.contents() != "wan":
        raise ModelError(f"{path} holds a {str(arch.contents())[:40]!r} model, not a Wan transformer")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    linears = block_linears(model)
    tensors = {t.name: t for t in reader.tensors}  # the reader refuses a name given twice
    names: dict[str, str] = {}  # sora's name -> the file's
    for t in reader.tensors:  # every name, type and shape checked before any weight is read
        ours = _our_name(path, t.name, _strip(t.name), expected, names)
        if int(t.tensor_type) not in GGML_TYPES:
            supported = ", ".join(name for name, _, _ in GGML_TYPES.values())
            raise ModelError(f"{path}: tensor {t.name!r} is {t.tensor_type.name}, a type sora does not read "
                             f"(it reads {supported})")
        _check_shape(path, t.name, _gguf_shape(reader, t), expected[ours])
        if t.n_elements != math.prod(expected[ours]):  # a recorded shape that its data does not fill
            raise ModelError(f"{path}: tensor {t.name!r} holds {t.n_elements} values, not {math.prod(expected[ours])}")
    _check_complete(path, set(names), expected)
    state: dict[str, Tensor] = {}
    for ours, key in names.items():
        t = tensors[key]
        qtype, shape = int(t.tensor_type), expected[ours]
        blocks = torch.from_numpy(np.array(t.data).view(np.uint8).reshape(-1, GGML_TYPES[qtype][2]))  # a copy
        module = ours.removesuffix(".weight")
        if module in linears and qtype not in FLOAT_TYPES:
            layer = linears[module]
            _replace(model, module, GGUFLinear(layer.in_features, layer.out_features, qtype, layer.bias is not None,
                                               device="meta"))
            state[f"{module}.qweight"] = blocks
        else:
            state[ours] = _cast(dequantize(blocks, qtype).reshape(shape), ours, dtype)
    _assign(model, state, path)


def dequantize(blocks: Tensor, qtype: int) -> Tensor:
    """ggml blocks (n, bytes per block) uint8 -> their values (n, values per block) float32, in torch, on the
    blocks' device. The layouts are ggml's (ggml-quants.c; gguf-py's quants.py reads them the same way); each
    value is computed in the same order of float32 operations as gguf-py, so both give the same numbers."""
    b = blocks
    if qtype in FLOAT_TYPES:
        return b.contiguous().view({0: torch.float32, 1: torch.float16, 30: torch.bfloat16}[qtype]).float()
    if qtype == 8:  # Q8_0: d, 32 int8
        return _f16(b[:, :2]) * b[:, 2:].contiguous().view(torch.int8).float()
    if qtype in (2, 3):  # Q4_0: d, 16 bytes of 4-bit values; Q4_1 adds a minimum m after d
        q = _nibbles(b[:, 2 * (qtype - 1):]).float()
        return _f16(b[:, :2]) * (q - 8) if qtype == 2 else _f16(b[:, :2]) * q + _f16(b[:, 2:4])
    if qtype in (6, 7):  # Q5_0 / Q5_1: as Q4_0 / Q4_1, with every value's fifth bit in 4 bytes before the nibbles
        start = 2 * (qtype - 5)
        q = (_nibbles(b[:, start + 4:]) | (_bits(b[:, start:start + 4, None], 1).flatten(1) << 4)).float()
        return _f16(b[:, :2]) * (q - 16) if qtype == 6 else _f16(b[:, :2]) * q + _f16(b[:, 2:4])
    n = b.shape[0]
    if qtype == 10:  # Q2_K: 16 (4-bit scale, 4-bit min) pairs, 64 bytes of 2-bit values, d, dmin
        scales, d, dmin = b[:, :16], _f16(b[:, 80:82]), _f16(b[:, 82:84])
        q = _bits(b[:, 16:80].reshape(n, 2, 32), 2).reshape(n, 16, 16).float()
        return ((d * (scales & 15).float())[..., None] * q - (dmin * (scales >> 4).float())[..., None]).reshape(n, 256)
    if qtype == 11:  # Q3_K: a high-bit mask, 64 bytes of 2-bit values, 16 packed 6-bit scales, d
        low, high = b[:, 96:104], b[:, 104:108]
        scales = torch.cat([low & 15, low >> 4], 1) | (_bits(high[:, None, :], 2).reshape(n, 16) << 4)
        q = _bits(b[:, 32:96].reshape(n, 2, 32), 2).reshape(n, 16, 16).to(torch.int16)
        q = q - ((_bits(b[:, None, :32], 1).reshape(n, 16, 16) ^ 1) << 2)  # a clear high bit subtracts 4
        return ((_f16(b[:, 108:110]) * (scales.to(torch.int16) - 32).float())[..., None] * q.float()).reshape(n, 256)
    if qtype in (12, 13):  # Q4_K / Q5_K: d, dmin, 8 packed 6-bit (scale, min) pairs, [Q5_K: 32 bytes of fifth
        # bits], 128 bytes of 4-bit values: sub-block 2i the low nibbles of bytes 32i.., 2i+1 their high ones
        scale, low = _scale_min(b[:, 4:16])
        q = torch.stack([b[:, -128:].reshape(n, 4, 32) & 15, b[:, -128:].reshape(n, 4, 32) >> 4], 2).reshape(n, 8, 32)
        if qtype == 13:
            q = q | (_bits(b[:, 16:48], 1) << 4)
        d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
        return ((d * scale.float())[..., None] * q.float() - (dmin * low.float())[..., None]).reshape(n, 256)
    if qtype == 14:  # Q6_K: 128 bytes of low nibbles, 64 of 2-bit high parts, 16 int8 scales, d
        ql = b[:, :128].reshape(n, 2, 64)
        ql = torch.stack([ql & 15, ql >> 4], 2).reshape(n, 8, 32)
        q = (ql | (_bits(b[:, 128:192].reshape(n, 2, 32), 2).reshape(n, 8, 32) << 4)).float() - 32
        d = _f16(b[:, 208:210]) * b[:, 192:208].contiguous().view(torch.int8).float()
        return (d[..., None] * q.reshape(n, 16, 16)).reshape(n, 256)
    raise ModelError(f"ggml type {qtype} is not one sora reads")


def _f16(b: Tensor) -> Tensor:
    """Little-endian float16 fields (n, 2k) bytes -> (n, k) float32."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(b: Tensor) -> Tensor:
    """(n, k) bytes -> (n, 2k): the low nibbles of all k bytes, then the high ones (ggml's order in a block)."""
    return torch.cat([b & 15, b >> 4], dim=-1)


def _bits(b: Tensor, width: int) -> Tensor:
    """(..., k) bytes -> (..., 8/width, k) fields of `width` bits, the lowest bits first."""
    return torch.stack([(b >> shift) & ((1 << width) - 1) for shift in range(0, 8, width)], dim=-2)


def _scale_min(s: Tensor) -> tuple[Tensor, Tensor]:
    """The 8 (scale, min) pairs of a Q4_K / Q5_K block from its 12 bytes: pairs 0-3 are the low 6 bits of bytes
    0-3 and 4-7; pairs 4-7 take their low 4 bits from bytes 8-11 and their top 2 from the top of bytes 0-7."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    scale = torch.cat([d & 63, (md & 15) | ((d >> 2) & 48)], dim=1)
    low = torch.cat([m & 63, (md >> 4) | ((m >> 2) & 48)], dim=1)
    return scale, low


def _gguf_shape(reader, t) -> tuple[int, ...]:
    """A GGUF tensor's torch shape: its dims reversed (ggml lists the fastest first), or the shape ComfyUI-GGUF
    records under `comfy.gguf.orig_shape.<name>` for a tensor it stored flattened (5D convolutions and rows that
    are not whole blocks)."""
    recorded = reader.get_field(f"comfy.gguf.orig_shape.{t.name}")
    if recorded is not None:
        return tuple(int(v) for v in recorded.contents())
    return tuple(int(v) for v in reversed(t.shape.tolist()))


def _strip(key: str) -> str:
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _our_name(path: Path, key: str, wan: str, expected: dict, seen: dict[str, str]) -> str:
    """sora's parameter name for a key in Wan's original layout, recorded in `seen`; a ModelError when it names
    none, or one an earlier key named."""
    module, _, leaf = wan.rpartition(".")
    ours = to_ours(wan)  # a bare parameter: blocks.N.modulation, head.modulation
    if ours is None and module:
        mapped = to_ours(module)
        ours = f"{mapped}.{leaf}" if mapped else wan if wan.split(".")[0] in SHARED_NAMES else None
    if ours not in expected:
        raise ModelError(f"{path}: {key!r} names no weight of this transformer (a checkpoint of another model?)")
    if ours in seen:
        raise ModelError(f"{path}: {key!r} and {seen[ours]!r} both give {ours}")
    seen[ours] = key
    return ours


def _check_shape(path: Path, key: str, shape: tuple, expected: tuple) -> None:
    if tuple(shape) != tuple(expected):
        raise ModelError(f"{path}: {key!r} has shape {tuple(shape)}, this transformer's {tuple(expected)} "
                         f"(a checkpoint of another size?)")


def _check_complete(path: Path, found: set[str], expected: dict) -> None:
    missing = sorted(set(expected) - found)
    if missing:
        raise ModelError(f"{path} lacks {missing[0]} ({len(missing)} of this transformer's weights missing)")


def _cast(tensor: Tensor, name: str, dtype: torch.dtype) -> Tensor:
    return tensor.to(torch.float32 if any(p in name for p in FP32_PARAM_PATTERNS) else dtype)


def _assign(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Load `state` into `model` (strict; the tensors themselves, so fp8 and raw blocks keep their dtype)."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # not expected: every name and shape was checked before
        raise ModelError(f"{path} does not fit this transformer: {first_line(e)}") from None


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, layer)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()
