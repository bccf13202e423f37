"""The judge's shape share on frames no generator made: the drawn held-out frames, and their VAE round trip.

    python research/tiny_redesign/ceiling.py [--size-scale 1.0 1.8]

What a perfect transformer could reach on proxy.py's judgement (the held-out scenes, one 64x64 frame each),
so that its figures can be read against a ceiling.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probes"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sora_cli import Pipeline  # noqa: E402
from sora_cli.tiny import judge, world  # noqa: E402

from learn_layout import still_scenes  # noqa: E402
from proxy import scaled  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--size-scale", type=float, nargs="+", default=[1.0, 1.8])
parser.add_argument("--count", type=int, default=100)
args = parser.parse_args()
torch.set_num_threads(1)
pipe = Pipeline.from_pretrained(None, device="cpu")
for k in args.size_scale:
    scenes = scaled(still_scenes("heldout", args.count, 1), k)
    for source in ("drawn", "vae"):
        hits = {"color": [], "shape": [], "background": []}
        for s in scenes:
            frames = world.draw(s, 1, 64, 64)
            if source == "vae":
                with torch.no_grad():
                    frames = pipe.decode(pipe.encode(frames))
            verdict = judge.agreement(judge.scene_facts(s), judge.judge_clip(frames, world.FPS))
            for key in hits:
                hits[key].append(verdict[key])
        print(f"size x{k} {source}: " + ", ".join(f"{key} {np.mean(v):.0%}" for key, v in hits.items()), flush=True)
