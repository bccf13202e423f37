"""Can the transformer learn to draw the asked shape? Trained on that alone: text-to-image of one still object.

    python research/probes/learn_shape.py [--model PATH] [--steps 3000] [--every 500] [--images 2048] [--save DIR]

The direction word was learnt once the task was given alone (`learn_start_motion.py`); this asks the same of the
shape word. From the model's weights it trains on single 64x64 frames of one still object of the training split,
captioned "a {colour} {shape} on a {background} background", the frame noised to one level in [--low, 1] (where
the sampler composes the picture), the squared error of the x0 estimate. Every `--every` steps it prints
`probe_word_use.py`'s shape figure on one-frame pairs at noise 0.9 and 0.7: how far the shape word alone moves
the estimate from one shape to the other (1: all the way; 0: ignored). About 0.3 s a step on 2 CPU cores.
`--save DIR` writes the model with the trained transformer as a model folder there.
"""

from __future__ import annotations

import numpy as np
import torch

from sora_cli.models.wan.transformer import frame_timesteps_to_tokens
from sora_cli.sampling import frame_noise
from sora_cli.tiny import world

from probe_word_use import caption, estimates, follow_along, pair
from probing import drill, drill_parser, drilled_pipeline

LEVELS = (0.9, 0.7)


@torch.no_grad()
def training_set(pipe, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, 1, h, w) latents of 64x64 frames of one still object and (N, L, D) their captions' text states."""
    rng, latents, texts = np.random.default_rng(0), [], []
    for _ in range(images):
        scene = world.sample_scene(rng, "train", num_objects=1)
        obj = scene.objects[0]
        obj.motion, obj.angle = "still", 0.0
        latents.append(pipe.encode(world.draw(scene, 1, 64, 64)))
        texts.append(caption(obj, scene.background))
    return torch.cat(latents), pipe.encode_text(texts)


@torch.no_grad()
def measure(pipe, scenes: int = 24) -> list[float]:
    """The shape follow at each of LEVELS, on one-frame pairs that differ in shape only."""
    pipe.transformer.eval()
    figures = []
    for s in LEVELS:
        follow = []
        for draw in range(scenes):
            scenes_ab = pair(np.random.default_rng([77, draw]), "shape")
            if scenes_ab is None:
                continue
            a, b = (pipe.encode(world.draw(scene, 1, 64, 64)) for scene in scenes_ab)
            context = pipe.encode_text([caption(x.objects[0], x.background) for x in scenes_ab])
            follow.append(follow_along(estimates(pipe, a, b, context, s, known_start=False, seed=draw), a, b))
        figures.append(float(np.mean(follow)))
    pipe.transformer.train()
    return figures


def main() -> None:
    parser = drill_parser(__doc__, every=500, batch=32)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--low", type=float, default=0.5, help="the lowest noise level trained on")
    pipe, args = drilled_pipeline(parser)
    latents, texts = training_set(pipe, args.images)
    model = pipe.transformer

    def loss_at(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(latents), (args.batch,), generator=gen)
        x0, context = latents[idx], texts[idx]
        sigma = args.low + (1 - args.low) * torch.rand(args.batch, 1, generator=gen)
        s5 = sigma[:, None, :, None, None]
        noisy = (1 - s5) * x0 + s5 * frame_noise(x0.shape, gen, pipe.defaults.noise_correlation)
        x0_hat = model(noisy, frame_timesteps_to_tokens(sigma * 1000, model.token_grid(*x0.shape[2:])), context)
        return (x0_hat.float() - x0).pow(2).mean()

    drill(pipe, args, loss_at, lambda step: print(f"step {step:5d}  shape follow " + "  ".join(
        f"{f:.3f} at {s}" for s, f in zip(LEVELS, measure(pipe))), flush=True))


if __name__ == "__main__":
    main()
