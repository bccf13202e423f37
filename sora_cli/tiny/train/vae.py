"""Train the tiny video VAE on the synthetic world, then measure it and save it in the Diffusers layout.

The network is the Wan VAE class at a small size. It is fully convolutional and causal in time, so it trains on
small crops and then encodes whole clips of any size.

Its first latent channels are tied, by a loss, to the mean colour of their cell (the 4x4 pixels and the frames
that one latent covers): an average of latents then decodes to an average of colours, and the DiT, which learns
blends first (its early estimates are averages over where an object might be), learns colour with them
(without the tie, a one-frame DiT named 19% of colours right after 600 steps; with it, 80%: sora-tiny README).
After training, the per-channel latent mean and std are measured and written into its config, so the DiT sees
unit-scale latents.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from .. import world
from ...models.wan.vae import VAEConfig, WanVAE
from .common import (Ema, descend, fast_bf16, load_checkpoint, lr_at, progress_bar, psnr, recipe_record,
                     save_checkpoint, show_step, stderr, step_rng, to_model_range)

TINY_VAE = dict(base_dim=16, z_dim=16, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True))


@dataclass
class VAERecipe:
    steps: int = 3000
    batch: int = 8
    # (frames, pixels) of the training crops; one is drawn per step. The network is convolutional, so small
    # crops teach it whole frames, but its causal cache only stays stable over as many chunks as it was
    # trained on: long, narrow crops teach that at the same cost as short, wide ones.
    crops: tuple[tuple[int, int], ...] = ((9, 32), (17, 24), (33, 16))
    object_crops: float = 0.8  # share of crops centred on an object pixel
    lr: float = 1e-3
    warmup: int = 100
    latent_penalty: float = 1e-4  # keeps the detail channels' scale bounded for diffusion
    colour_channels: int = 3     # latent channels that are their cell's mean RGB
    colour_tie: float = 1.0      # weight of that loss
    ema_decay: float = 0.999
    # Then the decoder alone, the encoder frozen: reconstructions sharpen while the latents, and so everything
    # the DiT was trained on, stay exactly as they were. A decoder wider than phase 1's starts afresh.
    decoder_steps: int = 5000   # 3000 (float32): 31.5 dB over 8 x 24 held-out clips; 5000 (bf16): 32.5
    decoder_lr: float = 1e-3
    decoder_base_dim: int = 32
    decoder_bf16: bool | None = None  # autocast; None: where it is fast (common.fast_bf16): 0.61x float32's step
                                      # time with AMX
    seed: int = 0
    checkpoint_every: int = 250
    stat_clips: int = 48     # whole clips measured for the latent mean and std
    eval_clips: int = 24     # held-out clips for the reported PSNR


def training_batch(r: VAERecipe, step: int, stream: int = 0) -> torch.Tensor:
    """Crops of freshly rendered training scenes, at random sizes, aspect ratios and durations, mostly centred on
    an object: a random crop of a 64-pixel frame is often plain background, which teaches nothing."""
    rng = step_rng(r.seed, step, stream)
    sizes = sorted({(h, w) for h, w, _ in world.buckets()})
    frames, crop = r.crops[rng.integers(len(r.crops))]
    clips = []
    for _ in range(r.batch):
        h, w = sizes[rng.integers(len(sizes))]
        scene = world.sample_scene(rng, "train")
        clip = world.draw(scene, frames, h, w)
        y0, x0 = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        ys, xs = np.nonzero((clip != world.COLORS[scene.background]).any(axis=(0, 3)))
        if len(ys) and rng.random() < r.object_crops:
            k = rng.integers(len(ys))
            y0 = int(np.clip(ys[k] - crop // 2, 0, h - crop))
            x0 = int(np.clip(xs[k] - crop // 2, 0, w - crop))
        clips.append(clip[:, y0:y0 + crop, x0:x0 + crop])
    return to_model_range(np.stack(clips))


def cell_colour(x: torch.Tensor, temporal: int, spatial: int) -> torch.Tensor:
    """(B, 3, 1 + tn, H, W) -> (B, 3, 1 + n, H/s, W/s), t and s the VAE's strides: the mean colour of what each
    latent covers, frame 0 alone and then t frames at a time, as the causal encoder groups them."""
    b, c, f, h, w = x.shape
    frames = torch.cat([x[:, :, :1], x[:, :, 1:].reshape(b, c, (f - 1) // temporal, temporal, h, w).mean(3)], dim=2)
    return F.avg_pool3d(frames, (1, spatial, spatial))


def vae_loss(vae: WanVAE, x: torch.Tensor, r: VAERecipe) -> tuple[torch.Tensor, float]:
    """Reconstruction through the posterior mean, which is all that inference ever uses.

    Sampling the posterior during training (as a KL-VAE does) left the tiny decoder reading latents whose noise
    was half their spread, capping PSNR near 20 dB; a small penalty on the mean keeps the latent bounded instead.
    The latent terms reach only the encoder, so the decoder-only phase takes the same loss.
    """
    mean = vae.quant_conv(vae.encoder(x))[:, :vae.config.z_dim]  # (B, z, F, h, w); the log-variance is unused
    recon = vae.decoder(vae.post_quant_conv(mean))
    mse = F.mse_loss(recon, x)
    colour, detail = mean[:, :r.colour_channels], mean[:, r.colour_channels:]
    tie = F.mse_loss(colour, cell_colour(x, vae.temporal_stride, vae.spatial_stride))
    loss = mse + 0.2 * (recon - x).abs().mean() + r.colour_tie * tie + r.latent_penalty * detail.pow(2).mean()
    return loss, mse.item()


def train_vae(out: Path, work: Path, recipe: VAERecipe, resume: bool, command: str) -> dict:
    if recipe.decoder_bf16 is None:
        recipe = replace(recipe, decoder_bf16=fast_bf16(torch.device("cpu")))
    torch.manual_seed(recipe.seed)
    cfg = VAEConfig(**TINY_VAE, latents_mean=(0.0,) * TINY_VAE["z_dim"], latents_std=(1.0,) * TINY_VAE["z_dim"])
    vae = WanVAE(cfg).train()
    elapsed, trained = run_phase("vae", vae, vae.parameters(), recipe.steps, recipe.lr, recipe,
                                 work / "vae.safetensors", resume, stream=0, bf16=False)
    if recipe.decoder_base_dim != cfg.base_dim:
        vae = with_new_decoder(vae, recipe.decoder_base_dim, recipe.seed)
    cfg = vae.config
    decoder = decoder_only(vae)
    # A decoder checkpoint only continues if it grew from this encoder; stream 4: new crops, not phase 1's.
    elapsed += run_phase("decoder", vae, decoder, recipe.decoder_steps, recipe.decoder_lr, recipe,
                         work / "vae-decoder.safetensors", resume and not trained, stream=4,
                         bf16=recipe.decoder_bf16)[0]
    started = time.time() - elapsed  # what the record reports: both phases, across resumes

    vae.eval().requires_grad_(False)
    cfg.latents_mean, cfg.latents_std = latent_stats(vae, recipe.seed, recipe.stat_clips)
    results = dict(heldout_psnr_db=evaluate_psnr(vae, recipe.seed, recipe.eval_clips))
    save_vae(vae, out / "vae")
    record = recipe_record("vae", command, dict(network=cfg.to_dict(), recipe=recipe.__dict__), started,
                           recipe.steps + recipe.decoder_steps, results)
    (out / "vae" / "recipe.json").write_text(json.dumps(record, indent=2))
    return record


def with_new_decoder(vae: WanVAE, width: int, seed: int) -> WanVAE:
    """`vae`'s encoder (and so its latents) with a fresh decoder of base width `width`, whose start depends on the
    seed alone, not on how the encoder was trained."""
    encoder = {k: v for k, v in vae.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    torch.manual_seed(seed)
    out = WanVAE(replace(vae.config, decoder_base_dim=width)).train()
    out.load_state_dict(encoder, strict=False)
    return out


def decoder_only(vae: WanVAE) -> list[torch.nn.Parameter]:
    """Freeze the encoder and return the decoder's parameters (with post_quant_conv) for training."""
    vae.requires_grad_(False)
    decoder = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for p in decoder:
        p.requires_grad_(True)
    return decoder


def run_phase(name: str, vae: WanVAE, params, steps: int, lr: float, recipe: VAERecipe,
              ckpt: Path, resume: bool, stream: int, bf16: bool) -> tuple[float, bool]:
    """Train `params` for `steps`, leave the EMA weights in `vae`; `bf16`: under bf16 autocast.
    Returns the phase's wall time in seconds and whether any step ran now."""
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = Ema(vae, recipe.ema_decay)
    start, started = 0, time.time()
    if resume and ckpt.exists():
        meta = load_checkpoint(ckpt, vae, optimizer, ema)
        start, started = meta["step"], time.time() - meta.get("elapsed", 0.0)
        stderr.print(f"resuming {name} training at step {start}")

    with progress_bar() as bar:
        task = bar.add_task(f"train {name}", total=steps, completed=start, status="")
        for step in range(start, steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr, recipe.warmup)
            x = training_batch(recipe, step, stream)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, mse = vae_loss(vae, x, recipe)
            descend(loss, optimizer)
            ema.update(vae, step)
            show_step(bar, task, step + 1, steps, f"psnr {10 * np.log10(4 / max(mse, 1e-12)):.1f} dB")
            if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == steps:
                save_checkpoint(ckpt, vae, optimizer, ema, step + 1, dict(elapsed=time.time() - started))
    vae.load_state_dict(ema.shadow)
    return time.time() - started, start < steps


@torch.no_grad()
def latent_stats(vae: WanVAE, seed: int, clips: int = 48) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the raw latents over whole training clips."""
    vae.config.latents_mean = (0.0,) * vae.config.z_dim
    vae.config.latents_std = (1.0,) * vae.config.z_dim
    rng = step_rng(seed, 0, stream=1)
    latents = []
    for _ in range(clips):
        h, w, t = world.buckets()[rng.integers(len(world.buckets()))]
        clip = world.draw(world.sample_scene(rng, "train"), t, h, w)
        latents.append(vae.encode(to_model_range(clip[None])).flatten(2))  # (1, z, N)
    z = torch.cat(latents, dim=2)[0]
    return tuple(z.mean(1).tolist()), tuple(z.std(1).tolist())


@torch.no_grad()
def evaluate_psnr(vae: WanVAE, seed: int, clips: int = 24) -> float:
    """Reconstruction PSNR on held-out scenes at whole-clip sizes (all aspect ratios, 17 frames)."""
    rng = step_rng(seed, 0, stream=2)
    sizes = sorted({(h, w) for h, w, _ in world.buckets()})
    scores = []
    for i in range(clips):
        h, w = sizes[i % len(sizes)]
        x = to_model_range(world.draw(world.sample_scene(rng, "heldout"), 17, h, w)[None])
        scores.append(psnr(vae.decode(vae.encode(x)), x))
    return round(float(np.mean(scores)), 2)


def save_vae(vae: WanVAE, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(vae.config.to_dict(), indent=2))
    state = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
