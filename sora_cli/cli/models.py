"""`sora models`: the models sora knows (catalog.py), where each would come from, and what each needs and makes."""

from __future__ import annotations

import json

import typer


def models(json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List the models sora knows: where each comes from, its size, native resolution and frame rate, the
    memory its weights need, how it takes given frames, and the step caches it can use."""
    from pathlib import Path

    from ..catalog import CATALOG, DEFAULT_MODEL, cached_location

    # the step caches each model has a published calibration for (caching.py), read without importing torch
    calibrated = json.loads((Path(__file__).parent.parent / "calibration.json").read_text())
    rows = []
    for name, known in CATALOG.items():
        where = cached_location(known.source)
        # The weights' memory at bf16; the text encoder visits the device only to encode and is not counted.
        rows.append(dict(name=name, source=known.source, local=str(where) if where else None,
                         default=name == DEFAULT_MODEL, parameters_b=known.parameters_b, native=known.native,
                         weights_gb=round(known.parameters_b * 2, 2), given_frames=known.given_frames,
                         caches=["first-block", *calibrated.get(known.source, {})]))
    if json_out:
        print(json.dumps(rows))
        return
    for r in rows:
        status = f"ready at {r['local']}" if r["local"] else "not downloaded (fetched on first use)"
        size = f"{r['parameters_b']:g}B" if r["parameters_b"] >= 0.1 else "tiny"
        print(f"{r['name']:<22}{'(default) ' if r['default'] else ''}{r['source']}  {status}\n"
              f"{'':<22}{size}, {r['native']}, weights {r['weights_gb']:g} GB in bf16; given frames: "
              f"{r['given_frames']}; step caches: {', '.join(r['caches'])}")
