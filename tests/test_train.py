"""The sora-tiny recipes, run for a few steps: they train, checkpoint, resume exactly, and assemble a model folder
that the ordinary pipeline loads and generates with."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from sora_cli import Pipeline
from sora_cli.cli import main
from sora_cli.models.wan.transformer import TransformerConfig, WanTransformer
from sora_cli.tiny import world
from sora_cli.tiny.train.common import ema_weights, fast_bf16, step_rng, to_model_range
from sora_cli.tiny.train.dit import MIN_SIGMA, DiTRecipe, clean_frames, dit_loss, train_dit
from sora_cli.tiny.train.vae import VAERecipe, cell_colour, evaluate_psnr, train_vae

SMALL_VAE = VAERecipe(steps=4, decoder_steps=2, batch=2, crops=((5, 16), (9, 8)), checkpoint_every=2, stat_clips=2,
                      eval_clips=2)
SMALL_DIT = DiTRecipe(steps=4, drill_steps=2, settle_steps=2, drill_clips=3, batch=2, clips=12, captions_per_clip=2,
                      checkpoint_every=1, text_length=16,
                      network=dict(patch_size=(1, 4, 4), num_attention_heads=2, attention_head_dim=16,
                                   in_channels=16, out_channels=16, text_dim=384, freq_dim=32, ffn_dim=32,
                                   num_layers=1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out, work = tmp_path_factory.mktemp("tiny-model"), tmp_path_factory.mktemp("tiny-work")
    vae_record = train_vae(out, work, SMALL_VAE, resume=False, command="test")
    dit_record = train_dit(out, work, SMALL_DIT, resume=False, command="test")
    return out, work, vae_record, dit_record


def test_recipes_write_a_loadable_model(trained):
    out, _, vae_record, dit_record = trained
    assert json.loads((out / "transformer" / "recipe.json").read_text())["steps"] == SMALL_DIT.total_steps
    pipe = Pipeline.from_pretrained(out, device="cpu")
    # the recorded PSNR is the one the written VAE scores, recomputed from the files
    psnr = vae_record["results"]["heldout_psnr_db"]
    assert 5 < psnr < 60 and evaluate_psnr(pipe.vae, SMALL_VAE.seed, SMALL_VAE.eval_clips) == psnr
    assert pipe.text_encoder.model.config.model_type == "bert"  # MiniLM, from its package, run by bert.py
    video = pipe("a red circle moving right on a black background", num_frames=5, num_steps=2, seed=0)
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 8


def test_vae_latents_are_normalised(trained):
    out = trained[0]
    config = json.loads((out / "vae" / "config.json").read_text())
    assert len(config["latents_mean"]) == config["z_dim"] == 16
    assert all(s > 0 for s in config["latents_std"]) and any(m != 0 for m in config["latents_mean"])


def test_decoder_phase_sharpens_without_moving_the_latents(trained):
    """The second VAE phase trains the decoder alone: the shipped encoder is the first phase's, bit for bit."""
    out, work = trained[0], trained[1]
    first = ema_weights(work / "vae.safetensors")
    shipped = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    encoder = [k for k in shipped if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in shipped if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder
    assert all(torch.equal(first[k], shipped[k]) for k in encoder)
    config = json.loads((out / "vae" / "config.json").read_text())
    assert config["decoder_base_dim"] == SMALL_VAE.decoder_base_dim > config["base_dim"]  # the wider decoder
    assert any(not torch.equal(first[k], shipped[k]) for k in decoder)


def test_resume_continues_exactly(trained, tmp_path):
    """Stopped inside the main stage and inside the settle stage, then resumed == straight through: every step's
    randomness comes from (seed, step), and each stage's optimizer and average come back with the checkpoint."""
    out, work = trained[0], trained[1]
    straight = load_file(str(work / "dit.safetensors"))
    model, fresh = tmp_path / "model", tmp_path / "work"
    shutil.copytree(out / "vae", model / "vae")  # the recipe trains on this VAE's latents
    fresh.mkdir()
    for cached in ("latents.safetensors", "latents.json"):
        shutil.copy(work / cached, fresh / cached)
    train_dit(model, fresh, replace(SMALL_DIT, steps=2, drill_steps=0, settle_steps=0), resume=False, command="test")
    train_dit(model, fresh, replace(SMALL_DIT, settle_steps=1), resume=True, command="test")
    assert json.loads((fresh / "dit.json").read_text())["step"] == 7
    train_dit(model, fresh, SMALL_DIT, resume=True, command="test")
    resumed = load_file(str(fresh / "dit.safetensors"))
    for key in straight:
        if key.startswith(("model.", "ema.")):
            assert torch.allclose(straight[key], resumed[key], atol=1e-6), key


def test_clean_frame_masks_leave_something_to_generate():
    rng = step_rng(0, 0)
    masks = clean_frames(rng, 2000, 5, prob=0.5)
    assert not masks.all(dim=1).any(), "some sample has every frame clean"
    share = masks.any(dim=1).float().mean().item()
    assert 0.4 < share < 0.6
    kinds = {tuple(m.tolist()) for m in masks}
    assert (True, False, False, False, False) in kinds  # image-to-video
    assert (False, False, False, True, True) in kinds   # backwards extension
    assert (True, False, False, False, True) in kinds   # both ends: connect / loop
    # Both ends are known often enough to learn extension forwards and backwards.
    assert masks[:, 0].float().mean() > 0.2 and masks[:, -1].float().mean() > 0.15


def test_cell_colour_covers_what_each_latent_covers():
    """Frame 0 alone, then 4 frames at a time; 4x4 pixels a cell."""
    x = torch.zeros(1, 3, 9, 8, 8)
    x[:, 0, 0] = 1.0                 # frame 0 red everywhere
    x[:, 1, 1:5, :4, :4] = 1.0       # frames 1-4: the top-left cell green
    x[:, 2, 5, :2, :4] = 1.0         # frame 5: half of the top-left cell blue, in one of its 4 frames
    c = cell_colour(x, temporal=4, spatial=4)
    assert c.shape == (1, 3, 3, 2, 2)
    assert torch.equal(c[0, :, 0], torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 2, 2))
    assert c[0, 1, 1, 0, 0] == 1.0 and c[0, 1, 1].sum() == 1.0 and c[0, 0, 1:].sum() == 0.0
    assert c[0, 2, 2, 0, 0] == 0.125 and c[0, 2, 2].sum() == 0.125


@torch.no_grad()
def test_shipped_vae_colour_channels_are_cell_colours():
    """The shipped VAE was trained with the tie: its first latent channels are each cell's mean colour on clips it
    never saw, so an average of latents is an average of colours."""
    vae = Pipeline.from_pretrained("sora-tiny", device="cpu").vae
    rng = step_rng(0, 0, stream=11)
    for h, w in ((64, 64), (48, 80)):
        x = to_model_range(world.draw(world.sample_scene(rng, "heldout"), 9, h, w)[None])
        latents = vae.encode(x)
        mean, std = vae._latent_stats(latents)
        raw = latents * std + mean
        channels = VAERecipe().colour_channels
        assert (raw[:, :channels] - cell_colour(x, vae.temporal_stride, vae.spatial_stride)).abs().mean() < 0.05


class _Constant(torch.nn.Module):
    """A stand-in network that predicts a fixed x0, whatever its input."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0

    def token_grid(self, f, h, w):
        return f, h // 4, w // 4

    def forward(self, x, t, context):
        return self.x0


def test_dit_loss_is_zero_for_the_true_clip_at_every_noise_level():
    """Below the loss's floor on sigma the target is still x0 (a floored velocity target would not be)."""
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 16, 2, 8, 8, generator=gen), torch.randn(3, 16, 2, 8, 8, generator=gen)
    sigma = torch.tensor([0.01, 0.3, 0.9])  # 0.01 is under MIN_SIGMA
    clean = torch.tensor([[False, False], [True, False], [False, False]])
    assert dit_loss(_Constant(x0), x0, None, sigma, clean, noise).item() == 0.0
    off = dit_loss(_Constant(x0 + 0.1), x0, None, sigma, clean, noise).item()
    # an error of 0.1 everywhere costs 0.01 / max(s, MIN_SIGMA)^2, averaged over the 5 frames not given clean
    expected = 0.01 * (2 / MIN_SIGMA**2 + 1 / 0.3**2 + 2 / 0.9**2) / 5
    assert off == pytest.approx(expected, rel=1e-5)


def test_bf16_training_step_follows_the_float32_gradient():
    """The recipe trains under bf16 autocast (AMX on the CPU); its gradient must be float32's, give or take
    rounding, or the speed would buy a different model."""
    torch.manual_seed(0)
    model = WanTransformer(TransformerConfig.from_dict(dict(SMALL_DIT.network, attention_head_dim=32)))
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 16, 3, 8, 8, generator=gen), torch.randn(4, 16, 3, 8, 8, generator=gen)
    context, sigma = torch.randn(4, 16, 384, generator=gen), torch.tensor([0.2, 0.5, 0.8, 0.95])
    clean = torch.tensor([[True, False, False]] + [[False] * 3] * 3)
    grads = []
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = dit_loss(model, x0, context, sigma, clean, noise)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item()
    assert cosine > 0.99, cosine


@pytest.mark.parametrize("amx, avx512_bf16", [(False, False), (True, False), (False, True)])
def test_fast_bf16_follows_the_cpu(monkeypatch, amx, avx512_bf16):
    """bf16 autocast is chosen on a GPU and on a CPU that multiplies bf16 natively; an AVX2-only CPU emulates it."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert fast_bf16(torch.device("cpu")) is (amx or avx512_bf16)
    assert fast_bf16(torch.device("cuda")) is True


@pytest.mark.parametrize("flag", ["--fp32", "--bf16", None])
def test_train_dit_command_passes_the_precision(trained, tmp_path, monkeypatch, flag):
    """`sora train dit --fp32` trains without autocast, `--bf16` under it; without either the recipe takes bf16 where
    the hardware computes it natively (fast_bf16) and float32 elsewhere. The recipe records what it trained in."""
    model = tmp_path / "model"
    shutil.copytree(trained[0] / "vae", model / "vae")
    monkeypatch.setattr(sys, "argv", ["sora", "train", "dit", "--out", str(model), "--work-dir", str(tmp_path / "w"),
                                      "--steps", "1", "--drill-steps", "0", "--settle-steps", "0", "--clips", "2",
                                      "--batch", "2", *([flag] if flag else [])])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    config = json.loads((model / "transformer" / "recipe.json").read_text())["config"]
    expected = {"--fp32": False, "--bf16": True, None: fast_bf16(torch.device("cpu"))}[flag]
    assert config["bf16"] is expected and config["steps"] == 1 and config["clips"] == 2
    assert config["drill_steps"] == 0 and config["settle_steps"] == 0
