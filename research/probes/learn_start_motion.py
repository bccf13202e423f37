"""Can the transformer learn to move a known first frame's object the way the caption says? Trained on that alone.

    python research/probes/learn_start_motion.py [--model PATH] [--steps 3000] [--every 750] [--clips 512] [--save DIR]

`probe_word_use.py` finds the shipped transformer deaf to direction words even when a clip's first latent frame
is given clean, where the word alone decides where the object goes. This script asks whether the network can
learn it at all: from the model's weights, it trains on that task only (one object of the training split moving
left, right, up or down, fast, captioned so; the first latent frame clean, the rest noised to one level between
0.5 and 1; the squared error of the x0 estimate on the noised frames) and every `--every` steps prints two figures
on fixed scenes that start at the centre:
- follow: `probe_word_use.py`'s figure for the direction pair with the start known and the rest pure noise;
- travel: in pixels, how far the decoded estimate's object travels along the asked direction from the first
  frame to the last, against the clip's own travel.
About 0.5 s a step on 2 CPU cores (2250 steps: 18 min). `--save DIR` writes the model with the trained
transformer as a model folder there (for `animate_first_frame.py`); otherwise nothing is written.
"""

from __future__ import annotations

import numpy as np
import torch

from sora_cli.tiny import world
from sora_cli.tiny.train.start_motion import DRILL_SIZE, drill_scenes, start_known_loss, template_caption

from probe_word_use import estimates, follow_along, pair
from probing import drill, drill_parser, drilled_pipeline

@torch.no_grad()
def training_set(pipe, clips: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, F, h, w) latents of 17-frame 64x64 clips and (N, L, D) their captions' text states: the recipe's
    drill clips (`sora_cli/tiny/train/start_motion.py`)."""
    scenes = drill_scenes(np.random.default_rng(0), clips)
    latents = [pipe.encode(world.draw(scene, *DRILL_SIZE))[0] for scene, _ in scenes]
    return torch.stack(latents), pipe.encode_text([text for _, text in scenes])


def centroid_x(frames: np.ndarray, background: str) -> np.ndarray:
    """(T,) the horizontal centre of what differs from the background in each frame (NaN where nothing does)."""
    weight = np.clip(np.abs(frames.astype(float) - world.COLORS[background]).sum(-1) - 60, 0, None)  # (T, H, W)
    mass = weight.sum((1, 2))
    x = (weight * np.arange(frames.shape[2])).sum((1, 2)) / np.maximum(mass, 1e-6)
    return np.where(mass > 50, x, np.nan)


@torch.no_grad()
def measure(pipe, scenes: int = 12) -> tuple[float, float, float]:
    """(follow, estimated travel, true travel) on direction pairs that start at the centre, start known."""
    pipe.transformer.eval()
    follow, travel, truth = [], [], []
    for draw in range(scenes):
        scenes_ab = pair(np.random.default_rng([91, 2, draw]), "direction")
        if scenes_ab is None:
            continue
        clips = [world.draw(s, 17, 64, 64) for s in scenes_ab]
        a, b = (pipe.encode(c) for c in clips)
        context = pipe.encode_text([template_caption(s.objects[0], s.background) for s in scenes_ab])
        estimate = estimates(pipe, a, b, context, 1.0, known_start=True, seed=draw)  # the rest pure noise
        follow.append(follow_along(estimate, a, b))
        for k, scene in enumerate(scenes_ab):
            sign = 1 if scene.objects[0].motion == "right" else -1
            for made, out in ((pipe.decode(estimate[k:k + 1]), travel), (clips[k], truth)):
                x = centroid_x(made, scene.background)
                out.append(sign * (x[-1] - x[0]))
    pipe.transformer.train()
    return float(np.mean(follow)), float(np.nanmean(travel)), float(np.mean(truth))


def main() -> None:
    parser = drill_parser(__doc__, every=750, batch=16)
    parser.add_argument("--clips", type=int, default=512)
    pipe, args = drilled_pipeline(parser)
    latents, texts = training_set(pipe, args.clips)

    def loss_at(gen: torch.Generator) -> torch.Tensor:  # the recipe's drill stage, on these clips
        idx = torch.randint(len(latents), (args.batch,), generator=gen)
        return start_known_loss(pipe.transformer, latents[idx], texts[idx], gen, pipe.defaults.noise_correlation)

    drill(pipe, args, loss_at, lambda step: print(
        "step {:5d}  follow {:.3f}  travel {:5.1f} px of {:.1f}".format(step, *measure(pipe)), flush=True))


if __name__ == "__main__":
    main()
