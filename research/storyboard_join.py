"""Where a storyboard's prompt changes: cut on a window boundary, or blend the two prompts over the straddling window?

    python research/storyboard_join.py [--pairs 6] [--seeds 2] [--steps 20] [--threads N]

Two-shot storyboards on sora-tiny (2 s each, 8 fps: 17 + 16 frames), the second shot changing one word of the
first (the object's colour, or the background). Each is made two ways:

- cut: what `storyboard.py` does. The second shot starts on a window boundary at its first latent frame; every
  window is made from one prompt, the first of the second shot carrying the last latent frames of the first.
- blend: the windows of one long video (no boundary placed at the change); a window whose new frames lie on both
  sides gets the two prompts' encodings mixed by the share of its new frames in each shot.

Figures, per way, over all storyboards (the judge reads each frame's colour and background):
- seam: the largest frame-to-frame change (mean absolute RGB difference) within 8 frames of the change, over the
  clip's median frame step (the loop-seam measure of eval_editing.py: near 1 is continuous, a hard cut is large);
- middle: the share of shots whose middle frame the judge reads as its prompt says;
- settle: frames from the change until the judge reads the second prompt's word (the transition's length).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from sora_cli import Pipeline, chain, storyboard
from sora_cli.shots import Shot
from sora_cli.tiny import judge

PAIRS = [  # (first prompt, second prompt, word that changes: "color" or "background")
    ("a red circle on a black background", "a blue circle on a black background", "color"),
    ("a yellow square on a black background", "a green square on a black background", "color"),
    ("a white star on a blue background", "a red star on a blue background", "color"),
    ("a red circle on a black background", "a red circle on a white background", "background"),
    ("a green triangle on a white background", "a green triangle on a gray background", "background"),
    ("a blue square on a white background", "a yellow square on a white background", "color"),
]


def blended(pipe: Pipeline, shots: tuple[Shot, ...], seed: int, steps: int) -> np.ndarray:
    """The storyboard made as one long video whose straddling window mixes the two prompts' encodings."""
    job = pipe.resolve(shots[-1].prompt, seed=seed, num_steps=steps)
    st = pipe.temporal_stride
    lengths = [max(1, round(s.seconds * job.fps / st)) for s in shots]
    cut = 1 + lengths[0]
    plan = chain.Plan(1 + sum(lengths), *chain.model_window(pipe), anchor=True)
    a, b = (pipe.encode_prompt(dataclasses.replace(job, prompt=s.prompt)) for s in shots)

    def context(s: int, e: int) -> torch.Tensor:
        opening = 1 if s > 0 else 0
        # the window's new frames: those past what earlier windows made (at most the overlap is carried)
        made = [p for p in range(s + opening, e) if p >= max(done_until[0], s + opening)]
        w = sum(p >= cut for p in made) / max(1, len(made))
        done_until[0] = e
        return (1 - w) * a + w * b

    done_until = [0]
    latents = chain.run(pipe, job, context, plan, job.generator())
    count = 1 + st * (plan.length - 1)
    return np.concatenate(list(chain.decode(pipe, latents, 0, count)))


def measure(frames: np.ndarray, change: int, word: str, words: tuple[str, str], fps: float) -> dict:
    steps = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    near = steps[max(0, change - 8):change + 8]
    read = [getattr(judge.judge_clip(frames[i:i + 1], fps), word) for i in range(len(frames))]
    settle = next((i - change for i in range(change, len(frames)) if read[i] == words[1]), None)
    middles = [read[change // 2] == words[0], read[(change + len(frames)) // 2] == words[1]]
    return dict(seam=float(near.max() / max(np.median(steps), 1e-6)), middle=middles, settle=settle)


def word_of(prompt: str, word: str) -> str:
    facts = judge.parse_caption(prompt)
    return facts.background if word == "background" else facts.objects[0].color


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=len(PAIRS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(None, device="cpu")
    rows = {"cut": [], "blend": []}
    started = time.time()
    for first, second, word in PAIRS[:args.pairs]:
        shots = (Shot(first, 2.0), Shot(second, 2.0))
        words = (word_of(first, word), word_of(second, word))
        for seed in range(args.seeds):
            made = storyboard.make(pipe, shots, seed=seed, num_steps=args.steps)
            cut_frames = np.concatenate(list(made.chunks))
            change = made.metadata["storyboard"][1]["first_frame"]
            for way, frames in (("cut", cut_frames), ("blend", blended(pipe, shots, seed, args.steps))):
                row = measure(frames, change, word, words, made.fps)
                rows[way].append(row)
                print(way, first, "->", second, seed, json.dumps(row), flush=True)
    summary = {}
    for way, rs in rows.items():
        settles = [r["settle"] for r in rs if r["settle"] is not None]
        summary[way] = dict(seam_median=round(float(np.median([r["seam"] for r in rs])), 2),
                            seam_max=round(float(np.max([r["seam"] for r in rs])), 2),
                            middle=round(float(np.mean([m for r in rs for m in r["middle"]])), 2),
                            settle_median=float(np.median(settles)) if settles else None,
                            never_settled=sum(r["settle"] is None for r in rs), clips=len(rs))
    print(json.dumps(dict(summary=summary, minutes=round((time.time() - started) / 60, 1)), indent=1))


if __name__ == "__main__":
    main()
