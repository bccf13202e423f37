"""Prompt adherence of the embedded model on held-out captions, judged from the decoded frames alone.

    python benchmarks/eval_sora_tiny.py [--clips 100] [--seed N] [--model PATH] [--passes 1|2] [--out results.json]
                                        [--through-vae] [--frames 17]

Captions come from the world's held-out split: (shape, colour, background, motion) combinations and phrasings
that training never saw. Each clip is generated at one of the five aspect-ratio buckets and measured with
`sora_cli.tiny.judge`: background colour, object colour, shape, motion (all 13 kinds) and, for the 8 directional
motions, direction; plus whether the object stays in frame. Also reports the VAE's reconstruction PSNR on
held-out clips. `--frames 1` judges text-to-image instead: colour, background and shape mean the same there;
motion and direction do not (one frame is judged still).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from sora_cli import Pipeline
from sora_cli.tiny import captions, judge, world


def in_frame(frames: np.ndarray, background: str) -> bool:
    """The border stays background in every frame: the object never leaves or touches the edge."""
    bg = np.array(world.COLORS[background], np.float32)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    far = np.abs(border.astype(np.float32) - bg).max(axis=-1) > 96
    return bool(far.mean() < 0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--passes", type=int, choices=(1, 2), default=None, help="default: the model's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--through-vae", action="store_true",
                        help="judge each caption's true clip after the VAE instead of a generated one: the ceiling "
                             "the VAE sets on these figures")
    args = parser.parse_args()

    pipe = Pipeline.from_pretrained(args.model)
    sizes = sorted({world.bucket_size(w, h, 64 * 64) for w, h in world.ASPECTS})
    hits: dict[str, list[bool]] = defaultdict(list)
    for i in range(args.clips):
        rng = np.random.default_rng([args.seed, i])
        scene = world.sample_scene(rng, "heldout", num_objects=1)
        text = captions.caption(scene, rng, "heldout")
        height, width = sizes[i % len(sizes)]
        if args.through_vae:
            frames, fps = pipe.decode(pipe.encode(world.draw(scene, args.frames, height, width))), world.FPS
        else:
            video = pipe(text, height=height, width=width, num_frames=args.frames, num_steps=args.steps,
                         guidance_scale=args.guidance, seed=args.seed * 100003 + i, passes=args.passes)
            frames, fps = video.frames, video.fps
        verdict = judge.agreement(judge.scene_facts(scene), judge.judge_clip(frames, fps))
        for key, ok in verdict.items():
            hits[key].append(ok)
        if scene.objects[0].motion in world.DIRECTIONS:
            hits["direction"].append(verdict["motion"])
        hits["in_frame"].append(in_frame(frames, scene.background))
        if width != height:
            hits["wide_or_tall_in_frame"].append(hits["in_frame"][-1])
        print(f"{i:3d} {width}x{height} {'ok ' if all(verdict.values()) else 'MISS'} {text!r} "
              f"{ {k: v for k, v in verdict.items() if not v} or ''}", flush=True)

    from sora_cli.tiny.train.vae import evaluate_psnr

    figures = {k: round(float(np.mean(v)), 3) for k, v in hits.items()}
    figures["clips"], figures["frames"] = args.clips, args.frames
    figures["passes"] = args.passes or pipe.defaults.passes
    figures["vae_heldout_psnr_db"] = evaluate_psnr(pipe.vae, args.seed)
    print(json.dumps(figures, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
