"""Whether a clip-recipe model reads the shape word less in the evaluation's captions than in a plain template.

    python research/tiny_redesign/caption_check.py --model FOLDER [--clips 100] [--seed 1]

The held-out scenes `benchmarks/eval_sora_tiny.py` draws for a seed (one object, sizes a path caps), each drawn
as one 64x64 frame twice, from the same noise: under the evaluation's caption (held-out templates and synonyms,
motion words) and under "a {colour} {shape} on a {background} background"; the shape judged in each. Prints the
shares as JSON. Run it with `clip_recipe.patch` applied (its world).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "research" / "probes"))

from sora_cli import Pipeline  # noqa: E402
from sora_cli.tiny import captions, judge, world  # noqa: E402

from probe_word_use import caption  # noqa: E402
from proxy import draw_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model)
    scenes, texts = [], []
    for i in range(args.clips):  # as eval_sora_tiny.py draws them
        rng = np.random.default_rng([args.seed, i])
        scenes.append(world.sample_scene(rng, "heldout", num_objects=1))
        texts.append(captions.caption(scenes[-1], rng, "heldout"))
    seeds = [args.seed * 100003 + i for i in range(args.clips)]
    out = {}
    for name, prompts in (("evaluation", texts), ("template", [caption(s.objects[0], s.background) for s in scenes])):
        frames = draw_batch(pipe, prompts, seeds)
        hits = [judge.agreement(judge.scene_facts(s), judge.judge_clip(f, world.FPS))["shape"]
                for s, f in zip(scenes, frames)]
        out[name] = round(float(np.mean(hits)), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
