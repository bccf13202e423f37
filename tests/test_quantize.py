"""Quantised Wan transformers (sora_cli.quantize), on a tiny random model, all on the CPU: the fp8 conversion,
fp8 single-file checkpoints in Wan's original layout, and GGUF files written by gguf-py and read back against
gguf-py's own dequantisation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sora_cli.errors import ModelError
from sora_cli.models.wan.transformer import TransformerConfig, WanTransformer
from sora_cli.quantize import GGML_TYPES, Fp8Linear, GGUFLinear, dequantize, load_gguf, load_single_file, to_fp8

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

# Widths of 256 so that every linear layer's rows are whole K-quant blocks (256 values).
CONFIG = TransformerConfig(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=4,
                           out_channels=4, text_dim=256, freq_dim=256, ffn_dim=256, num_layers=2, rope_max_seq_len=32)
BLOCK_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                 "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")
PREFIX = "model.diffusion_model."


def random_model(seed: int = 0) -> WanTransformer:
    """Default-initialised linear layers; norms randomised too (they init to constants), and modulation tables
    large enough that the blocks make most of the output (79%; 18% with their initial ones), as in a trained
    model, so that what quantising them changes shows."""
    torch.manual_seed(seed)
    model = WanTransformer(CONFIG).eval().requires_grad_(False)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape))
        elif "scale_shift_table" in name:
            p.copy_(torch.randn(p.shape))
    return model


def meta_model() -> WanTransformer:
    with torch.device("meta"):
        return WanTransformer(CONFIG)


def run(model: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, 3, 4, 6, generator=g), torch.randn(2, 7, CONFIG.text_dim, generator=g)
    with torch.no_grad():
        return model.eval()(x, torch.tensor([800.0, 150.0]), context).float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# sora's (diffusers') names -> Wan's original ones, written out here independently of quantize.py and checked
# against diffusers' own converter below; applied in order.
WAN_RULES = [(r"attn1\.to_out\.0\.", "self_attn.o."), (r"attn2\.to_out\.0\.", "cross_attn.o."),
             (r"attn1\.(to_)?", "self_attn."), (r"attn2\.(to_)?", "cross_attn."), (r"\.norm2\.", ".norm3."),
             (r"ffn\.net\.0\.proj\.", "ffn.0."), (r"ffn\.net\.2\.", "ffn.2."),
             (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
             (r"^scale_shift_table$", "head.modulation"),
             (r"^condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
             (r"^condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
             (r"^condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
             (r"^condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
             (r"^condition_embedder\.time_proj", "time_projection.1"), (r"^proj_out", "head.head")]


def wan_name(ours: str) -> str:
    for pattern, replacement in WAN_RULES:
        ours = re.sub(pattern, replacement, ours)
    return ours


def wan_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    return {wan_name(k): v.clone() for k, v in model.state_dict().items()}


def wan_layout_of(component: Path) -> dict[str, torch.Tensor]:
    """A model folder's transformer weights as one state dict in Wan's own names (a single-file checkpoint)."""
    from safetensors.torch import load_file

    state = {}
    for path in sorted(component.glob("*.safetensors")):
        state |= load_file(str(path))
    return {wan_name(k): v for k, v in state.items()}


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of a model as float32 under sora's names; quantised layers' dequantised."""
    out = {f"{name}.weight": m.dequantized(torch.float32) for name, m in model.named_modules()
           if isinstance(m, (Fp8Linear, GGUFLinear))}
    for name, t in model.state_dict().items():
        if name not in out and not name.endswith((".qweight", ".scale")):
            out[name] = t.float()
    return out


def float_model(state: dict[str, torch.Tensor]) -> WanTransformer:
    model = meta_model()
    model.load_state_dict(state, strict=True, assign=True)
    return model


@pytest.fixture(scope="module")
def model() -> WanTransformer:
    return random_model()


def test_wan_layout_is_the_one_diffusers_converts(model):
    """The test's Wan names are the original code's: diffusers' converter maps them back to ours, tensor for tensor."""
    single_file = pytest.importorskip("diffusers.loaders.single_file_utils")
    wan = {PREFIX + k: v for k, v in wan_layout(model).items()}
    converted = single_file.convert_wan_transformer_to_diffusers(dict(wan))
    assert set(converted) == set(model.state_dict())
    assert all(torch.equal(converted[k], v) for k, v in model.state_dict().items())


# ---- fp8, weight-only ----

def test_to_fp8_stays_close_and_stores_a_quarter(model):
    expected = run(model)
    fp8 = random_model()
    float_bytes = {name: m.weight.numel() * 4 for name, m in fp8.named_modules() if type(m) is nn.Linear}
    saved = to_fp8(fp8)
    converted = {name: m for name, m in fp8.named_modules() if isinstance(m, Fp8Linear)}
    assert set(converted) == {f"blocks.{i}.{n}" for i in range(CONFIG.num_layers) for n in BLOCK_LINEARS}
    stored = 0
    for name, layer in converted.items():
        assert layer.weight.dtype == torch.float8_e4m3fn and layer.scale.dtype == torch.float32
        ratio = (layer.weight.numel() + 4 * layer.scale.numel()) / float_bytes[name]
        assert ratio < 0.26  # 1/4 + one float32 scale per 256-value row
        stored += layer.weight.numel() + 4 * layer.scale.numel()
    assert saved == sum(float_bytes[n] for n in converted) - stored
    # everything else is as it was
    for name in ("condition_embedder.time_proj", "condition_embedder.text_embedder.linear_1", "proj_out"):
        assert type(fp8.get_submodule(name)) is nn.Linear and fp8.get_submodule(name).weight.dtype == torch.float32
    assert fp8.blocks[0].scale_shift_table.dtype == torch.float32 and fp8.patch_embedding.weight.dtype == torch.float32
    # per-channel e4m3: measured 2.6e-2 relative error of the output against the float32 model
    err = rel(run(fp8), expected)
    print(f"fp8 output relative error {err:.2e}")
    assert err < 0.035


def test_fp8_linear_is_exact_fp8_times_its_scale():
    torch.manual_seed(0)
    linear = nn.Linear(64, 8)
    with torch.no_grad():
        linear.weight[3] = 0.0  # an all-zero row keeps a usable scale
    layer = Fp8Linear.from_linear(linear)
    w = layer.weight.float() * layer.scale[:, None]
    assert torch.isfinite(w).all() and torch.equal(w[3], torch.zeros(64))
    assert torch.equal(layer.weight.float().abs().amax(1)[[0, 1, 2, 4]], torch.full((4,), 448.0))
    x = torch.randn(5, 64)
    assert torch.allclose(layer(x), x @ w.T + linear.bias, atol=1e-6)
    assert layer(x.bfloat16()).dtype == torch.bfloat16


# ---- published fp8 single files ----

def fp8_file(path, model: nn.Module, scaled: bool, extra: dict | None = None) -> dict[str, torch.Tensor]:
    """The model in Wan's layout, as ComfyUI's fp8 files: block linears' weights in float8_e4m3fn (with a
    per-tensor scale_weight and the scaled_fp8 marker when `scaled`, else cast as they are), the rest bf16 (fp32
    for the modulation tables). Returns what each fp8 weight should dequantise to, by sora's name."""
    tensors, expected = {}, {}
    linears = {f"blocks.{i}.{n}.weight" for i in range(CONFIG.num_layers) for n in BLOCK_LINEARS}
    for ours, t in model.state_dict().items():
        key = PREFIX + wan_name(ours)
        if ours in linears:
            scale = t.abs().amax() / 448 if scaled else torch.tensor(1.0)
            tensors[key] = (t / scale).to(torch.float8_e4m3fn)
            expected[ours] = tensors[key].float() * scale
            if scaled:
                tensors[key.removesuffix("weight") + "scale_weight"] = scale.reshape(1)
        else:
            tensors[key] = t.float() if "modulation" in key else t.to(torch.bfloat16)
    if scaled:
        tensors[PREFIX + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(tensors | (extra or {}), path)
    return expected


# Relative difference of the output from to_fp8's: measured 1.5e-2 with a per-tensor scale, 4.7e-2 without one (a
# plain cast leaves these small weights, |w| < 1/16, among e4m3's coarse subnormals), and 2.7e-2 and 2.9e-2 from
# the float32 model's.
@pytest.mark.parametrize("scaled, bound", [(True, 0.02), (False, 0.06)])
def test_single_file_fp8(model, tmp_path, scaled, bound):
    path = tmp_path / "wan2.1_t2v_fp8_e4m3fn.safetensors"
    expected = fp8_file(path, model, scaled)
    loaded = meta_model()
    load_single_file(loaded, path, torch.float32)
    got = weights(loaded)
    for name, w in expected.items():
        layer = loaded.get_submodule(name.removesuffix(".weight"))
        assert isinstance(layer, Fp8Linear) and layer.weight.dtype == torch.float8_e4m3fn
        assert torch.equal(got[name], w)  # the per-tensor scale folded into the per-channel one, exactly
    for name, w in model.state_dict().items():
        if name not in expected and "scale_shift_table" not in name:
            assert torch.equal(got[name], w.bfloat16().float())
    fp8 = random_model()
    to_fp8(fp8)
    out = run(loaded)
    err, err_float = rel(out, run(fp8)), rel(out, run(model))
    print(f"single-file fp8 (scaled={scaled}): {err:.2e} from to_fp8's output, {err_float:.2e} from float32")
    assert err < bound and err_float < 0.035


def test_single_file_dtypes(model, tmp_path):
    path = tmp_path / "wan.safetensors"
    fp8_file(path, model, scaled=True)
    loaded = meta_model()
    load_single_file(loaded, path, torch.bfloat16)
    assert loaded.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert loaded.blocks[0].attn1.to_q.bias.dtype == torch.bfloat16
    assert loaded.condition_embedder.text_embedder.linear_1.weight.dtype == torch.bfloat16
    assert loaded.proj_out.weight.dtype == torch.bfloat16
    for fp32 in ("blocks.0.scale_shift_table", "scale_shift_table", "blocks.1.norm2.weight",
                 "condition_embedder.time_embedder.linear_1.weight"):
        assert loaded.state_dict()[fp32].dtype == torch.float32, fp32


@pytest.mark.parametrize("change, named", [
    ({PREFIX + "blocks.0.self_attn.extra.weight": torch.zeros(3)}, "blocks.0.self_attn.extra.weight"),
    ({PREFIX + "blocks.1.ffn.0.bias": torch.zeros(7)}, "blocks.1.ffn.0.bias"),
    ({"diffusion_model.blocks.0.self_attn.q.weight": torch.zeros(256, 256)}, "blocks.0.self_attn.q.weight"),  # twice
    ({PREFIX + "blocks.0.ffn.0.scale_weight": torch.ones(5)}, "blocks.0.ffn.0.scale_weight"),
])
def test_single_file_refuses_what_does_not_fit(model, tmp_path, change, named):
    path = tmp_path / "bad.safetensors"
    fp8_file(path, model, scaled=True, extra=change)
    with pytest.raises(ModelError, match=re.escape(named)):
        load_single_file(meta_model(), path, torch.float32)


def test_single_file_names_a_missing_weight(model, tmp_path):
    path = tmp_path / "short.safetensors"
    state = {PREFIX + wan_name(k): v for k, v in model.state_dict().items() if k != "blocks.1.attn2.norm_k.weight"}
    save_file(state, path)
    with pytest.raises(ModelError, match=r"lacks blocks\.1\.attn2\.norm_k\.weight"):
        load_single_file(meta_model(), path, torch.float32)


# ---- GGUF ----

K_FIELDS = {Q.Q2_K: ((80, 4e-3), (82, 4e-3)), Q.Q3_K: ((108, 2e-3),), Q.Q4_K: ((0, 3e-4), (2, 3e-3)),
            Q.Q5_K: ((0, 1.5e-4), (2, 3e-3)), Q.Q6_K: ((208, 7e-5),)}  # fp16 scale fields: (offset, magnitude)


def random_k_blocks(qtype, shape: tuple[int, int], rng) -> np.ndarray:
    """gguf-py cannot quantise to K formats: random bytes in the block layout, with the fp16 super-block scales
    set to finite values of a weight-like magnitude (weights up to about 0.3)."""
    per, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(shape[0] * shape[1] // per, size), dtype=np.uint8)
    for offset, magnitude in K_FIELDS[qtype]:
        d = (rng.uniform(0.5, 1.0, blocks.shape[0]) * magnitude).astype(np.float16)
        blocks[:, offset:offset + 2] = d.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(shape[0], -1)


def write_gguf(path, model: nn.Module, qtype, rng) -> dict[str, torch.Tensor]:
    """The model as a city96 GGUF: Wan's names, every 2D weight whose rows are whole blocks in `qtype` (block
    linears, embeddings, head), the rest F32, the 5D patch embedding stored 2D in F16 with its shape in
    `comfy.gguf.orig_shape.*`. Returns gguf-py's dequantisation of every tensor, by sora's name."""
    writer = gguf.GGUFWriter(str(path), "wan")
    expected = {}
    for ours, t in model.state_dict().items():
        key, data = wan_name(ours), t.numpy()
        if t.ndim == 5:
            writer.add_array(f"comfy.gguf.orig_shape.{key}", list(t.shape))
            kind, data = Q.F16, data.reshape(t.shape[0], -1)
        elif t.ndim == 2 and t.shape[1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
            kind = qtype
        else:
            kind = Q.F32
        raw = random_k_blocks(kind, t.shape, rng) if kind in K_FIELDS else gguf.quants.quantize(data, kind)
        writer.add_tensor(key, raw, raw_dtype=kind)
        expected[ours] = torch.from_numpy(gguf.quants.dequantize(raw, kind).astype(np.float32)).reshape(t.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


QUANTISED = [Q.Q8_0, Q.Q6_K, Q.Q5_K, Q.Q4_K, Q.Q3_K, Q.Q2_K, Q.Q5_1, Q.Q5_0, Q.Q4_1, Q.Q4_0]


def test_the_type_table_is_ggml_s():
    for qtype, (name, per, size) in GGML_TYPES.items():
        assert Q[name] == qtype and gguf.GGML_QUANT_SIZES[Q[name]] == (per, size)


@pytest.mark.parametrize("qtype", QUANTISED + [Q.BF16, Q.F16, Q.F32], ids=lambda q: q.name)
def test_gguf_equals_gguf_py_dequantisation(model, tmp_path, qtype):
    path = tmp_path / f"wan2.1-t2v-{qtype.name}.gguf"
    expected = write_gguf(path, model, qtype, np.random.default_rng(int(qtype)))
    loaded = meta_model()
    load_gguf(loaded, path, torch.float32)
    got = weights(loaded)
    assert set(got) == set(expected)
    for name, w in expected.items():
        assert torch.equal(got[name], w), name  # bit for bit
    for i in range(CONFIG.num_layers):
        for n in BLOCK_LINEARS:
            layer = loaded.get_submodule(f"blocks.{i}.{n}")
            if qtype in QUANTISED:
                assert isinstance(layer, GGUFLinear) and layer.qweight.dtype == torch.uint8 and layer.qtype == qtype
            else:
                assert type(layer) is nn.Linear and layer.weight.dtype == torch.float32
    assert type(loaded.condition_embedder.time_proj) is nn.Linear  # dequantised at load, outside the blocks
    # the same arithmetic on the same weights: measured identical
    assert torch.equal(run(loaded), run(float_model(expected)))


def test_gguf_q8_0_stays_close_to_the_float_model(model, tmp_path):
    path = tmp_path / "q8.gguf"
    write_gguf(path, model, Q.Q8_0, np.random.default_rng(0))
    loaded = meta_model()
    load_gguf(loaded, path, torch.float32)
    err = rel(run(loaded), run(model))
    print(f"Q8_0 output relative error {err:.2e}")
    assert err < 6e-3  # measured 4.5e-3


def test_gguf_layer_runs_in_the_input_dtype():
    rng = np.random.default_rng(0)
    raw = random_k_blocks(Q.Q4_K, (8, 256), rng)
    layer = GGUFLinear(256, 8, int(Q.Q4_K))
    layer.qweight = torch.from_numpy(raw.reshape(-1, 144))
    w = torch.from_numpy(gguf.quants.dequantize(raw, Q.Q4_K))
    assert torch.equal(dequantize(layer.qweight, int(Q.Q4_K)).reshape(8, 256), w)
    x = torch.randn(3, 256)
    assert torch.allclose(layer(x), x @ w.T + layer.bias, atol=1e-5)
    assert layer(x.bfloat16()).dtype == torch.bfloat16


def _tiny_gguf(path, tensors: dict, arch: str = "wan") -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    for key, (raw, kind) in tensors.items():
        writer.add_tensor(key, raw, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_refuses_types_it_does_not_read(tmp_path):
    weight = "blocks.0.ffn.0.weight"
    iq = np.random.default_rng(0).integers(0, 256, size=(256, 8 * 18), dtype=np.uint8)  # IQ4_NL: 18 bytes / 32
    _tiny_gguf(tmp_path / "iq.gguf", {weight: (iq, Q.IQ4_NL)})
    with pytest.raises(ModelError, match=r"'blocks\.0\.ffn\.0\.weight' is IQ4_NL, a type sora does not read"):
        load_gguf(meta_model(), tmp_path / "iq.gguf", torch.float32)
    # a type id ggml does not have at all: the tensor's type field rewritten to 99
    _tiny_gguf(tmp_path / "q8.gguf", {weight: (gguf.quants.quantize(np.zeros((256, 256), np.float32), Q.Q8_0),
                                               Q.Q8_0)})
    data = bytearray((tmp_path / "q8.gguf").read_bytes())
    name = weight.encode()
    at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
    dims = int.from_bytes(data[at:at + 4], "little")
    data[at + 4 + 8 * dims:at + 8 + 8 * dims] = (99).to_bytes(4, "little")
    (tmp_path / "99.gguf").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="not a readable GGUF file"):
        load_gguf(meta_model(), tmp_path / "99.gguf", torch.float32)


def test_gguf_refuses_other_files(tmp_path):
    zeros = np.zeros((3,), np.float32)
    _tiny_gguf(tmp_path / "key.gguf", {"blocks.0.self_attn.extra.weight": (zeros, Q.F32)})
    with pytest.raises(ModelError, match=r"'blocks\.0\.self_attn\.extra\.weight' names no weight"):
        load_gguf(meta_model(), tmp_path / "key.gguf", torch.float32)
    _tiny_gguf(tmp_path / "shape.gguf", {"blocks.1.ffn.2.bias": (zeros, Q.F32)})
    with pytest.raises(ModelError, match=r"'blocks\.1\.ffn\.2\.bias' has shape \(3,\)"):
        load_gguf(meta_model(), tmp_path / "shape.gguf", torch.float32)
    _tiny_gguf(tmp_path / "flux.gguf", {"img_in.weight": (zeros, Q.F32)}, arch="flux")
    with pytest.raises(ModelError, match="'flux' model, not a Wan transformer"):
        load_gguf(meta_model(), tmp_path / "flux.gguf", torch.float32)
    (tmp_path / "text.gguf").write_text("not a gguf file")
    with pytest.raises(ModelError, match="not a readable GGUF file"):
        load_gguf(meta_model(), tmp_path / "text.gguf", torch.float32)


# From the command line, on the tiny random Wan of the other tests (conftest.py).
def render(capsys, folder, out, *args) -> tuple[np.ndarray, dict]:
    import json

    from sora_cli.video import read_video
    from test_cli import call_sora
    from test_pipeline import PROMPT

    code, stdout, err = call_sora(capsys, "generate", PROMPT, "--model", str(folder), "--seed", "5", "--json",
                                  "--out", str(out), *args)
    assert code == 0, err
    return read_video(out)[0], json.loads(stdout)


@pytest.fixture(scope="module")
def without_weights(tiny_wan_dir, tmp_path_factory):
    """The tiny model folder without its transformer's weights, and those weights as single files."""
    import shutil

    folder = tmp_path_factory.mktemp("single") / "model"
    shutil.copytree(tiny_wan_dir, folder)
    state = wan_layout_of(folder / "transformer")
    for path in (folder / "transformer").glob("*.safetensors*"):
        path.unlink()
    save_file({PREFIX + k: v for k, v in state.items()}, str(folder.parent / "wan.safetensors"))
    return folder


def test_a_single_file_transformer_replaces_the_folders_weights(tiny_wan_dir, without_weights, tmp_path, capsys):
    own, _ = render(capsys, tiny_wan_dir, tmp_path / "own.mp4")
    single, record = render(capsys, without_weights, tmp_path / "single.mp4", "--transformer",
                            str(without_weights.parent / "wan.safetensors"))
    assert np.array_equal(own, single) and record["transformer"] == "wan.safetensors"


def test_fp8_and_gguf_render_from_the_command_line(tiny_wan_dir, without_weights, tmp_path, capsys):
    from sora_cli.loading import load_module
    from sora_cli.spec import ModelSpec

    own, _ = render(capsys, tiny_wan_dir, tmp_path / "own.mp4")
    fp8, record = render(capsys, tiny_wan_dir, tmp_path / "fp8.mp4", "--quantize", "fp8")
    assert record["quantize"] == "fp8"
    # weight rounding moves the tiny random model's pixels a little (measured: a mean of about 1 level)
    assert np.abs(fp8.astype(int) - own.astype(int)).mean() < 4
    spec = ModelSpec.read(tiny_wan_dir)
    model = load_module(lambda: WanTransformer(spec.transformer), tiny_wan_dir / "transformer", "cpu", torch.float32)
    write_gguf(tmp_path / "wan-Q8_0.gguf", model, Q.Q8_0, np.random.default_rng(0))
    q8, record = render(capsys, without_weights, tmp_path / "q8.mp4", "--transformer", str(tmp_path / "wan-Q8_0.gguf"))
    assert record["transformer"] == "wan-Q8_0.gguf" and np.abs(q8.astype(int) - own.astype(int)).mean() < 4


def test_a_lora_cannot_merge_into_a_quantised_file(tiny_wan_dir, tmp_path, capsys):
    from conftest import random_lora
    from sora_cli.loading import load_module
    from sora_cli.spec import ModelSpec
    from test_cli import call_sora

    spec = ModelSpec.read(tiny_wan_dir)
    model = load_module(lambda: WanTransformer(spec.transformer), tiny_wan_dir / "transformer", "cpu", torch.float32)
    write_gguf(tmp_path / "wan.gguf", model, Q.Q8_0, np.random.default_rng(0))
    save_file(random_lora(tiny_wan_dir), str(tmp_path / "style.safetensors"))
    code, _, err = call_sora(capsys, "generate", "x", "--model", str(tiny_wan_dir), "--transformer",
                             str(tmp_path / "wan.gguf"), "--lora", str(tmp_path / "style.safetensors"),
                             "--out", str(tmp_path / "x.mp4"))
    assert code == 2 and "merges into float weights" in err and not (tmp_path / "x.mp4").exists()
