"""The proxy's shape figures for a model folder trained by the clip recipe (`clip_recipe.patch`).

    python research/tiny_redesign/word_check.py --model FOLDER [--latents WORK/latents.safetensors]

Prints one JSON object:
- `heldout`, `train_split`: proxy.py's judging (100 stills of one object, "a {colour} {shape} on a {background}
  background", 64x64, 20 steps, guidance 4), so a clip model is read on the proxy's own terms;
- `follow`: proxy.py's follow figure for the shape and colour words;
- with `--latents`, `lean`: whether the network has learnt its training blends by heart rather than by the word.
  For 40 training stills a of the 64x64 bucket and their cached other-shape partners b, the midpoint noised to s;
  lean = <x0_hat - (a + b) / 2, a - b> / |a - b|^2 under the empty caption and under the clip's own (0: no lean,
  0.5: all the way to a). A network that knew each clip's true shape from its place and colour would lean to a
  without the caption.
Run it with `clip_recipe.patch` applied: the stills and pairs are drawn at the world's own object sizes, which
the patch makes 1.8x (so proxy.py's scale is 1); on the shipped world they come out smaller and the figures
differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy  # noqa: E402

from sora_cli import Pipeline  # noqa: E402
from sora_cli.models.wan.transformer import frame_timesteps_to_tokens  # noqa: E402


@torch.inference_mode()
def lean(pipe: Pipeline, latents: Path, count: int = 40) -> dict:
    flat = load_file(str(latents))
    a = flat["64x64.still"][:count].float()  # the training stills and their blend partners (another shape)
    b = flat["64x64.shape"][:count].float()
    contexts = {"empty": pipe.encode_text([""] * count).float(), "caption": flat["64x64.captions"][:count, 0].float()}
    dit, gen, out = pipe.transformer, torch.Generator().manual_seed(0), {}
    grid = dit.token_grid(*a.shape[2:])
    for s in (0.5, 0.7, 0.9):
        xt = (1 - s) * (a + b) / 2 + s * torch.randn(a.shape, generator=gen)
        t = frame_timesteps_to_tokens(torch.full((count, 1), s * 1000.0), grid)
        for name, context in contexts.items():
            out[f"{name}@{s}"] = proxy.along(dit(xt, t, context).float() - (a + b) / 2, a - b)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--latents", type=Path, default=None, help="the recipe's latents.safetensors")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model)
    net = types.SimpleNamespace(dit=pipe.transformer, tokens=None)
    figures = {split: proxy.judge_heldout(pipe, 1.0, 100, 4.0, split=split)
               for split in ("heldout", "train")}
    figures["follow"] = proxy.follow(pipe, net, "x0", 1.0)
    if args.latents is not None:
        figures["lean"] = lean(pipe, args.latents)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
