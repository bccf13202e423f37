"""Can the transformer learn to draw the asked shape? Trained on that alone: text-to-image of one still object.

    python benchmarks/learn_shape.py [--model PATH] [--steps 3000] [--every 500] [--images 2048] [--save DIR]

The direction word was learnt once the task was given alone (`learn_start_motion.py`); this asks the same of the
shape word. From the model's weights it trains on single 64x64 frames of one still object of the training split,
captioned "a {colour} {shape} on a {background} background", the frame noised to one level in [--low, 1] (where
the sampler composes the picture), the squared error of the x0 estimate. Every `--every` steps it prints
`probe_word_use.py`'s shape figure on one-frame pairs at noise 0.9 and 0.7: how far the shape word alone moves
the estimate from one shape to the other (1: all the way; 0: ignored). About 0.3 s a step on 2 CPU cores.
`--save DIR` writes the model with the trained transformer as a model folder there.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from sora_cli import world
from sora_cli.loading import resolve_model
from sora_cli.models.transformer import WanTransformer, frame_timesteps_to_tokens
from sora_cli.sampling import frame_noise

from probe_word_use import caption, estimates, follow_along, pair
from probing import probe_parser, probed_pipeline

LEVELS = (0.9, 0.7)


@torch.no_grad()
def training_set(pipe, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, 1, h, w) latents of 64x64 frames of one still object and (N, L, D) their captions' text states."""
    rng, latents, texts = np.random.default_rng(0), [], []
    for _ in range(images):
        scene = world.sample_scene(rng, "train", num_objects=1)
        obj = scene.objects[0]
        obj.motion, obj.angle = "still", 0.0
        latents.append(pipe.encode(world.render(scene, 1, 64, 64)))
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
            a, b = (pipe.encode(world.render(scene, 1, 64, 64)) for scene in scenes_ab)
            context = pipe.encode_text([caption(x.objects[0], x.background) for x in scenes_ab])
            follow.append(follow_along(estimates(pipe, a, b, context, s, known_start=False, seed=draw), a, b))
        figures.append(float(np.mean(follow)))
    pipe.transformer.train()
    return figures


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--low", type=float, default=0.5, help="the lowest noise level trained on")
    parser.add_argument("--save", default=None, help="write the trained model as a model folder here")
    args = parser.parse_args()
    if args.save and Path(args.save).exists():
        parser.error(f"--save {args.save} exists; give a new folder")
    torch.manual_seed(0)
    pipe = probed_pipeline(args)
    model = WanTransformer(pipe.transformer.config)  # a trainable copy: the loader hands out frozen modules
    model.load_state_dict(pipe.transformer.state_dict())
    pipe.transformer = model.train()
    latents, texts = training_set(pipe, args.images)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    report = lambda step: print(f"step {step:5d}  shape follow " + "  ".join(  # noqa: E731
        f"{f:.3f} at {s}" for s, f in zip(LEVELS, measure(pipe))), flush=True)
    report(0)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        gen = torch.Generator().manual_seed(step)
        idx = torch.randint(len(latents), (args.batch,), generator=gen)
        x0, context = latents[idx], texts[idx]
        sigma = args.low + (1 - args.low) * torch.rand(args.batch, 1, generator=gen)
        s5 = sigma[:, None, :, None, None]
        noisy = (1 - s5) * x0 + s5 * frame_noise(x0.shape, gen, pipe.defaults.noise_correlation)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x0_hat = model(noisy, frame_timesteps_to_tokens(sigma * 1000, model.token_grid(*x0.shape[2:])), context)
        loss = (x0_hat.float() - x0).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.every == 0:
            print(f"  {(time.perf_counter() - started) / step:.2f} s a step, loss {loss.item():.4f}", flush=True)
            report(step)
    if args.save:
        shutil.copytree(resolve_model(args.model), args.save)
        (Path(args.save) / "transformer" / "recipe.json").unlink(missing_ok=True)  # it no longer made these weights
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(Path(args.save) / "transformer" / "diffusion_pytorch_model.safetensors"))


if __name__ == "__main__":
    main()
