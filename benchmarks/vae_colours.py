"""Which object colours survive the embedded model's VAE, in a clip's first frame and in its later frames.

    python benchmarks/vae_colours.py [--model PATH] [--size 0.2]

A still square of each object colour, on each background it is legible on, is rendered as a 9-frame clip and
sent through the VAE's encoder and decoder. The colour at the square's centre is named as the judge names
colours (the nearest named colour). The VAE is causal: the first latent frame encodes frame 0 alone, exactly as
a still image is encoded (image-to-video, `--frames 1`), so the first frame is reported apart from the rest.
Nothing here is generated; the DiT can only draw colours that this round trip keeps.
"""

from __future__ import annotations

import argparse

from sora_cli import Pipeline, judge, world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=float, default=0.2,
                        help="the square's nominal size (a circle's radius), in frame units")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    frames = ("first frame", "later frames")
    lost_pairs = {name: 0 for name in frames}
    total = 0
    for color in world.OBJECT_COLORS:
        lost: dict[str, list[str]] = {name: [] for name in frames}
        for background in world.BACKGROUNDS:
            if not world.legible(color, background):
                continue
            obj = world.ObjectSpec(shape="square", color=color, motion="still", speed="slow", size=args.size,
                                   angle=0.0, x=0.5, y=0.5)
            clip = world.render(world.Scene(background=background, objects=[obj]), 9, 64, 64)
            decoded = pipe.decode(pipe.encode(clip))
            centre = decoded[:, 28:36, 28:36].reshape(len(decoded), -1, 3).mean(1)  # (T, 3)
            named = [judge.nearest_color(c) for c in centre]
            later = max(set(named[1:]), key=named[1:].count)  # the colour most later frames show
            for name, got in zip(frames, (named[0], later)):
                if got != color:
                    lost[name].append(f"{background}->{got}")
            total += 1
        for name in frames:
            lost_pairs[name] += len(lost[name])
        print(f"{color:<8} " + "; ".join(f"{name}: {', '.join(lost[name]) or 'all kept'}" for name in frames))
    for name, n in lost_pairs.items():
        kept = total - n
        print(f"{name}: {kept}/{total} colour-background pairs keep the object's colour ({kept / total:.0%})")

if __name__ == "__main__":
    main()
