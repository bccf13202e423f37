"""`sora models`: the models sora knows, and where each would come from."""

from __future__ import annotations

import json

import typer


def models(json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List the models sora knows and where each would come from."""
    from ..loading import DEFAULT_MODEL, KNOWN_MODELS, cached_location

    rows = []
    for name, source in KNOWN_MODELS.items():
        where = cached_location(source)
        rows.append(dict(name=name, source=source, local=str(where) if where else None, default=name == DEFAULT_MODEL))
    if json_out:
        print(json.dumps(rows))
        return
    for r in rows:
        status = f"ready at {r['local']}" if r["local"] else "not downloaded (fetched on first use)"
        print(f"{r['name']:<18}{'(default) ' if r['default'] else ''}{r['source']}  {status}")
