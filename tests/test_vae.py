"""Parity of our Wan 2.1 and Wan 2.2 VAEs with Diffusers' AutoencoderKLWan on tiny random models."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from sora_cli.models.wan.vae import VAEConfig, WanVAE, streaming

diffusers = pytest.importorskip("diffusers")

Z = 4
TINY = dict(base_dim=8, z_dim=Z, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
            latents_mean=[0.3, -0.7, 1.2, -0.1], latents_std=[1.7, 0.6, 2.4, 1.1])
# Three shapes of network: channel changes everywhere, constant width with the shortcut convs absent, and Wan 2.2's
# (2x2 pixel patches folded into channels, parameter-free shortcuts around every down and up block, stride 16).
WAN22 = dict(is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16)
CONFIGS = {"wide": TINY, "flat": dict(TINY, base_dim=6, dim_mult=[1, 1, 1, 1]), "wan22": dict(TINY, **WAN22)}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, gains included, at a scale that keeps activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def load_ours(folder) -> WanVAE:
    cfg = VAEConfig.from_dict(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        vae = WanVAE(cfg)
    vae.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"), strict=True, assign=True)
    return vae.eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    ref = diffusers.AutoencoderKLWan(**CONFIGS[request.param]).eval()
    randomise(ref, seed=0)
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    return ref, load_ours(folder), request.param


def stats(ref) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    return mean, std


def video(b: int, t: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("t,h,w", [(1, 2, 3), (5, 3, 2), (9, 2, 4), (13, 3, 2)])  # sides in latent pixels
@torch.no_grad()
def test_encode_matches_diffusers(pair, t, h, w):
    ref, ours, name = pair
    s = ours.spatial_stride
    x = video(2, t, s * h, s * w)
    mean, std = stats(ref)
    expected = (ref.encode(x).latent_dist.mean - mean) / std
    got = ours.encode(x)
    assert got.shape == (2, Z, (t - 1) // 4 + 1, h, w)
    assert expected.std() > 0.1  # the comparison is not between near-constant tensors
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("f,h,w", [(1, 2, 3), (2, 3, 2), (3, 2, 4), (4, 3, 2)])
@torch.no_grad()
def test_decode_matches_diffusers(pair, f, h, w):
    ref, ours, name = pair
    latents = torch.randn(2, Z, f, h, w, generator=torch.Generator().manual_seed(2))
    mean, std = stats(ref)
    expected = ref.decode(latents * std + mean).sample
    got = ours.decode(latents)
    s = ours.spatial_stride
    assert got.shape == (2, 3, 4 * (f - 1) + 1, s * h, s * w)
    assert (expected.abs() < 0.99).float().mean() > 0.5  # mostly not flattened by the final clamp
    assert (got - expected).abs().max().item() < 1e-4


@torch.no_grad()
def test_encode_is_causal(pair):
    _, ours, _ = pair
    s = ours.spatial_stride
    x = video(2, 13, 2 * s, 3 * s, seed=3)
    whole = ours.encode(x)
    for k in (0, 2):  # the first 1 + 4k frames give the first k + 1 latent frames
        prefix = ours.encode(x[:, :, :1 + 4 * k])
        torch.testing.assert_close(prefix, whole[:, :, :k + 1], atol=1e-5, rtol=0)
    # and later frames do not reach back: changing frame 5 leaves latent frames 0 and 1 alone
    y = x.clone()
    y[:, :, 5] = 0
    changed = ours.encode(y)
    torch.testing.assert_close(changed[:, :, :2], whole[:, :, :2], atol=1e-5, rtol=0)
    assert (changed[:, :, 2] - whole[:, :, 2]).abs().max() > 1e-3


@torch.no_grad()
def test_decode_is_chunked(pair):
    _, ours, _ = pair
    latents = torch.randn(2, Z, 4, 3, 2, generator=torch.Generator().manual_seed(4))
    calls = []
    whole = ours.decode(latents, on_chunk=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for k in (1, 3):
        prefix = ours.decode(latents[:, :, :k])
        torch.testing.assert_close(prefix, whole[:, :, :4 * (k - 1) + 1], atol=1e-5, rtol=0)


@torch.no_grad()
def test_whole_clip_pass_equals_streaming(pair):
    """Outside `streaming` the layers are stateless: one pass over a clip (the training path) is the same."""
    _, ours, _ = pair
    s = ours.spatial_stride
    x = ours._fold(video(1, 9, 2 * s, 3 * s, seed=5))  # what the encoder sees: Wan 2.2's patches in channels
    chunks = [x[:, :, :1], x[:, :, 1:5], x[:, :, 5:9]]
    with streaming(ours.encoder):
        streamed = torch.cat([ours.encoder(c) for c in chunks], dim=2)
    for _ in range(2):  # and a stateless call leaves nothing behind for the next one
        torch.testing.assert_close(ours.encoder(x), streamed, atol=1e-5, rtol=0)

    z = torch.randn(1, Z, 3, 2, 3, generator=torch.Generator().manual_seed(6))
    with streaming(ours.decoder):
        streamed = torch.cat([ours.decoder(z[:, :, i:i + 1]) for i in range(3)], dim=2)
    for _ in range(2):
        torch.testing.assert_close(ours.decoder(z), streamed, atol=1e-5, rtol=0)
    # leaving the block dropped the carried frames
    assert all(getattr(m, "past", None) is None and getattr(m, "last", None) is None for m in ours.modules())
    assert not any(getattr(m, "started", False) for m in ours.modules())


def test_gradients_flow(pair):
    _, ours, _ = pair
    x = video(1, 5, ours.spatial_stride, ours.spatial_stride, seed=7).requires_grad_()
    ours.decode(ours.encode(x)).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert ours.encoder.conv_in.weight.grad is not None
    ours.zero_grad(set_to_none=True)


def test_rejects_bad_shapes(pair):
    _, ours, _ = pair
    s = ours.spatial_stride
    with pytest.raises(ValueError):
        ours.encode(video(1, 4, s, s))  # T is not 1 + 4n
    with pytest.raises(ValueError):
        ours.encode(video(1, 5, s + s // 2, s))  # H is not a multiple of the stride
    with pytest.raises(ValueError):
        ours.decode(torch.zeros(1, Z + 1, 1, 2, 2))


def test_config_roundtrip_and_the_published_shapes():
    cfg = VAEConfig.from_dict({**TINY, "_class_name": "AutoencoderKLWan", "_diffusers_version": "0.33.0",
                               "unknown_key": 1, "scale_factor_spatial": 8, "attn_scales": []})
    assert cfg.dim_mult == (1, 2, 2, 2) and cfg.latents_std == (1.7, 0.6, 2.4, 1.1)
    assert cfg.spatial_stride == 8 and cfg.temporal_stride == 4
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    # Diffusers reads our config.json and builds the same network
    ref = diffusers.AutoencoderKLWan.from_config(cfg.to_dict())
    assert ref.state_dict().keys() == WanVAE(cfg).state_dict().keys()
    # the default config is the published Wan 2.1 VAE
    with torch.device("meta"):
        full = diffusers.AutoencoderKLWan()
        ours = WanVAE(VAEConfig.from_dict(dict(full.config)))
    assert ours.config == VAEConfig()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    assert (ours.spatial_stride, ours.temporal_stride) == (8, 4)

    # and Wan 2.2's (TI2V-5B), whose config names its own latent statistics
    wan22 = dict(base_dim=160, decoder_base_dim=256, z_dim=48, latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
                 **WAN22)
    with torch.device("meta"):
        full = diffusers.AutoencoderKLWan(**wan22)
        ours = WanVAE(VAEConfig.from_dict(dict(full.config)))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    assert (ours.spatial_stride, ours.temporal_stride) == (16, 4)
    assert VAEConfig.from_dict(ours.config.to_dict()) == ours.config
    with pytest.raises(ValueError, match="3 x patch_size"):
        VAEConfig.from_dict(dict(wan22, in_channels=3))
    with pytest.raises(ValueError):
        VAEConfig(z_dim=4)  # 16 latent statistics for 4 channels
    with pytest.raises(ValueError, match="attn_scales"):
        VAEConfig(attn_scales=(0.5,))

