"""What every command that makes one video does: check what was typed, read the inputs, name the output, load
the model, write the video as it is made, and report the result on stdout (the path, or one JSON record with
--json)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from ..errors import OptionError
from ..progress import Bars
from ..request import Request, parse
from ..settings import of_command, random_seed
from ..still import is_image


def run(command: str, given: dict, inputs: tuple[Path, ...] = ()) -> None:
    """Make the video `given` (the command's values by setting name) asks for and write it. Everything typed
    is checked, and every input read, before any model is loaded."""
    from ..clips import read

    request = parse(of_command(command), given, command, videos=inputs)
    sources = [read(Path(path)) for path in request.inputs]  # an unreadable input stops here
    # The automatic file name: the prompt, else the one sora stored in the input, else the input's name.
    label = request.prompt or (request.storyboard and request.storyboard[0].prompt) or \
        (sources and str(sources[0].metadata.get("prompt") or "")) or \
        f"{Path(inputs[0]).stem} {command}"
    render_to_file(request, label, sources)


def render_to_file(request: Request, label: str, sources: list) -> None:
    """Write the request's video to its file as it is made, and report it. `label` names the automatic file."""
    from .. import caching, editing, networks
    from ..naming import default_filename
    from ..pipeline import Pipeline
    from ..spec import ModelSpec

    if request.seed is None:  # chosen now, for the file name; the video's metadata records it
        request = dataclasses.replace(request, seed=random_seed())
    one_frame = request.mode == "generate" and request.frames == 1  # a still: a PNG unless --out says otherwise
    path = _output_path(request.out, default_filename(request.seed, label, suffix=".png" if one_frame else ".mp4"),
                        request.overwrite)
    sidecar = path.with_suffix(".json")
    if request.metadata == "json" and sidecar.exists() and not request.overwrite:
        raise OptionError(f"{sidecar} already exists; pass --overwrite to replace it")

    started = time.perf_counter()
    files = (request.transformer, request.transformer_2)
    spec = ModelSpec.read(request.model, request.offline, networks.replaced(files))
    if request.cache:  # a cache the model has no calibration for is refused before minutes of loading
        caching.threshold(request.cache, request.cache_threshold, spec.defaults.caches)
    kw = request.pipeline_kwargs(spec)
    frames = kw.get("num_frames") or (spec.defaults.num_frames if request.mode == "generate" else None)
    if is_image(path) and request.storyboard:
        raise OptionError(f"--out {path.name}: a storyboard makes a video; give an .mp4 name")
    if is_image(path) and frames != 1:
        raise OptionError(f"--out {path.name}: an image holds one frame, and this makes "
                          f"{frames or 'a video of several'}{'' if frames is None else ' frames'}; give --frames 1 "
                          "or an .mp4 name")
    with Bars(request.quiet) as bars:
        bars("load model", 0, 1)
        # the memory plan is made for this render's size, where the request names it (editing: its input's)
        size = (kw["width"], kw["height"], frames or spec.defaults.num_frames) if kw["width"] else None
        pipe = Pipeline.from_pretrained(spec, device=request.device, dtype=request.dtype,
                                        offline=request.offline, offload=request.offload,
                                        loras=request.lora or (), loras_2=request.lora_2 or (),
                                        attention=request.attention, compile=request.compile,
                                        vae_tiling=request.vae_tiling, size=size, quantize=request.quantize,
                                        transformer_files=files)
        bars("load model", 1, 1)
        stream = editing.make(pipe, request, sources, bars)
        # The model runs as the frames are encoded; the sidecar appears with the MP4 or not at all.
        stream.write(path, overwrite=request.overwrite,
                     sidecars={sidecar: stream.metadata} if request.metadata == "json" else None,
                     preview=bool(request.preview), animation=bool(request.preview_webp))
    record = dict(path=str(path), elapsed=round(time.perf_counter() - started, 3), **stream.metadata)
    if request.cache == "calibrate":  # MagCache's ratios for this model, in the layout _sora.caches takes
        record["calibration"] = pipe.calibration
        if not request.quiet:
            print("cache: calibrated; the JSON record's \"calibration\" goes under \"_sora\": {\"caches\": ...} "
                  "in the model's model_index.json", file=sys.stderr)
    elif request.cache:  # how much the step cache saved: transformer calls skipped
        record["cache_skipped"] = pipe.skipped_steps
        if not request.quiet:
            print(f"cache: {pipe.skipped_steps} transformer calls skipped", file=sys.stderr)
    print(json.dumps(record, ensure_ascii=False) if request.json else str(path))


def _output_path(out: str | None, name: str, overwrite: bool) -> Path:
    """--out is a file or a directory; an automatic name always lands inside that directory. Missing folders
    are made when the video is written, so a run that fails before leaves none behind."""
    if out is None:
        path = Path.cwd() / name
    elif Path(out).is_dir() or out.endswith(("/", "\\")):
        path = Path(out) / name
    elif Path(out).suffix.lower() != ".mp4" and not is_image(out):
        raise OptionError(f"--out '{out}' is neither a folder, an .mp4 file nor an image (.png, .jpg, .webp: one "
                          "frame); end a new folder's name with /")
    else:
        path = Path(out)
    if path.exists() and not overwrite:
        raise OptionError(f"{path} already exists; pass --overwrite to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise OptionError(f"--out '{out}': {path.parent} is a file, not a folder")
    return path
