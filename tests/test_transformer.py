"""Parity of sora_cli.models.wan.transformer with diffusers' WanTransformer3DModel (the oracle).

A tiny diffusers model with every weight randomised is saved with save_pretrained; our code
loads it from config.json + safetensors (meta device, strict, assign) and must reproduce the
oracle's output.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from sora_cli.models.wan.transformer import TransformerConfig, WanTransformer, frame_timesteps_to_tokens

diffusers = pytest.importorskip("diffusers")

TINY = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=16,  # rope split (t, h, w) = (8, 4, 4): unequal, so axis order matters
    in_channels=4,
    out_channels=4,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    rope_max_seq_len=32,
)
TEXT_LEN = 7
ATOL = 1e-4


def _randomize(model: torch.nn.Module, seed: int) -> None:
    # every parameter, including norm weights and scale/shift tables that init to constants
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_qk_norm = name.endswith(("norm_q.weight", "norm_k.weight"))
            p.copy_(1.0 + 0.3 * noise if is_qk_norm else 0.3 * noise)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(**TINY).eval()
    _randomize(ref, seed=1)
    path = tmp_path_factory.mktemp("wan_dit")
    ref.save_pretrained(path, safe_serialization=True)
    return ref, path


def _load_ours(path) -> WanTransformer:
    cfg = TransformerConfig.from_dict(json.loads((path / "config.json").read_text()))
    with torch.device("meta"):
        model = WanTransformer(cfg)
    model.load_state_dict(load_file(path / "diffusion_pytorch_model.safetensors"), strict=True, assign=True)
    return model.eval()


@pytest.fixture(scope="module")
def ours(saved):
    return _load_ours(saved[1])


def _inputs(b: int, f: int, h: int, w: int, seed: int, channels: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, channels, f, h, w, generator=g)
    context = torch.randn(b, TEXT_LEN, TINY["text_dim"], generator=g)
    context[:, 5:] = 0.0  # zero padding past the prompt, as the text encoder produces
    return x, context


def _ref(ref, x, t, context) -> torch.Tensor:
    with torch.no_grad():
        return ref(x, t, context, return_dict=False)[0]


SHAPES = [(2, 1, 4, 6), (2, 2, 6, 4), (2, 3, 4, 8), (1, 5, 2, 6)]  # (B, F, H, W): H != W, F in 1/2/3/5


@pytest.mark.parametrize("shape", SHAPES)
def test_parity_per_sample_timestep(saved, ours, shape):
    ref, _ = saved
    b, f, h, w = shape
    x, context = _inputs(b, f, h, w, seed=sum(shape))
    t = torch.tensor([937.0, 251.5])[:b]
    expected = _ref(ref, x, t, context)
    with torch.no_grad():
        got = ours(x, t, context)
    assert got.shape == (b, TINY["out_channels"], f, h, w)
    err = (got - expected).abs().max().item()
    print(f"per-sample {shape}: max abs err {err:.3e} (output max {expected.abs().max():.2f})")
    assert err < ATOL


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (2, 5, 6, 4), (2, 2, 2, 8)])
def test_parity_per_token_timestep_first_frame_clean(saved, ours, shape):
    ref, _ = saved
    b, f, h, w = shape
    x, context = _inputs(b, f, h, w, seed=100 + sum(shape))
    grid = ours.token_grid(f, h, w)
    t_frames = torch.tensor([[800.0] * f, [312.25] * f])
    t_frames[:, 0] = 0.0  # known first latent frame: clean tokens
    t_frames[1, -1] = 77.0  # a third distinct value
    t = frame_timesteps_to_tokens(t_frames, grid)  # (B, L)
    expected = _ref(ref, x, t, context)
    with torch.no_grad():
        got = ours(x, t, context)
    err = (got - expected).abs().max().item()
    print(f"per-token {shape}: max abs err {err:.3e}")
    assert err < ATOL


def test_parity_per_token_random_values(saved, ours):
    ref, _ = saved
    x, context = _inputs(2, 2, 4, 6, seed=7)
    n = ours.token_grid(2, 4, 6)
    t = torch.randint(0, 1000, (2, n[0] * n[1] * n[2])).float()
    t[:, ::3] = 0.0
    expected = _ref(ref, x, t, context)
    with torch.no_grad():
        got = ours(x, t, context)
    err = (got - expected).abs().max().item()
    print(f"per-token random: max abs err {err:.3e}")
    assert err < ATOL


def test_per_token_constant_equals_per_sample(ours):
    x, context = _inputs(2, 2, 4, 6, seed=3)
    t = torch.tensor([600.0, 20.0])
    l = 2 * 2 * 3
    with torch.no_grad():
        a = ours(x, t, context)
        b = ours(x, t[:, None].expand(2, l), context)
        c = ours(x, torch.tensor(600.0), context)  # 0-d: shared by the batch
        d = ours(x, torch.tensor([600.0, 600.0]), context)
    assert (a - b).abs().max().item() < 1e-5
    assert (c - d).abs().max().item() < 1e-5


def test_timestep_changes_output(ours):
    # guards against the time path being silently ignored
    x, context = _inputs(1, 2, 4, 4, seed=4)
    with torch.no_grad():
        a = ours(x, torch.tensor([10.0]), context)
        b = ours(x, torch.tensor([900.0]), context)
    assert (a - b).abs().max().item() > 1e-2


def test_frame_timesteps_to_tokens_raster_order():
    t = frame_timesteps_to_tokens(torch.tensor([[0.0, 5.0, 9.0]]), (3, 2, 4))
    assert t.shape == (1, 24)
    assert torch.equal(t.reshape(1, 3, 2, 4)[0, :, 1, 2], torch.tensor([0.0, 5.0, 9.0]))
    assert torch.equal(t[0, :8], torch.zeros(8))
    with pytest.raises(ValueError):
        frame_timesteps_to_tokens(torch.zeros(1, 2), (3, 2, 4))


def test_bf16_close_to_diffusers_bf16(saved):
    ref_fp32, path = saved
    ref = diffusers.WanTransformer3DModel.from_pretrained(path, torch_dtype=torch.bfloat16).eval()
    model = _load_ours(path).cast_params(torch.bfloat16)
    assert model.scale_shift_table.dtype == torch.float32  # fp32 islands kept
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    x, context = _inputs(2, 2, 4, 6, seed=11)
    t = torch.tensor([500.0, 40.0])
    expected = _ref(ref, x.bfloat16(), t, context.bfloat16()).float()
    exact = _ref(ref_fp32, x, t, context)
    with torch.no_grad():
        got = model(x.bfloat16(), t, context.bfloat16()).float()
    err = (got - expected).abs().max().item()
    scale = exact.abs().max().item()
    drift = (got - exact).abs().max().item()
    print(f"bf16 vs diffusers bf16: max abs err {err:.3e}; vs fp32 {drift:.3e} (scale {scale:.2f})")
    assert err < 2e-2 * scale


def test_differentiable(ours):
    x, context = _inputs(1, 2, 4, 4, seed=5)
    x.requires_grad_(True)
    t = frame_timesteps_to_tokens(torch.tensor([[0.0, 700.0]]), ours.token_grid(2, 4, 4))
    ours(x, t, context).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in ours.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    ours.zero_grad(set_to_none=True)
    assert not missing, missing


def test_config_roundtrip_and_saved_json(saved):
    _, path = saved
    on_disk = json.loads((path / "config.json").read_text())
    cfg = TransformerConfig.from_dict(on_disk)  # carries _class_name, _diffusers_version, ...
    for k, v in TINY.items():
        assert getattr(cfg, k) == v, k
    assert cfg.qk_norm == "rms_norm_across_heads" and cfg.cross_attn_norm is True
    d = cfg.to_dict()
    assert d["_class_name"] == "WanTransformer3DModel"
    assert TransformerConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert TransformerConfig.from_dict({**d, "some_future_key": 3}) == cfg
    # the oracle accepts what we write, and builds the same parameter layout
    ref = diffusers.WanTransformer3DModel.from_config(d)
    with torch.device("meta"):
        ours = WanTransformer(cfg)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert TransformerConfig.from_dict({}) == TransformerConfig()
    assert TransformerConfig.from_dict({"in_channels": 36, "out_channels": None}).out_channels == 36


@pytest.mark.parametrize("keys", [dict(image_dim=1280), dict(added_kv_proj_dim=32), dict(pos_embed_seq_len=514)])
def test_image_keys_come_together(keys):
    with pytest.raises(ValueError, match="image_dim and added_kv_proj_dim come together"):
        TransformerConfig.from_dict({**TINY, **keys})
    with pytest.raises(ValueError, match="image-to-video"):
        WanTransformer(TransformerConfig(**{**TINY, **keys}))


@pytest.mark.parametrize("pairs", [1, 2])  # Wan 2.1 I2V's image tokens; FLF2V's, two frames' with positions
@torch.no_grad()
def test_image_to_video_matches_diffusers(pairs, tmp_path):
    config = dict(TINY, in_channels=12, image_dim=8, added_kv_proj_dim=32,
                  pos_embed_seq_len=None if pairs == 1 else 2 * 5)
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(**config).eval()
    _randomize(ref, seed=2)
    ref.save_pretrained(tmp_path)
    ours = _load_ours(tmp_path)
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 12, 3, 4, 6, generator=g), torch.tensor([500.0, 20.0])
    context = torch.randn(2, 512, 32, generator=g)  # diffusers finds the image tokens 512 text tokens back
    image = torch.randn(2, 5 * pairs, 8, generator=g)
    expected = ref(x, t, context, encoder_hidden_states_image=image.view(-1, 5, 8), return_dict=False)[0]
    got = ours(x, t, context, image=image)
    assert expected.std() > 0.1 and (got - expected).abs().max() < ATOL
    assert (ours(x, t, context, image=image.flip(0)) - got).abs().max() > 1e-2  # the image tokens matter


def test_rejects_bad_shapes(ours):
    x, context = _inputs(2, 2, 5, 4, seed=6)
    with pytest.raises(ValueError):
        ours(x, torch.tensor([1.0, 2.0]), context)
    x, context = _inputs(2, 2, 4, 4, seed=6)
    with pytest.raises(ValueError):
        ours(x, torch.ones(2, 7), context)
