"""Text-to-video direction in one pass, and in two: draw the clip, then keep its first latent frame and generate the
rest again from it, with the frame given clean (`--passes 2`, `Pipeline.denoise`; the image-to-video mechanism).

    python benchmarks/animate_first_frame.py [--model PATH] [--clips 48] [--captions heldout]

Why two passes: with nothing known, where the object is and where it goes are decided together at high noise, and
the word "left" barely shifts a blurred average; with the start known, the word alone decides the path, which a
transformer can learn (`learn_start_motion.py`, and the recipe's drill and settle stages). One object of the
held-out split moving left, right, up or down, fast, 64x64, the same seed in both; captions from the drill's
template or the held-out phrasings. Two figures a pass:
- judged: `sora_cli.tiny.judge` calls the motion that direction (what `eval_sora_tiny.py` counts);
- travel: the centroid's net travel points within 23 degrees of the asked direction and is at least 0.1 of the
  frame (a growing or splitting blob the judge calls "grow" still counts here).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sora_cli import Pipeline
from sora_cli.tiny import captions, judge, world
from sora_cli.tiny.train.start_motion import DRILL_DIRECTIONS, template_caption


def travels_as_asked(judgement: judge.Judgement, motion: str) -> bool:
    moved, asked = np.array(judgement.displacement), np.array(world.DIRECTIONS[motion], float)
    length = np.linalg.norm(moved)
    return bool(length >= 0.1 and moved @ asked / (length * np.linalg.norm(asked)) > 0.92)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--captions", choices=("template", "heldout"), default="template")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    hits = {f"{p} {k}": [] for p in ("one pass", "two passes") for k in ("judged", "travel")}
    for i in range(args.clips):
        rng = np.random.default_rng([7, i])
        scene = world.sample_scene(rng, "heldout", num_objects=1)
        obj = scene.objects[0]
        obj.motion, obj.speed, obj.angle = DRILL_DIRECTIONS[i % 4], "fast", 0.0
        if args.captions == "template":
            text = template_caption(obj, scene.background)
        else:
            text = captions.caption(scene, rng, "heldout")
        row = []
        for name, passes in (("one pass", 1), ("two passes", 2)):
            job = pipe.resolve(text, height=64, width=64, num_frames=17, seed=i, passes=passes)
            latents = pipe.denoise(job, pipe.encode_prompt(job), pipe.draw_noise(job, torch.Generator().manual_seed(i)))
            judgement = judge.judge_clip(pipe.decode(latents), world.FPS)
            hits[f"{name} judged"].append(judgement.motion == obj.motion)
            hits[f"{name} travel"].append(travels_as_asked(judgement, obj.motion))
            row.append(f"{judgement.motion:>9} {np.round(judgement.displacement, 2)}")
        print(f"{i:3d} {obj.motion:>5}  {' | '.join(row)}  {text!r}", flush=True)
    for key, values in hits.items():
        print(f"{key:>18}: {np.mean(values):.0%}")


if __name__ == "__main__":
    main()
