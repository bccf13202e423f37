"""A storyboard: several shots, each its own prompt and length, made as one video.

The shots run through the same windows and carried latents as any long video (chain.py). A shot that continues
the one before it starts on a window boundary placed exactly at the shot's first frame: its first window carries
the last latent frames made under the previous prompt as known frames and makes the new ones under its own, so
every window is made from one prompt, and the picture carries across the change as it carries across any join.
The alternative, one window straddling the change with the two prompts' encodings blended, was measured on
sora-tiny (research/storyboard_join.py): it follows the new prompt less often (83% of shots against 92%) for a
step at the change only a little smaller (2.27x the median frame step against 2.60x); and only the cut keeps each
shot's frames exactly what its own prompt makes, so they can be checked, and remade, on their own.

A shot with `cut: true` is a hard cut: a new latent sequence from new noise, decoded as a clip of its own. Each
shot's length is rounded to whole latent frames (4 video frames with Wan's VAE), and each sequence, the first and
every one after a hard cut, also has its opening frame, so the video has 4n + 1 frames a sequence.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import replace
from typing import TYPE_CHECKING, Iterator

import numpy as np

from . import chain, clips
from .clips import Clip
from .errors import OptionError
from .settings import MAX_FRAMES
from .shots import Shot
from .stream import ProgressFn, Stream, as_stream, keep_given

if TYPE_CHECKING:
    from .pipeline import Pipeline


def make(pipe: Pipeline, shots: tuple[Shot, ...], prompt: str | None = None, image: Clip | None = None,
         fit: str = "crop", on_progress: ProgressFn | None = None, **settings) -> Stream:
    """The storyboard's video. `prompt`, if given, is said before every shot's prompt (a style, a setting);
    `image`, if given, is the first frame."""
    if pipe.takes_images:
        raise OptionError("a storyboard is made by a text-to-video model; this checkpoint is image-to-video")
    prompts = [f"{prompt} {s.prompt}" if prompt else s.prompt for s in shots]
    settings.pop("num_frames", None)  # the shots say the length
    # a video records the prompt it ends on: what `extend` continues
    job = pipe.resolve(prompts[-1], **clips.sized_after(image, pipe, settings))
    st = pipe.temporal_stride
    plans = [_plan(pipe, lengths) for lengths in _sequences(shots, job.fps, st)]
    total = sum(1 + st * (p.length - 1) for p in plans)
    if total > MAX_FRAMES:
        raise OptionError(f"--storyboard: the shots make {total} frames; at most {MAX_FRAMES} are allowed")
    first = None
    if image is not None:
        first = clips.first_frame(image, job.fps, (job.width, job.height), fit)
        plans[0] = replace(plans[0], head=pipe.encode(first[None]))  # (1, C, 1, h, w)
    starts = [0, *itertools.accumulate(1 + st * (p.length - 1) for p in plans)]  # each sequence's first frame
    # latent position c > 0 is video frames 4c-3 .. 4c of its sequence; position 0 is frame 0 alone
    shot_frames = [(starts[i] + (c and 1 + st * (c - 1)), st * (e - 1) + 1 if c == 0 else st * (e - c))
                   for i, p in enumerate(plans) for c, e in _spans(p)]
    record = [dict(s.record(), first_frame=a, frames=n) for s, (a, n) in zip(shots, shot_frames)]
    progress = on_progress or (lambda stage, done, total: None)
    windows = [len(chain.windows(p)) for p in plans]
    per_window = job.num_steps * job.passes

    def frames() -> Iterator[np.ndarray]:
        generator = job.generator()  # one stream of noise for all sequences: a hard cut starts from new noise
        contexts = iter([pipe.encode_prompt(replace(job, prompt=p), progress) for p in prompts])
        steps = decoded = 0
        for i, plan in enumerate(plans):
            shot_starts = [c for c, _ in _spans(plan)]
            own = [next(contexts) for _ in shot_starts]
            later = per_window * sum(windows[i + 1:])

            def context(s: int, e: int, shot_starts=shot_starts, own=own):
                return own[bisect.bisect_right(shot_starts, e - 1) - 1]  # spans end on cuts: one shot each

            def on_step(done: int, total: int, base=steps, later=later) -> None:
                nonlocal steps
                steps = base + done
                progress("denoise", steps, base + total + later)

            count = 1 + st * (plan.length - 1)
            chunks = chain.decode(pipe, chain.run(pipe, job, context, plan, generator, on_step), 0, count)
            for chunk in keep_given(chunks, {0: first} if i == 0 and first is not None else {}, count):
                decoded += len(chunk)
                progress("decode", decoded, total)
                yield chunk

    extra = dict(storyboard=record) | ({"image": image.name} if image is not None else {})
    return as_stream(job, frames(), total, "generate", extra)


def _sequences(shots: tuple[Shot, ...], fps: float, stride: int) -> list[list[int]]:
    """Each latent sequence's shots, by their lengths in latent frames (at least one each); a hard cut opens a
    new sequence."""
    sequences: list[list[int]] = []
    for i, s in enumerate(shots):
        n = max(1, round(s.seconds * fps / stride))
        if i == 0 or s.cut:
            sequences.append([n])
        else:
            sequences[-1].append(n)
    return sequences


def _plan(pipe: Pipeline, lengths: list[int]) -> chain.Plan:
    """One sequence: its opening latent frame, then its shots, each after the first starting on a cut."""
    f, k = chain.model_window(pipe)
    cuts = tuple(itertools.accumulate(lengths[1:-1], initial=1 + lengths[0])) if len(lengths) > 1 else ()
    return chain.Plan(1 + sum(lengths), f, k, cuts=cuts, anchor=True)


def _spans(plan: chain.Plan) -> list[tuple[int, int]]:
    """The latent positions [start, end) of each shot of a sequence (the first shot also has position 0)."""
    bounds = [0, *plan.cuts, plan.length]
    return list(zip(bounds, bounds[1:]))
