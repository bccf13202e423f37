"""Which object colours survive the embedded model's VAE, in a clip's first frame and in its later frames, and
whether they survive halfway along the latent line from the plain background to the object.

    python benchmarks/vae_colours.py [--model PATH] [--size 0.2]

A still square of each object colour, on each background it is legible on, is rendered as a 9-frame clip and
sent through the VAE's encoder and decoder. The colour at the square's centre is named as the judge names
colours (the nearest named colour). The VAE is causal: the first latent frame encodes frame 0 alone, exactly as
a still image is encoded (image-to-video, `--frames 1`), so the first frame is reported apart from the rest.

Halfway: the latents halfway between the plain background's and the square's are decoded too. A sampler's
early estimates are such blends (an average over where the object might be), so the decoder should show them
as the blend of the two colours; it counts as kept when the centre is nearer that blend than the blend of any
other object colour with the same background. Nothing here is generated.
"""

from __future__ import annotations

import argparse

import numpy as np

from sora_cli import Pipeline
from sora_cli.tiny import judge, world

FRAMES = ("first frame", "later frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=float, default=0.2,
                        help="the square's nominal size (a circle's radius), in frame units")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    checks = [f"{kind}, {frames}" for kind in ("round trip", "halfway") for frames in FRAMES]
    lost_pairs, total = {name: 0 for name in checks}, 0
    # per background: its plain clip's latents, and how to name a centre among the halfway blends
    plain = {bg: pipe.encode(world.draw(world.Scene(background=bg, objects=[]), 9, 64, 64))
             for bg in world.BACKGROUNDS}
    halfway_name = {bg: nearest_in({c: (np.array(world.COLORS[c], float) + world.COLORS[bg]) / 2
                                    for c in world.OBJECT_COLORS if world.legible(c, bg)})
                    for bg in world.BACKGROUNDS}
    for color in world.OBJECT_COLORS:
        lost: dict[str, list[str]] = {name: [] for name in checks}
        obj = world.ObjectSpec(shape="square", color=color, motion="still", speed="slow", size=args.size,
                               angle=0.0, x=0.5, y=0.5)
        for background in world.BACKGROUNDS:
            if not world.legible(color, background):
                continue
            latents = pipe.encode(world.draw(world.Scene(background=background, objects=[obj]), 9, 64, 64))
            for kind, z, name_of in (("round trip", latents, judge.nearest_color),
                                     ("halfway", (latents + plain[background]) / 2, halfway_name[background])):
                decoded = pipe.decode(z)
                centre = decoded[:, 28:36, 28:36].reshape(len(decoded), -1, 3).mean(1)  # (T, 3)
                named = [name_of(c) for c in centre]
                later = max(set(named[1:]), key=named[1:].count)  # the colour most later frames show
                for frames, got in zip(FRAMES, (named[0], later)):
                    if got != color:
                        lost[f"{kind}, {frames}"].append(f"{background}->{got}")
            total += 1
        for name in checks:
            lost_pairs[name] += len(lost[name])
        print(f"{color:<8} " + "; ".join(f"{name}: {', '.join(lost[name]) or 'all kept'}" for name in checks))
    for name, n in lost_pairs.items():
        kept = total - n
        print(f"{name}: {kept}/{total} colour-background pairs keep the object's colour ({kept / total:.0%})")


def nearest_in(candidates: dict[str, np.ndarray]):
    """Names an RGB value by the nearest of `candidates` (name -> RGB)."""
    return lambda rgb: min(candidates, key=lambda c: float(np.sum((candidates[c] - rgb) ** 2)))


if __name__ == "__main__":
    main()
