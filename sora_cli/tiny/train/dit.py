"""Train the tiny diffusion transformer on VAE latents of the synthetic world, and assemble sora-tiny.

Flow matching on the sampler's own schedule: x_t = (1 - s) x0 + s noise. The network predicts x0 itself, and the
loss is taken on the velocity noise - x0 that the prediction implies, (x_t - x0_hat) / s. Predicting the
velocity directly failed here: a token is a 1x4x4 patch of 16 latent channels, 256 numbers, as many as the
model is wide, and a velocity carries the token's full noise, which the network cannot pass through while
also composing the scene; x0 lies on the low-dimensional set of clean clips (Li & He, "Back to Basics: Let
Denoising Generative Models Denoise", 2025). The sampler converts the prediction back to a velocity.
Two additions make one set of weights serve every feature:
- caption dropout, so classifier-free guidance has an unconditional model to steer away from;
- per-token timesteps with random clean-frame masks (the first latent frame, the first k, the last k, both
  ends): those frames are given clean, at t = 0, and excluded from the loss, so the model learns to generate
  around known frames (image-to-video, extension both ways, connecting, looping).
Latents and caption embeddings are computed once, up front, and cached in the work folder.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import captions, world
from ...errors import OptionError
from ...loading import TEXT_ENCODER_PACKAGES, load_module, open_device, read_json, text_encoder_dirs
from ...models.text_encoder import TextEncoder
from ...models.wan.transformer import TransformerConfig, WanTransformer, frame_timesteps_to_tokens
from ...models.wan.vae import VAEConfig, WanVAE
from ...sampling import SamplerConfig, frame_noise
from . import start_motion
from .common import (Ema, descend, fast_bf16, load_checkpoint, lr_at, progress_bar, recipe_record, save_checkpoint,
                     show_step, stderr, step_generator, step_rng, to_model_range)

# Patches of 4x4 latents (16x16 pixels) keep the sequence short enough to train on a CPU.
TINY_DIT = dict(patch_size=(1, 4, 4), num_attention_heads=4, attention_head_dim=64, in_channels=16,
                out_channels=16, text_dim=384, freq_dim=256, ffn_dim=1024, num_layers=6)
TEXT_PACKAGE = TEXT_ENCODER_PACKAGES[0]  # MiniLM, shipped inside a PyPI package
MIN_SIGMA = 0.05  # floor of the loss's divisor: see dit_loss


@dataclass
class DiTRecipe:
    steps: int = 12000            # 8000: colour 89%, background 98%; 12000: 95%, 100% (100 held-out captions)
    batch: int = 16
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    clips: int = 2000             # distinct training clips, encoded once
    captions_per_clip: int = 3    # phrasings per clip, drawn afresh from the templates
    caption_dropout: float = 0.1
    clean_mask_prob: float = 0.6  # at 0.3 the transformer had not learnt to copy known frames by step 12000;
                                  # at 0.6 it does, between steps 4000 and 8000 (probe_frame_carry.py)
    shift: float = 3.0            # the schedule the sampler uses
    text_length: int = 40
    frames: int = 17              # clips are encoded at this length; shorter prefixes come free (causal VAE)
    area: int = 64 * 64           # pixel budget of the aspect-ratio buckets
    noise_correlation: float = 0.5  # sampling.frame_noise; colour at 8000 steps: 0.5 89%, 0.8 84%, 0 75%
    bf16: bool | None = None      # autocast; None: where it is fast (common.fast_bf16). With AMX a step takes
                                  # 0.7x float32's time; where the CPU emulates bf16, some 15x
    seed: int = 0
    checkpoint_every: int = 250
    network: dict = field(default_factory=lambda: dict(TINY_DIT))
    # Then start_motion.py's two stages, from the main stage's EMA weights (fresh optimizers, constant rates):
    drill_steps: int = 3000       # the task alone; learnt after ~1000 steps (follow 0.02 / 0.47 / 0.74 at 1k/2k/3k)
    drill_clips: int = 512
    drill_lr: float = 3e-4
    settle_steps: int = 1300      # recipe batch + as many drill samples a step; 8 a step let the skill fade
    settle_lr: float = 2e-4
    settle_ema: float = 0.998

    def stage(self, step: int) -> str:
        return "main" if step < self.steps else "drill" if step < self.steps + self.drill_steps else "settle"

    @property
    def total_steps(self) -> int:
        return self.steps + self.drill_steps + self.settle_steps


def load_text_encoder(text_length: int) -> TextEncoder:
    encoder_dir, tokenizer_dir = text_encoder_dirs(Path(), {"_sora": {"text_encoder_package": TEXT_PACKAGE}})
    return TextEncoder.load(encoder_dir, tokenizer_dir, "BertModel", text_length, torch.float32)


@torch.no_grad()
def build_dataset(r: DiTRecipe, vae: WanVAE, vae_id: str, text: TextEncoder,
                  cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"HxW": {"latents": (N, C, F, h, w), "captions": (N, K, L, D) fp16}}, cached on disk."""
    key = json.dumps(dict(clips=r.clips, k=r.captions_per_clip, L=r.text_length, frames=r.frames, area=r.area,
                          seed=r.seed, vae=vae_id))
    if cache.exists() and cache.with_suffix(".json").read_text() == key:
        flat = load_file(str(cache))
        return {b: {"latents": flat[f"{b}.latents"], "captions": flat[f"{b}.captions"]}
                for b in {k.rsplit(".", 1)[0] for k in flat}}
    by_bucket: dict[str, tuple[list, list]] = {}
    with progress_bar() as bar:
        task = bar.add_task("encode data", total=r.clips, status="")
        for i, (h, w, scene, texts) in enumerate(draw_clips(r)):
            clip = to_model_range(world.draw(scene, r.frames, h, w)[None]).to(next(vae.parameters()).device)
            latents = vae.encode(clip)[0].cpu()
            entry = by_bucket.setdefault(f"{h}x{w}", ([], []))
            entry[0].append(latents)
            entry[1].append(text.encode(texts).half())
            show_step(bar, task, i + 1, r.clips, "")
    data = {b: {"latents": torch.stack(lat), "captions": torch.stack(cap)} for b, (lat, cap) in by_bucket.items()}
    save_file({f"{b}.{k}": v.contiguous() for b, d in data.items() for k, v in d.items()}, str(cache))
    cache.with_suffix(".json").write_text(key)
    return data


def draw_clips(r: DiTRecipe) -> Iterator[tuple[int, int, world.Scene, list[str]]]:
    """Each training clip's bucket size, scene and captions, the same for a seed, drawn without rendering."""
    rng = step_rng(r.seed, 0, stream=3)
    sizes = sorted({world.bucket_size(aw, ah, r.area) for aw, ah in world.ASPECTS})
    for _ in range(r.clips):
        h, w = sizes[rng.integers(len(sizes))]
        scene = world.sample_scene(rng, "train")
        yield h, w, scene, [captions.caption(scene, rng, "train") for _ in range(r.captions_per_clip)]


def moving_clips(r: DiTRecipe) -> dict[str, torch.Tensor]:
    """{"HxW": indices into that bucket of the clips whose objects all move in a direction}."""
    scenes: dict[str, list[world.Scene]] = {}
    for h, w, scene, _ in draw_clips(r):
        scenes.setdefault(f"{h}x{w}", []).append(scene)
    pools = {b: start_motion.moving(s).nonzero()[:, 0] for b, s in scenes.items()}
    if not any(len(p) for p in pools.values()):
        raise OptionError(f"--clips {r.clips}: no training clip moves in a direction, and the settle stage needs some; "
                          "use more clips, or --settle-steps 0")
    return pools


def encoder_id(vae: WanVAE) -> str:
    """What the cached latents depend on: the encoder and the latent normalisation, not the decoder."""
    digest = hashlib.sha256(json.dumps([vae.config.latents_mean, vae.config.latents_std]).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.")):
            digest.update(name.encode())
            digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()


def clean_frames(rng: np.random.Generator, batch: int, frames: int, prob: float) -> torch.Tensor:
    """(B, F) bool: which latent frames are given clean. Most samples have none (plain text-to-video)."""
    clean = np.zeros((batch, frames), bool)
    for b in range(batch):
        if frames < 2 or rng.random() >= prob:
            continue
        k = int(rng.integers(1, frames))  # at least one frame is left to generate
        mode = rng.integers(4)
        if mode == 0:
            clean[b, 0] = True                      # image-to-video
        elif mode == 1:
            clean[b, :k] = True                     # extend forwards
        elif mode == 2:
            clean[b, frames - k:] = True            # extend backwards
        elif frames > 2:
            a = int(rng.integers(1, frames - 1))    # connect / loop: both ends known
            z = int(rng.integers(1, frames - a))
            clean[b, :a] = True
            clean[b, frames - z:] = True
    return torch.from_numpy(clean)


def dit_loss(model: WanTransformer, x0: torch.Tensor, context: torch.Tensor, sigma: torch.Tensor,
             clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Flow-matching loss on the frames that are not given clean, for a network that predicts x0."""
    s = (sigma[:, None] * ~clean).float()                    # (B, F) noise level per latent frame
    s5 = s[:, None, :, None, None]
    xt = (1 - s5) * x0 + s5 * noise
    grid = model.token_grid(*x0.shape[2:])
    x0_hat = model(xt, frame_timesteps_to_tokens(s * 1000, grid), context)
    # The velocity's error is the x0 error over s. The floor keeps the nearly clean samples from dominating; it
    # divides the x0 error, so that below it the target stays x0 (a floored velocity would aim elsewhere).
    weight = ((~clean).float()[:, None, :, None, None] / s5.clamp(min=MIN_SIGMA) ** 2).expand_as(x0)
    return ((x0_hat.float() - x0).pow(2) * weight).sum() / ((~clean).sum().clamp(min=1) * x0[0, :, 0].numel())


def train_dit(out: Path, work: Path, recipe: DiTRecipe, resume: bool, command: str, device: str = "cpu") -> dict:
    """Every random draw happens on the CPU, so a device changes the arithmetic, not the data the model sees."""
    device = open_device(device)
    r = recipe if recipe.bf16 is not None else replace(recipe, bf16=fast_bf16(device))
    torch.manual_seed(r.seed)
    vae = load_module(lambda: WanVAE(VAEConfig.from_dict(read_json(out / "vae" / "config.json"))), out / "vae",
                      device, torch.float32)
    text = load_text_encoder(r.text_length)
    work.mkdir(parents=True, exist_ok=True)
    vae_id = encoder_id(vae)  # hashes every encoder weight: once
    data = build_dataset(r, vae, vae_id, text, work / "latents.safetensors")
    drill = (start_motion.build_drill_set(r.drill_clips, r.seed, vae, vae_id, text, work / "drill.safetensors")
             if r.drill_steps else None)
    moving = moving_clips(r) if r.settle_steps else {}
    empty = text.encode([""])[0]                           # what caption dropout and the default negative use
    # under bf16 autocast the q/k RMS norms see bf16 activations with their float32 weights: correct, only unfused
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    buckets = sorted(data)
    weights = np.array([len(data[b]["latents"]) for b in buckets], float)
    movers = sorted(b for b in moving if len(moving[b]))
    mover_weights = np.array([len(moving[b]) for b in movers], float)

    cfg = TransformerConfig.from_dict(r.network)
    model = WanTransformer(cfg).to(device).train()
    new_optimizer = lambda decay: torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=decay, betas=(0.9, 0.99))
    optimizer, ema = new_optimizer(0.01), Ema(model, r.ema_decay)
    ckpt, start, started = work / "dit.safetensors", 0, time.time()
    if resume and ckpt.exists():
        meta = load_checkpoint(ckpt, model, optimizer, ema, device)  # Adam's settings come back with its state
        start, started = meta["step"], time.time() - meta.get("elapsed", 0.0)
        ema.decay = r.ema_decay if r.stage(start - 1) == "main" else r.settle_ema
        stderr.print(f"resuming DiT training at step {start}")

    def recipe_loss(step: int) -> torch.Tensor:
        rng, gen = step_rng(r.seed, step), step_generator(r.seed, step)
        bucket = data[buckets[rng.choice(len(buckets), p=weights / weights.sum())]]
        idx = torch.from_numpy(rng.integers(len(bucket["latents"]), size=r.batch))
        x0 = bucket["latents"][idx]
        if rng.random() < 0.4:  # a shorter clip: the causal VAE's latents of a prefix are a prefix
            x0 = x0[:, :, :int(rng.integers(1, x0.shape[2]))]
        context = bucket["captions"][idx, torch.from_numpy(rng.integers(r.captions_per_clip, size=len(idx)))].float()
        context[torch.from_numpy(rng.random(len(idx)) < r.caption_dropout)] = empty
        u = torch.rand(len(idx), generator=gen)
        sigma = r.shift * u / (1 + (r.shift - 1) * u)
        noise = frame_noise(x0.shape, gen, r.noise_correlation)
        clean = clean_frames(rng, len(idx), x0.shape[2], r.clean_mask_prob)
        return dit_loss(model, *(t.to(device) for t in (x0, context, sigma, clean, noise)))

    def start_known_loss(step: int, latents: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return start_motion.start_known_loss(model, latents.to(device), texts.float().to(device),
                                             step_generator(r.seed, step, stream=1), r.noise_correlation)

    def drill_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(step_rng(r.seed, step, stream=1).integers(len(drill["latents"]), size=r.batch))
        return drill["latents"][idx], drill["captions"][idx]

    def mover_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips of the recipe's own whose objects move in a direction, each with one of its own captions."""
        rng = step_rng(r.seed, step, stream=2)
        name = movers[rng.choice(len(movers), p=mover_weights / mover_weights.sum())]
        idx = moving[name][torch.from_numpy(rng.integers(len(moving[name]), size=r.batch))]
        phrasing = torch.from_numpy(rng.integers(r.captions_per_clip, size=r.batch))
        return data[name]["latents"][idx], data[name]["captions"][idx, phrasing]

    smooth = None
    with progress_bar() as bar:
        task = bar.add_task("train dit", total=r.total_steps, completed=start, status="")
        for step in range(start, r.total_steps):
            stage = r.stage(step)
            if stage != "main" and step in (r.steps, r.steps + r.drill_steps):  # a stage begins
                if step == r.steps:
                    model.load_state_dict(ema.shadow)      # go on from the weights the main stage would ship
                optimizer = new_optimizer(0.0 if stage == "drill" else 0.01)
                ema, smooth = Ema(model, r.settle_ema), None
            if stage == "main":
                lr = lr_at(step, r.steps, r.lr, r.warmup)
            elif stage == "drill":
                lr = r.drill_lr
            else:
                lr = r.settle_lr * min(1.0, (step - r.steps - r.drill_steps + 1) / 50)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=r.bf16):
                if stage == "main":
                    loss = recipe_loss(step)
                elif stage == "drill":
                    loss = start_known_loss(step, *drill_batch(step))
                else:
                    loss = recipe_loss(step) + start_known_loss(step, *mover_batch(step))
            value = descend(loss, optimizer)
            ema.update(model, step)
            smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
            show_step(bar, task, step + 1, r.total_steps, f"{stage} loss {smooth:.4f}")
            if (step + 1) % r.checkpoint_every == 0 or step + 1 == r.total_steps:
                save_checkpoint(ckpt, model, optimizer, ema, step + 1, dict(elapsed=time.time() - started))

    model.load_state_dict(ema.shadow)
    save_tiny_model(out, model, r)
    record = recipe_record("dit", command, asdict(r), started, r.total_steps,
                           dict(final_loss=None if smooth is None else round(smooth, 4)))
    (out / "transformer" / "recipe.json").write_text(json.dumps(record, indent=2))
    return record


def save_tiny_model(out: Path, model: WanTransformer, recipe: DiTRecipe) -> None:
    """Write the transformer, scheduler and model_index.json next to the VAE, in the Diffusers layout."""
    (out / "transformer").mkdir(parents=True, exist_ok=True)
    (out / "transformer" / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    (out / "scheduler").mkdir(exist_ok=True)
    scheduler = SamplerConfig(sampler="unipc", shift=recipe.shift, prediction="sample").to_scheduler_config()
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    index = {"_class_name": "WanPipeline", "_diffusers_version": "0.35.0",
             "scheduler": ["diffusers", scheduler["_class_name"]], "text_encoder": ["transformers", "BertModel"],
             "tokenizer": ["transformers", "BertTokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"],
             "vae": ["diffusers", "AutoencoderKLWan"],
             "_sora": dict(text_encoder_package=TEXT_PACKAGE, text_length=recipe.text_length, width=64, height=64,
                           num_frames=17, fps=int(world.FPS), num_steps=20, guidance_scale=4.0, negative_prompt="",
                           # trained with clean-frame masks (conditioning.py) and this noise prior (sampling.py)
                           conditioning="clean_tokens", noise_correlation=recipe.noise_correlation,
                           passes=2 if recipe.drill_steps else 1)}  # trained to animate a first frame
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
