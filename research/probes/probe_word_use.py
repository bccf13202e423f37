"""Which caption words the embedded model's transformer follows: the object's colour, its shape, its direction.

    python research/probes/probe_word_use.py [--model PATH] [--checkpoint WORK/dit.safetensors] [--scenes 40]

For training-split scenes with one object, two clips are rendered that differ in one fact only (a red circle and
a red square at the same place; a circle moving left and the same circle moving right from the frame's centre),
and their latents a and b are encoded. The transformer then sees their midpoint, (a + b) / 2, noised to a level, and
estimates the clean clip twice: with the caption of a and with the caption of b. The figure is how far the
second estimate lies from the first along b - a, as a share of |b - a|:

    follow = <x0_hat(b's caption) - x0_hat(a's caption), b - a> / |b - a|^2

1 means the word alone moves the estimate all the way from one clip to the other; 0 that the word is ignored.
The input shows neither clip more than the other, so only the word can tell them apart. The last column gives
the direction pairs' first latent frame clean (both clips start alike), as image-to-video and extension do: the
start is then known exactly and the word alone decides where the object goes. One forward pass per
scene, word and level, so a checkpoint can be probed while a run goes on (`--checkpoint`), long before
`eval_sora_tiny.py` can tell anything from whole samples.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from sora_cli.models.wan.transformer import frame_timesteps_to_tokens
from sora_cli.tiny import world

from probing import probe_parser, probed_pipeline

LEVELS = (0.3, 0.5, 0.7, 0.9)
WORDS = ("colour", "shape", "direction")
COLUMNS = (*WORDS, "direction, start known")


def caption(obj: world.ObjectSpec, background: str) -> str:
    motion = f" moving {obj.motion} fast" if obj.motion in world.DIRECTIONS else ""
    article = "an" if obj.color[0] in "aeiou" else "a"
    return f"{article} {obj.color} {obj.shape}{motion} on a {background} background"


def pair(rng: np.random.Generator, word: str) -> tuple[world.Scene, world.Scene] | None:
    """Two scenes that differ only in `word`'s fact, or None when the drawn scene does not suit."""
    scene = world.sample_scene(rng, "train", num_objects=1)
    obj = scene.objects[0]
    if not world.legible(obj.color, scene.background):
        return None
    obj.motion, obj.angle = "still", 0.0
    if word == "direction":  # small, from the centre, so that neither direction leaves the frame
        obj.motion, obj.speed, obj.size, obj.y = ("left", "right")[rng.integers(2)], "fast", min(obj.size, 0.1), 0.5
    other = copy.deepcopy(scene)
    if word == "colour":
        choices = [c for c in world.OBJECT_COLORS if c not in (obj.color, scene.background)
                   and world.legible(c, scene.background)]
        other.objects[0].color = choices[rng.integers(len(choices))]
    elif word == "shape":
        choices = [s for s in world.SHAPES if s != obj.shape]
        other.objects[0].shape = choices[rng.integers(len(choices))]
    else:
        other.objects[0].motion = "right" if obj.motion == "left" else "left"
        if not all(start_at_centre(o.objects[0]) for o in (scene, other)):
            return None
    return scene, other


def start_at_centre(obj: world.ObjectSpec, frames: int = 17) -> bool:
    """Place a left or right mover so that it starts at the centre of a square frame; False if it cannot."""
    box = (0.0, 0.0, 1.0, 1.0)
    begin = [world.trajectory(world.ObjectSpec(**{**vars(obj), "x": x}), frames, world.FPS, box, box)[0][0, 0]
             for x in (0.0, 1.0)]  # the start is linear in the placement x
    obj.x = (0.5 - begin[0]) / (begin[1] - begin[0]) if begin[1] != begin[0] else 0.5
    return 0.0 <= obj.x <= 1.0


def estimates(pipe, a: torch.Tensor, b: torch.Tensor, context: torch.Tensor, s: float, known_start: bool,
              seed: int) -> torch.Tensor:
    """(2, C, F, h, w): the transformer's clean-clip estimates with a's and b's captions from their midpoint noised
    to s; with `known_start` the first latent frame is a's (both clips start alike), clean, at timestep 0."""
    model = pipe.transformer
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(seed))
    xt = ((1 - s) * (a + b) / 2 + s * noise).expand(2, -1, -1, -1, -1).clone()
    sigmas = torch.full((2, a.shape[2]), s)
    if known_start:
        xt[:, :, 0], sigmas[:, 0] = a[:, :, 0], 0.0
    estimate = model(xt, frame_timesteps_to_tokens(sigmas * 1000, model.token_grid(*a.shape[2:])), context)
    if pipe.sampler.prediction == "flow_prediction":  # a velocity noise - x0: take x0 from it
        estimate = xt - sigmas[:, None, :, None, None] * estimate
    return estimate


def follow_along(pair_estimates: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """How far the second caption's estimate lies from the first's along b - a, as a share of |b - a|."""
    along = (b - a).flatten()
    return float((pair_estimates[1] - pair_estimates[0]).flatten() @ along / (along @ along))


@torch.no_grad()
def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args()
    pipe = probed_pipeline(args)
    follow = {(c, s): [] for c in COLUMNS for s in LEVELS}
    for word in WORDS:
        draw, done = 0, 0
        while done < args.scenes:
            rng = np.random.default_rng([91, WORDS.index(word), draw])
            draw += 1
            scenes = pair(rng, word)
            if scenes is None:
                continue
            done += 1
            a, b = (pipe.encode(world.draw(s, args.frames, 64, 64)) for s in scenes)
            context = pipe.encode_text([caption(s.objects[0], s.background) for s in scenes])
            for column in [c for c in COLUMNS if c.startswith(word)]:
                for s in LEVELS:
                    pair_estimates = estimates(pipe, a, b, context, s, known_start=column != word, seed=draw)
                    follow[column, s].append(follow_along(pair_estimates, a, b))
    print(f"{args.scenes} training-split scenes a word, {args.frames} frames at 64x64; "
          "follow: 1 = the word moves the estimate all the way, 0 = ignored (mean +- standard error)")
    print("noise   " + "".join(f"{c:>24}" for c in COLUMNS))
    for s in LEVELS:
        cells = [follow[c, s] for c in COLUMNS]
        print(f"{s:5.2f}   " + "".join(f"{np.mean(c):16.3f} +-{np.std(c) / np.sqrt(len(c)):5.3f}" for c in cells))


if __name__ == "__main__":
    main()
