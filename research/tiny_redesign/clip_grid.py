"""The clip recipe's picture: what a model folder draws for each shape word, and how it moves two objects.

    python research/tiny_redesign/clip_grid.py --model FOLDER --out runs/NAME.png [--passes 1|2]

Rows: "a red SHAPE on a white background" (circle, square, triangle, star, diamond; the first frame, seeds 1
and 2); then frames 0, 4, 8, 12 and 16 of "a red circle moving right on a black background" and "a blue square
moving up on a white background" (seed 1). 64x64 frames shown at 128x128.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy import draw_batch  # noqa: E402

from sora_cli import Pipeline  # noqa: E402
from sora_cli.tiny import world  # noqa: E402

MOVING = ("a red circle moving right on a black background", "a blue square moving up on a white background")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--passes", type=int, choices=(1, 2), default=None, help="default: the model's")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model)
    stills = draw_batch(pipe, [f"a red {s} on a white background" for s in world.SHAPES] * 2, [1] * 5 + [2] * 5)
    rows = [np.concatenate([f[0] for f in stills[i:i + 5]], 1) for i in (0, 5)]
    for prompt in MOVING:
        frames = pipe(prompt, height=64, width=64, num_frames=17, seed=1, passes=args.passes).frames
        rows.append(np.concatenate(list(frames[::4]), 1))
    picture = Image.fromarray(np.concatenate(rows, 0))
    picture.resize((picture.width * 2, picture.height * 2), Image.NEAREST).save(args.out, optimize=True)


if __name__ == "__main__":
    main()
