"""Which caption words the embedded model's transformer follows: the object's colour, its shape, its direction.

    python benchmarks/probe_word_use.py [--model PATH] [--checkpoint WORK/dit.safetensors] [--scenes 40]

For training-split scenes with one object, two clips are rendered that differ in one fact only (a red circle and
a red square at the same place; a circle moving left and the same circle moving right from the same start), and
their latents a and b are encoded. The transformer then sees their midpoint, (a + b) / 2, noised to a level, and
estimates the clean clip twice: with the caption of a and with the caption of b. The figure is how far the
second estimate lies from the first along b - a, as a share of |b - a|:

    follow = <x0_hat(b's caption) - x0_hat(a's caption), b - a> / |b - a|^2

1 means the word alone moves the estimate all the way from one clip to the other; 0 that the word is ignored.
The input shows neither clip more than the other, so only the word can tell them apart. One forward pass per
scene, word and level, so a checkpoint can be probed while a run goes on (`--checkpoint`), long before
`eval_sora_tiny.py` can tell anything from whole samples.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from sora_cli import world
from sora_cli.models.transformer import frame_timesteps_to_tokens

from probing import probe_parser, probed_pipeline

LEVELS = (0.3, 0.5, 0.7, 0.9)
WORDS = ("colour", "shape", "direction")


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
    if word == "direction":  # from the centre, so that neither direction leaves the frame
        obj.motion, obj.speed, obj.x, obj.y = ("left", "right")[rng.integers(2)], "fast", 0.5, 0.5
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
    return scene, other


@torch.no_grad()
def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args()
    pipe = probed_pipeline(args)
    model = pipe.transformer
    follow = {(w, s): [] for w in WORDS for s in LEVELS}
    for word in WORDS:
        draw, done = 0, 0
        while done < args.scenes:
            rng = np.random.default_rng([91, WORDS.index(word), draw])
            draw += 1
            scenes = pair(rng, word)
            if scenes is None:
                continue
            done += 1
            a, b = (pipe.encode(world.render(s, args.frames, 64, 64)) for s in scenes)
            context = pipe.encode_text([caption(s.objects[0], s.background) for s in scenes])
            along = (b - a).flatten()
            grid = model.token_grid(*a.shape[2:])
            for s in LEVELS:
                noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(draw))
                xt = ((1 - s) * (a + b) / 2 + s * noise).expand(2, -1, -1, -1, -1)
                estimate = model(xt, frame_timesteps_to_tokens(torch.full((2, a.shape[2]), s * 1000.0), grid), context)
                if pipe.sampler.prediction == "flow_prediction":  # a velocity noise - x0: take x0 from it
                    estimate = xt - s * estimate
                follow[word, s].append(float((estimate[1] - estimate[0]).flatten() @ along / (along @ along)))
    print(f"{args.scenes} training-split scenes a word, {args.frames} frames at 64x64; "
          "follow: 1 = the word moves the estimate all the way, 0 = ignored (mean +- standard error)")
    print("noise   " + "".join(f"{w:>18}" for w in WORDS))
    for s in LEVELS:
        cells = [follow[w, s] for w in WORDS]
        print(f"{s:5.2f}   " + "".join(f"{np.mean(c):10.3f} +-{np.std(c) / np.sqrt(len(c)):5.3f}" for c in cells))


if __name__ == "__main__":
    main()
