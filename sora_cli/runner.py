"""What every rendering command ends with: name the output, load the model, write the video as it is made, and
report the result on stdout (the path, or one JSON record with --json)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import OptionError
from .progress import Bars


def render_to_file(label: str, settings, c: dict, make) -> None:
    """Write what `make(pipe, pipeline_kwargs)` renders to the MP4 as it is made, and report it. `label` names
    the automatic file name; `c` holds the common options (model, out, device, metadata, ...)."""
    import dataclasses
    import secrets

    from . import options
    from .naming import default_filename

    if c["metadata"] not in ("mp4", "json"):
        raise OptionError(f"--metadata '{c['metadata']}' is not allowed; choose mp4 or json")
    if c["dtype"] is not None:
        options.parse_dtype(c["dtype"])
    if c["device"] is not None:
        options.parse_device(c["device"])
    if settings.seed is None:
        settings = dataclasses.replace(settings, seed=secrets.randbelow(2**32))
    path = _output_path(c["out"], default_filename(settings.seed, label), c["overwrite"])
    sidecar = path.with_suffix(".json")
    if c["metadata"] == "json" and sidecar.exists() and not c["overwrite"]:
        raise OptionError(f"{sidecar} already exists; pass --overwrite to replace it")

    from .pipeline import Pipeline

    started = time.perf_counter()
    with Bars(c["quiet"]) as bars:
        bars("load model", 0, 1)
        pipe = Pipeline.from_pretrained(c["model"], device=c["device"], dtype=c["dtype"], offline=c["offline"],
                                        offload=c["offload"])
        bars("load model", 1, 1)
        render = make(pipe, dict(settings.pipeline_kwargs(pipe), on_progress=bars))
        # The model runs as the frames are encoded; the sidecar appears with the MP4 or not at all.
        render.write(path, overwrite=c["overwrite"],
                     sidecars={sidecar: render.metadata} if c["metadata"] == "json" else None)
    record = dict(path=str(path), elapsed=round(time.perf_counter() - started, 3), **render.metadata)
    print(json.dumps(record, ensure_ascii=False) if c["json_out"] else str(path))


def _output_path(out: Path | None, name: str, overwrite: bool) -> Path:
    """--out is a file or a directory; an automatic name always lands inside that directory. Missing folders
    are made when the video is written, so a run that fails before leaves none behind."""
    if out is None:
        path = Path.cwd() / name
    elif out.is_dir() or str(out).endswith(("/", "\\")):
        path = out / name
    elif out.suffix.lower() != ".mp4":
        raise OptionError(f"--out '{out}' is neither a folder nor an .mp4 file; end a new folder's name with /")
    else:
        path = out
    if path.exists() and not overwrite:
        raise OptionError(f"{path} already exists; pass --overwrite to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise OptionError(f"--out '{out}': {path.parent} is a file, not a folder")
    return path
