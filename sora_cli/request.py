"""What one video asks for: a command (or a batch line's mode) with its settings, checked before any model is
loaded (`Request`), and what it resolves to against the model once it is (`Job`, made by `Pipeline.resolve`).

A command line and a batch line become the same `Request`, so a size, a length or a sampling setting means the
same thing and is refused with the same message wherever it is given; `editing.make` then makes it with the one
function of its mode. None always means "the model's default".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import settings as table
from .errors import OptionError
from .settings import Setting
from .shapes import size_for_area, size_for_aspect

# Size and length are resolved against the model's size (`pipeline_kwargs`); the rest pass to it as they are.
_SHAPE = ("size", "aspect", "resolution", "frames", "seconds")
# go into the weights (Pipeline.from_pretrained, use_loras), not into a job
_WEIGHTS = ("lora", "lora_2", "transformer", "transformer_2", "quantize")
_NOT_FIELDS = ("mode", "video")  # a request has one mode (its first field) and its videos as `videos`


class _Request:
    """Methods of `Request`, whose fields are the settings table's names."""

    @property
    def inputs(self) -> tuple:
        """The files the request reads: its image and last image, or its videos."""
        return tuple(i for i in (self.image, self.last_image) if i) + self.videos

    def pipeline_kwargs(self, spec) -> dict:
        """Keyword arguments for `Pipeline.resolve` (and the editing functions): the settings the request's mode
        takes, size and length resolved against the model's defaults (`spec`: a Pipeline or a ModelSpec)."""
        rows = table.of_mode(self.mode)
        kw = {row.job[0]: getattr(self, name) for name, row in rows.items()
              if row.job and name not in (*_SHAPE, *_WEIGHTS, "prompt")}
        d = spec.defaults
        width, height = self.size or (None, None)
        if self.resolution:
            width, height = size_for_aspect(self.aspect or d.width / d.height, self.resolution, spec.size_multiple)
        elif self.aspect:  # the model's own pixel count, reshaped: what it was trained to compose
            width, height = size_for_area(self.aspect, d.width * d.height, spec.size_multiple)
        kw |= dict(width=width, height=height)
        if "frames" in rows:  # the length of a new video; an editing mode's length follows from its input
            frames = self.frames
            if self.seconds is not None:
                frames = table.frames_for_seconds(self.seconds, self.fps or d.fps)
            kw["num_frames"] = frames
        return kw


Request = dataclasses.make_dataclass(
    "Request",
    [("mode", str, dataclasses.field(default="generate")),
     *[(name, object, dataclasses.field(default=None)) for name in table.NAMES if name not in _NOT_FIELDS],
     ("videos", tuple, dataclasses.field(default=()))],
    bases=(_Request,), frozen=True, namespace={"__module__": __name__})
Request.__doc__ = ("One video to make: its mode (the command), every setting of the table by name (None: the "
                   "model's default), and the videos it reads (its image is the `image` setting).")


def parse(rows: dict[str, Setting], given: dict, mode: str = "generate", videos: tuple = (),
          labels: dict[str, str] | None = None) -> Request:
    """The request `given` (name -> value as typed, None: not given) asks for, every value checked against its
    row of `rows` and the defaults filled in. OptionError names the first value that is not allowed, by its
    option unless `labels` names it otherwise."""
    labels = labels or {}
    def said(name: str) -> bool:  # a switch left off says nothing
        return given.get(name) is not None and given.get(name) is not False

    for name, row in rows.items():
        if said(name):
            clash = [rows[o].option for o in row.excludes if o in rows and said(o)]
            if clash:
                raise OptionError(f"{row.option} cannot be combined with {'/'.join(clash)}; use one or the other")
    values = {}
    for name, row in rows.items():
        value = given.get(name)
        if value is None and row.required:  # only a batch line: the command line enforces its own
            raise OptionError(f"'{name}' is missing")
        values[name] = row.default if value is None else table.check(row, value, labels.get(name))
    if mode == "generate" and values.get("prompt") is None and values.get("storyboard") is None:
        what = "'prompt'" if "prompt" in labels else "the PROMPT argument"
        raise OptionError(f"{what} is missing: say what the video shows (or give a storyboard of shots)")
    return Request(mode=mode, videos=tuple(videos), **{k: v for k, v in values.items() if k not in _NOT_FIELDS})


@dataclass
class Job:
    """One render's settings, resolved against the model's defaults by `Pipeline.resolve`."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    num_steps: int
    guidance_scale: float
    shift: float
    sampler: str
    seed: int
    fps: float
    passes: int
    model: str
    guidance_scale_2: float | None = None  # the low-noise expert's; None with one transformer
    cache: str | None = None  # a step cache (caching.py), or None
    cache_threshold: float | None = None
    loras: list[dict] | None = None  # merged into the transformer: file, SHA-256, scale each
    loras_2: list[dict] | None = None  # merged into the low-noise expert
    transformer: str | None = None  # the single files the transformers were read from, by name
    transformer_2: str | None = None
    quantize: str | None = None  # "fp8" when the block weights were stored in fp8

    @property
    def guided(self) -> bool:
        """Whether any expert runs with classifier-free guidance, so the negative prompt is needed."""
        return max(self.guidance_scale, self.guidance_scale_2 or 0.0) > 1.0

    @property
    def metadata(self) -> dict:
        """The settings as a video's metadata records them (the keys are the settings table's)."""
        values = {key: getattr(self, attr) for attr, key in table.recorded().items()}
        return {key: value for key, value in values.items() if value is not None}

    def generator(self):
        """The job's random numbers: a seeded CPU torch.Generator, so a seed means the same video on any device."""
        import torch

        return torch.Generator("cpu").manual_seed(self.seed)
