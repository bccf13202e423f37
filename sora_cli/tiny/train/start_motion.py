"""The recipe's last two stages: moving a known first frame's object the way the caption says.

After the main stage the transformer carries known frames forwards but ignores the direction word, even when a
clip's start is given and the word alone decides where the object goes (`research/probes/probe_word_use.py`). Trained
on that task alone it learns it after a plateau of about a thousand steps (`research/probes/learn_start_motion.py`);
mixed into the recipe's batches from the start, or at 30% text-to-video, it does not learn it at all. Hence:
- drill: the task alone, on one caption template (one object moving left, right, up or down, fast);
- settle: the recipe's own batches again, each with as many drill samples from the recipe's own clips whose
  objects move in a direction (8 directions, both speeds, every bucket, their own phrasings), so the skill stays
  while the rest of the model comes back, and carries to phrasings beyond the template.
Text-to-video then uses it in two passes (`pipeline.py`): draw a first frame, then animate it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import world
from ...models.text_encoder import TextEncoder
from ...models.wan.transformer import WanTransformer, frame_timesteps_to_tokens
from ...models.wan.vae import WanVAE
from ...sampling import frame_noise
from .common import to_model_range

DRILL_DIRECTIONS = ("left", "right", "up", "down")
DRILL_SIZE = (17, 64, 64)  # frames, height, width


def template_caption(obj: world.ObjectSpec, background: str) -> str:
    return f"a {obj.color} {obj.shape} moving {obj.motion} fast on a {background} background"


def drill_scenes(rng: np.random.Generator, count: int) -> list[tuple[world.Scene, str]]:
    """One object of the training split moving left, right, up or down, fast, and its template caption."""
    out = []
    for _ in range(count):
        scene = world.sample_scene(rng, "train", num_objects=1)
        obj = scene.objects[0]
        obj.motion, obj.speed, obj.angle = DRILL_DIRECTIONS[rng.integers(4)], "fast", 0.0
        out.append((scene, template_caption(obj, scene.background)))
    return out


@torch.no_grad()
def build_drill_set(clips: int, seed: int, vae: WanVAE, vae_id: str, text: TextEncoder,
                    cache: Path) -> dict[str, torch.Tensor]:
    """{"latents": (N, C, F, h, w), "captions": (N, L, D)} of the drill's clips, cached on disk."""
    key = json.dumps(dict(clips=clips, seed=seed, size=DRILL_SIZE, L=text.max_length, vae=vae_id))
    if cache.exists() and cache.with_suffix(".json").read_text() == key:
        return load_file(str(cache))
    device = next(vae.parameters()).device
    scenes = drill_scenes(np.random.default_rng([seed, 5]), clips)
    latents = [vae.encode(to_model_range(world.draw(s, *DRILL_SIZE)[None]).to(device))[0].cpu() for s, _ in scenes]
    data = {"latents": torch.stack(latents), "captions": text.encode([c for _, c in scenes]).half()}
    save_file({k: v.contiguous() for k, v in data.items()}, str(cache))
    cache.with_suffix(".json").write_text(key)
    return data


def start_known_loss(model: WanTransformer, x0: torch.Tensor, context: torch.Tensor, gen: torch.Generator,
                     noise_correlation: float) -> torch.Tensor:
    """The first latent frame given clean, the rest noised to one level in [0.5, 1] (where the sampler decides the
    path); the squared error of the x0 estimate on the rest. Random draws on the CPU, like the recipe's."""
    batch, _, frames = x0.shape[:3]
    sigma = (0.5 + 0.5 * torch.rand(batch, 1, generator=gen)).expand(-1, frames).clone()
    sigma[:, 0] = 0.0
    noise = frame_noise(x0.shape, gen, noise_correlation)
    sigma, noise = sigma.to(x0.device), noise.to(x0.device)
    s5 = sigma[:, None, :, None, None]
    x0_hat = model((1 - s5) * x0 + s5 * noise, frame_timesteps_to_tokens(sigma * 1000, model.token_grid(*x0.shape[2:])),
                   context)
    return (x0_hat.float() - x0)[:, :, 1:].pow(2).mean()


def moving(scenes: list[world.Scene]) -> torch.Tensor:
    """(N,) bool: every object of the scene moves in one of the eight directions."""
    return torch.tensor([all(o.motion in world.DIRECTIONS for o in s.objects) for s in scenes])
