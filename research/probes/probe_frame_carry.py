"""Does the embedded model's transformer carry an object from one latent frame into the next?

    python research/probes/probe_frame_carry.py [--model PATH] [--checkpoint WORK/dit.safetensors] [--clips 32]

Every clip of the synthetic world shows the same object in every frame, so the first thing a video model should
learn is to draw, in a frame it is generating, what the neighbouring frames show. This probe measures it from
one forward pass. Training-split clips with one object (still ones, then moving ones) are encoded; latent frames
0-2 are given clean (timestep 0, as image-to-video and extension give them) and frames 3-4 are noised to a
level (with the model's own noise prior); the transformer's x0 estimate of frames 3-4 is compared with the
truth on the latent cells the object covers. Two baselines frame the figure: copying frame 2 into frames 3-4
(for a still object this is nearly the truth), and the same estimate with frames 0-2 noised too (what the
model manages without the clean frames). A model that carries the object sits near the copy baseline on still
clips and well below its no-clean-frames figure on both.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from sora_cli import Pipeline
from sora_cli.models.wan.transformer import frame_timesteps_to_tokens
from sora_cli.sampling import frame_noise
from sora_cli.tiny import captions, world

from probing import probe_parser, probed_pipeline

LEVELS = (0.5, 0.8, 0.95)


def clips(pipe: Pipeline, count: int, motions: tuple[str, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (N, C, 5, 16, 16) and caption states of 17-frame 64x64 one-object clips with these motions."""
    latents, contexts, i = [], [], 0
    while len(latents) < count:
        rng = np.random.default_rng([seed, i])
        i += 1
        scene = world.sample_scene(rng, "train", num_objects=1)
        if scene.objects[0].motion in motions:
            latents.append(pipe.encode(world.draw(scene, 17, 64, 64)))
            contexts.append(pipe.encode_text([captions.caption(scene, rng, "train")]))
    return torch.cat(latents), torch.cat(contexts)


@torch.no_grad()
def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--clips", type=int, default=32)
    args = parser.parse_args()
    pipe = probed_pipeline(args)
    model = pipe.transformer
    for kind, motions in (("still", ("still",)), ("moving", tuple(world.DIRECTIONS))):
        x0, context = clips(pipe, args.clips, motions, seed=11)
        target = x0[:, :, 3:]
        background = target.flatten(3).median(-1).values[..., None, None]  # (N, C, 2, 1, 1)
        cells = ((target - background).abs().amax(1, keepdim=True) > 1.0).float()  # the object's latent cells

        def error(estimate: torch.Tensor) -> float:
            return round(((estimate - target).pow(2) * cells).sum().item() / (cells.sum().item() * x0.shape[1]), 4)

        noise = frame_noise(x0.shape, torch.Generator().manual_seed(0), pipe.defaults.noise_correlation)
        row = {"copy frame 2": error(x0[:, :, 2:3].expand_as(target))}
        for level in LEVELS:
            for given in (True, False):
                s = torch.full((x0.shape[0], x0.shape[2]), level)  # (N, F)
                if given:
                    s[:, :3] = 0
                s5 = s[:, None, :, None, None]
                xt = (1 - s5) * x0 + s5 * noise
                grid = model.token_grid(*x0.shape[2:])
                estimate = model(xt, frame_timesteps_to_tokens(s * 1000, grid), context)[:, :, 3:]
                row[f"sigma {level}, frames 0-2 {'clean' if given else 'noisy'}"] = error(estimate)
        print(kind, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
