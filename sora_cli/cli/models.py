"""`sora models`: the models sora knows, where each would come from, and what each needs and makes."""

from __future__ import annotations

import json

import typer

# What each known model is, as its makers publish it: transformer parameters in billions (two experts count
# twice: both are held), its native size and frame rate, and how it takes given frames (--image, --last-image,
# extend, loop, connect). Weights memory is computed from the parameters at bf16 (the text encoder, UMT5-XXL,
# visits the device only to encode and is not counted).
CATALOG = {
    "sora-tiny": (0.005, "64x64, 8 fps", "clean tokens (trained for them): every editing feature"),
    "wan2.1-t2v-1.3b": (1.3, "832x480, 16 fps", "latent replacement (a text-to-video model)"),
    "wan2.1-t2v-14b": (14, "832x480 (also 1280x720), 16 fps", "latent replacement (a text-to-video model)"),
    "wan2.2-t2v-a14b": (2 * 14, "1280x720, 16 fps", "latent replacement (a text-to-video model)"),
    "wan2.2-ti2v-5b": (5, "1280x704, 24 fps", "native: given frames clean at timestep 0"),
    "wan2.1-i2v-14b-480p": (14, "832x480, 16 fps", "native: first frame as input channels (needs --image)"),
    "wan2.1-i2v-14b-720p": (14, "1280x720, 16 fps", "native: first frame as input channels (needs --image)"),
    "wan2.1-flf2v-14b-720p": (14, "1280x720, 16 fps", "native: first and last frame (needs both)"),
    "wan2.2-i2v-a14b": (2 * 14, "1280x720, 16 fps", "native: first, or first and last frame (needs --image)"),
}


def models(json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List the models sora knows: where each comes from, its size, native resolution and frame rate, the
    memory its weights need, and how it takes given frames."""
    from ..loading import DEFAULT_MODEL, KNOWN_MODELS, cached_location

    rows = []
    for name, source in KNOWN_MODELS.items():
        where = cached_location(source)
        params, native, frames = CATALOG[name]
        rows.append(dict(name=name, source=source, local=str(where) if where else None, default=name == DEFAULT_MODEL,
                         parameters_b=params, native=native, weights_gb=round(params * 2, 2), given_frames=frames))
    if json_out:
        print(json.dumps(rows))
        return
    for r in rows:
        status = f"ready at {r['local']}" if r["local"] else "not downloaded (fetched on first use)"
        size = f"{r['parameters_b']:g}B" if r["parameters_b"] >= 0.1 else "tiny"
        print(f"{r['name']:<22}{'(default) ' if r['default'] else ''}{r['source']}  {status}\n"
              f"{'':<22}{size}, {r['native']}, weights {r['weights_gb']:g} GB in bf16; given frames: "
              f"{r['given_frames']}")
