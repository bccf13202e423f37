"""How much each caption word can lower the denoising loss, and up to which noise level the frame itself tells it.

    python research/tiny_redesign/word_signal.py [--size-scale 1.0 1.8] [--scenes 60]

For training scenes of one still object, the frame is drawn once per value of one word (all 5 shapes; every
colour legible on that background; 5 placements across the frame, "position") with everything else equal, and encoded. Two figures per word:

  gain:  the mean over values of |z_value - mean z|^2 (latent units, summed over the 16x16x16 latent), what knowing
         the word saves an x0 estimate whose input no longer shows it (high noise).
  s*:    the noise level above which a noised latent no longer tells two values apart: with x_s = (1 - s) z + s n
         the two are (1 - s) |z_a - z_b| / s standard deviations apart, 1 at s* = d / (1 + d), d the median
         pairwise distance. Below s* the frame shows the word and the caption is not needed.

Then, for the recipe's noise draw (shift 3) and logit-normal, the share of training samples above each s*.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probes"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import copy  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sora_cli import Pipeline  # noqa: E402
from sora_cli.tiny import world  # noqa: E402

from learn_layout import still_scenes  # noqa: E402
from proxy import scaled  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--size-scale", type=float, nargs="+", default=[1.0, 1.8])
parser.add_argument("--scenes", type=int, default=60)
args = parser.parse_args()
torch.set_num_threads(1)
pipe = Pipeline.from_pretrained(None, device="cpu")
u = np.random.default_rng(0).random(200000)
draws = {"shift 3": 3 * u / (1 + 2 * u),
         "logit-normal": 1 / (1 + np.exp(-np.random.default_rng(1).standard_normal(200000)))}
for k in args.size_scale:
    stats = {"shape": ([], []), "colour": ([], []), "position": ([], [])}
    for scene in scaled(still_scenes("train", args.scenes, 2), k):
        obj = scene.objects[0]
        obj.angle = 0.0
        for word, values in (("shape", world.SHAPES),
                             ("colour", [c for c in world.OBJECT_COLORS if world.legible(c, scene.background)]),
                             ("position", [(0.1, 0.1), (0.9, 0.2), (0.5, 0.5), (0.2, 0.8), (0.8, 0.9)])):
            zs = []
            for v in values:
                s = copy.deepcopy(scene)
                if word == "position":
                    s.objects[0].x, s.objects[0].y = v
                else:
                    setattr(s.objects[0], "shape" if word == "shape" else "color", v)
                with torch.no_grad():
                    zs.append(pipe.encode(world.draw(s, 1, 64, 64)).flatten())
            z = torch.stack(zs)
            stats[word][0].append(float((z - z.mean(0)).pow(2).sum(1).mean()))
            stats[word][1].append(float(torch.pdist(z).median()))
    for word, (gain, dist) in stats.items():
        d = float(np.median(dist))
        star = d / (1 + d)
        above = ", ".join(f"{name} {np.mean(x > star):.0%}" for name, x in draws.items())
        print(f"size x{k} {word}: gain {np.median(gain):.1f}, pairwise distance {d:.1f}, s* {star:.3f}; "
              f"samples above s*: {above}", flush=True)
