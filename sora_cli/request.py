"""What one render asks for, checked before any model is loaded and resolved against the model once it is.

`generate` and `batch` share this, so a size, a length or a sampling setting means the same thing and is refused
with the same message wherever it is given. None always means "the model's default".
"""

from __future__ import annotations

from dataclasses import dataclass

from . import options
from .errors import OptionError

# The editing options' defaults, shared by the commands and batch lines; torch-free, so `--help` stays instant.
EXTEND_SECONDS = 2.0
STRENGTH = 0.6
PASSES_HELP = ("Text-to-video in 1 pass, or 2: draw the first frame, then animate it (follows direction words far "
               "better where the model was trained for it; twice the time). Default: the model's (sora-tiny: 2).")


@dataclass(frozen=True)
class Settings:
    negative: str | None = None
    seed: int | None = None
    size: tuple[int, int] | None = None  # (width, height)
    aspect: float | None = None  # width / height
    resolution: int | None = None  # short side
    frames: int | None = None
    seconds: float | None = None
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_2: float | None = None  # a two-expert model's low-noise expert's
    shift: float | None = None
    sampler: str | None = None
    passes: int | None = None

    def pipeline_kwargs(self, pipe) -> dict:
        """Keyword arguments for `pipe(prompt, ...)`: size and length resolved against the model's defaults."""
        d = pipe.defaults
        width, height = self.size or (None, None)
        if self.resolution:
            width, height = options.size_for_aspect(self.aspect or d.width / d.height, self.resolution,
                                                    pipe.size_multiple)
        elif self.aspect:  # the model's own pixel count, reshaped: what it was trained to compose
            width, height = options.size_for_area(self.aspect, d.width * d.height, pipe.size_multiple)
        frames = self.frames
        if self.seconds is not None:
            frames = options.frames_for_seconds(self.seconds, self.fps or d.fps)
        return dict(negative_prompt=self.negative, height=height, width=width, num_frames=frames,
                    num_steps=self.steps, guidance_scale=self.guidance, guidance_scale_2=self.guidance_2,
                    shift=self.shift, sampler=self.sampler, seed=self.seed, fps=self.fps, passes=self.passes)


def parse_settings(size: str | None = None, aspect: str | None = None, resolution: str | None = None,
                   frames: int | None = None, seconds: float | None = None, fps: int | None = None,
                   steps: int | None = None, guidance: float | None = None, shift: float | None = None,
                   sampler: str | None = None, seed: int | None = None, negative: str | None = None,
                   passes: int | None = None, guidance_2: float | None = None) -> Settings:
    """Settings from what the user typed; OptionError names the first value that is not allowed."""
    if size and (aspect or resolution):
        raise OptionError("--size cannot be combined with --aspect/--resolution; use one or the other")
    if frames is not None and seconds is not None:
        raise OptionError("--frames cannot be combined with --seconds; use one or the other")
    options.check_text("--negative", negative)
    for option, value in (("--fps", fps), ("--frames", frames), ("--seconds", seconds)):
        options.check_number(option, value)
    options.check_sampling(steps, guidance, shift, sampler, seed, passes, guidance_2)
    return Settings(negative=negative, seed=seed, size=options.parse_size(size) if size else None,
                    aspect=options.parse_aspect(aspect) if aspect else None,
                    resolution=options.parse_resolution(resolution) if resolution else None,
                    frames=frames, seconds=seconds, fps=fps, steps=steps, guidance=guidance, guidance_2=guidance_2,
                    shift=shift, sampler=sampler.lower() if sampler else None, passes=passes)


def check_editing(fit: str = "crop", seconds: float | None = None, duration: float | None = None,
                  strength: float | None = None) -> None:
    """The editing options' values, checked before any input is read or model loaded; OptionError names one."""
    from .clips import check_fit  # here, not at the top: clips needs numpy, and `--help` imports this module

    check_fit(fit)
    for option, value in (("--seconds", seconds), ("--duration", duration), ("--strength", strength)):
        options.check_number(option, value)
