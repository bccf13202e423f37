"""Every editing feature as known frames: image-to-video, extension both ways, loops, transitions, long videos
and video-to-video (SDEdit).

Each feature decides which latent frames are known, builds a `chain.Plan`, and names the decoded frames that
form the new part; `chain` makes the latents window by window and decodes them as one stream. Frames that come
from an input are written as they were read (brought to the model's fps and size), never regenerated. `make`
makes what a command or a batch line asks for with the function of its mode. Text-to-video that fits one window
takes the pipeline's own path (`Pipeline.sample`), the one the Python API and batched generation take.

How a clip becomes known latents, given the causal VAE (latent 0 is frame 0 alone, latent k >= 1 frames
4k-3 .. 4k, each seeing only earlier frames):
- before new frames (extend, the first clip of a transition): its last 1 + 4(a-1) frames, encoded as a clip
  of their own, are the first a latents; the new frames follow them, as the model was trained to continue.
- after new frames (extend --backward, the second clip of a transition, a loop's start): the clip's frames
  1 .. 4b encoded after its frame 0, i.e. latents 1 .. b of its own encoding, are the last b latents. Its frame
  0 then falls on the last frame of the latent before them, which the model generates; that decoded frame is
  dropped in favour of the real one, so a transition has 4n - 1 new frames.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Iterator

import numpy as np
from torch import Tensor

from . import chain, clips, storyboard
from .clips import Clip
from .errors import OptionError
from .settings import check, of_mode
from .stream import ProgressFn, Stream, as_stream, keep_given

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .request import Job, Request

log = logging.getLogger("sora")
EXTEND_SECONDS = of_mode("extend")["seconds"].default
STRENGTH = of_mode("edit")["strength"].default


def make(pipe: Pipeline, request: Request, sources: list[Clip], on_progress: ProgressFn | None = None) -> Stream:
    """The request's video, made by the function of its mode as its command makes it. `sources`: its inputs,
    read. A request without a prompt takes the one sora stored in its input."""
    r, first = request, sources[0] if sources else None
    kw = dict(r.pipeline_kwargs(pipe), fit=r.fit, on_progress=on_progress)
    images = iter(sources)  # a generate request's inputs: its image, then its last image, each if given
    if r.mode == "extend":
        return extend(pipe, first, r.seconds, r.prompt or None, r.backward, **kw)
    if r.mode == "loop":
        return loop(pipe, first, r.seconds, r.duration, r.prompt or None, **kw)
    if r.mode == "connect":
        return connect(pipe, first, sources[1], r.seconds, r.prompt or None, **kw)
    if r.mode == "edit":
        return edit(pipe, first, r.prompt, r.strength, **kw)
    image = next(images) if r.image else None
    if r.storyboard:
        return storyboard.make(pipe, r.storyboard, r.prompt, image, **kw)
    return generate(pipe, r.prompt, image, r.loop, last_image=next(images) if r.last_image else None, **kw)


def generate(pipe: Pipeline, prompt: str, image: Clip | None = None, loop: bool = False, fit: str = "crop",
             on_progress: ProgressFn | None = None, last_image: Clip | None = None, **settings) -> Stream:
    """A video for the prompt, as long as asked (windows beyond the model's own length), optionally starting
    from an image, ending on one, or looping: its last frame flows into its first, so it has one frame fewer
    than asked. An image-to-video checkpoint is given its images as it was trained to take them; any other model
    gets them as known latent frames."""
    if loop and last_image is not None:
        raise OptionError("--loop ends the video where it starts, so it takes no --last-image")
    job = pipe.resolve(prompt, **clips.sized_after(image or last_image, pipe, settings))
    fitted = {i: clips.first_frame(c, job.fps, (job.width, job.height), fit)
              for i, c in ((0, image), (-1, last_image)) if c is not None}
    extra = dict(image=image and image.name, last_image=last_image and last_image.name, loop=loop or None)
    if pipe.takes_images:
        made, total = _from_images(pipe, job, fitted, loop, on_progress)
        return as_stream(job, made, total, "generate", {key: v for key, v in extra.items() if v is not None})
    f, k = chain.model_window(pipe)
    length = pipe.latent_frames(job.num_frames)
    head = pipe.encode(fitted[0][None]) if 0 in fitted else None  # (1, C, 1, h, w)
    tail = encode_start(pipe, fitted[-1][None], 1) if -1 in fitted else None  # the image held: its last latent
    loop_tail = max(1, k - 1) if loop else 0
    if loop and length < loop_tail + 2:  # the loop's end copies latents 1..tail, which must be made before it
        raise OptionError(f"--loop needs at least {pipe.temporal_stride * (loop_tail + 1) + 1} frames with this "
                          "model")
    plan = chain.Plan(length + loop_tail, f, k, head=head, tail=tail, loop_tail=loop_tail, anchor=True)
    total = job.num_frames - 1 if loop else job.num_frames
    made = _frames(pipe, job, plan, 0, total, on_progress, "--loop" if loop else "--frames")
    spans = len(chain.windows(plan))
    if spans == 1 and not fitted and not loop:  # plain text-to-video in one window: the pipeline's own path
        made = _sampled(pipe, job, on_progress)
    extra["windows"] = spans if spans > 1 else None
    made = keep_given(made, fitted, job.num_frames)
    return as_stream(job, made, total, "generate", {key: v for key, v in extra.items() if v is not None})


def _from_images(pipe: Pipeline, job: Job, fitted: dict[int, np.ndarray], loop: bool,
                 on_progress: ProgressFn | None) -> tuple[Iterator[np.ndarray], int]:
    """An image-to-video checkpoint's video from its first frame (and last, or the first again for a loop), in
    one pass of the whole length; the given frames are written as given."""
    if 0 not in fitted:
        raise OptionError("this is an image-to-video checkpoint: give it the first frame (--image)")
    if loop:
        fitted = {0: fitted[0], -1: fitted[0]}  # the clip ends on its start; the repeated frame is dropped
    if -1 not in fitted and pipe.spec.transformer.pos_embed_seq_len:
        raise OptionError("this is a first-last-frame checkpoint (Wan 2.1 FLF2V): it needs a last frame as well "
                          "as a first (generate: --last-image, or --loop; connect and loop give it both)")
    if -1 in fitted and not pipe.spec.takes_last_image:
        raise OptionError("this checkpoint takes a first frame only; a last one (--last-image, --loop) needs a "
                          "first-last-frame checkpoint (Wan 2.1 FLF2V, Wan 2.2 I2V)")
    progress = on_progress or (lambda stage, done, total: None)

    def frames() -> Iterator[np.ndarray]:
        latents = pipe.sample([job], on_progress=progress, image=pipe.image_input(job, fitted))
        yield from keep_given(_decode(pipe, iter(latents.split(1, dim=2)), 0, total, progress), fitted,
                               job.num_frames)

    total = job.num_frames - 1 if loop else job.num_frames
    return frames(), total


def fits_one_window(pipe: Pipeline, job: Job) -> bool:
    """Whether the job's text-to-video clip is made in one window: what `generate_many` batches."""
    return pipe.latent_frames(job.num_frames) <= chain.model_window(pipe)[0]


def generate_many(pipe: Pipeline, prompts: list[str], seeds: list[int], on_progress: ProgressFn | None = None,
                  **settings) -> list[Stream]:
    """Text-to-video clips that share every setting but prompt and seed, denoised together as one batch: the
    clips `generate` makes one at a time, faster, and equal to them up to a rounding step (a batched matrix
    product rounds a little differently). Each must fit in one window; each is decoded as it is written."""
    jobs = [pipe.resolve(prompt, **dict(settings, seed=seed)) for prompt, seed in zip(prompts, seeds)]
    if not fits_one_window(pipe, jobs[0]):
        raise OptionError(f"only clips of one window ({pipe.defaults.num_frames} frames or fewer) are made together")
    progress = on_progress or (lambda stage, done, total: None)
    latents = pipe.sample(jobs, on_progress=progress)
    return [as_stream(job, _decode(pipe, iter(latents[i:i + 1].split(1, dim=2)), 0, job.num_frames, progress),
                    job.num_frames, "generate", {}) for i, job in enumerate(jobs)]


def extend(pipe: Pipeline, clip: Clip, seconds: float = EXTEND_SECONDS, prompt: str | None = None,
           backward: bool = False, fit: str = "crop", on_progress: ProgressFn | None = None, **settings) -> Stream:
    """The clip with `seconds` of new frames after it (or before it, backwards)."""
    job, clip = _prepare(pipe, prompt, clip, fit, settings)
    f, k = chain.model_window(pipe)
    st = pipe.temporal_stride
    new = max(1, round(seconds * job.fps))
    if pipe.takes_images:  # image-to-video from the clip's last frame (or, backwards, there is no first frame)
        if backward:
            raise OptionError("an image-to-video checkpoint continues a clip forwards only (it needs a first frame)")
        parts = [[clip.frames], _between(pipe, job, clip.frames[-1], None, st * math.ceil(new / st) + 1, new,
                                         on_progress)]
    elif not backward:
        a = min(k, (len(clip.frames) - 1) // st + 1)
        skip = 1 + st * (a - 1)  # the decoded frames of the clip's own end
        plan = chain.Plan(a + math.ceil(new / st), f, k, head=encode_end(pipe, clip.frames, a), anchor=True)
        parts = [[clip.frames], _frames(pipe, job, plan, skip, skip + new, on_progress)]
    else:
        b = min(k, max(1, (len(clip.frames) - 1) // st))
        g = math.ceil(new / st) + 1  # the last generated latent ends on the clip's first frame
        plan = chain.Plan(g + b, f, k, tail=encode_start(pipe, clip.frames, b), backward=True, anchor=True)
        end = st * (g - 1)
        parts = [_frames(pipe, job, plan, end - new, end, on_progress), [clip.frames]]
    extra = dict(source=clip.name, backward=backward, new_frames=new)
    return as_stream(job, itertools.chain(*parts), len(clip.frames) + new, "extend", extra)


def loop(pipe: Pipeline, clip: Clip, seconds: float | None = None, duration: float | None = None,
         prompt: str | None = None, fit: str = "crop", on_progress: ProgressFn | None = None,
         **settings) -> Stream:
    """The clip and a transition from its end back to its start, repeated for `duration` seconds if given."""
    job, clip = _prepare(pipe, prompt, clip, fit, settings)
    made, count = bridge(pipe, job, clip.frames, clip.frames, seconds, on_progress)
    period = len(clip.frames) + count
    total = max(1, round(duration * job.fps)) if duration else period

    def chunks() -> Iterator[np.ndarray]:
        yield clip.frames[:total]
        transition = np.concatenate(list(made))  # kept: it comes back every period
        cycle = itertools.cycle([transition, clip.frames])
        done = min(total, len(clip.frames))
        while done < total:
            piece = next(cycle)[:total - done]
            done += len(piece)
            yield piece

    extra = dict(source=clip.name, transition_frames=count, period_frames=period, duration=duration)
    return as_stream(job, chunks(), total, "loop", extra)


def connect(pipe: Pipeline, first: Clip, second: Clip, seconds: float | None = None, prompt: str | None = None,
            fit: str = "crop", on_progress: ProgressFn | None = None, **settings) -> Stream:
    """The first clip, a transition from its end into the second clip's start, then the second clip."""
    job, first = _prepare(pipe, prompt, first, fit, settings)
    second = clips.conform(second, job.fps, (job.width, job.height), fit)
    made, count = bridge(pipe, job, first.frames, second.frames, seconds, on_progress)
    extra = dict(source=first.name, target=second.name, transition_frames=count)
    total = len(first.frames) + count + len(second.frames)
    return as_stream(job, itertools.chain([first.frames], made, [second.frames]), total, "connect", extra)


def edit(pipe: Pipeline, clip: Clip, prompt: str, strength: float = STRENGTH, fit: str = "crop",
         on_progress: ProgressFn | None = None, **settings) -> Stream:
    """Video-to-video: the clip's latents noised to `strength` (1 = pure noise) and denoised with the prompt."""
    check(of_mode("edit")["strength"], strength, "strength")
    if pipe.takes_images:
        raise OptionError("edit redoes every frame, which an image-to-video checkpoint cannot: it needs a given "
                          "first frame; use a text-to-video model")
    job, clip = _prepare(pipe, prompt, clip, fit, settings)
    f, k = chain.model_window(pipe)
    st = pipe.temporal_stride
    count = st * math.ceil((len(clip.frames) - 1) / st) + 1  # the VAE takes 4n + 1 frames: hold the last one
    source = pipe.encode(clips.hold(clip.frames, count))
    plan = chain.Plan(source.shape[2], f, k, source=source, strength=strength)
    made = _frames(pipe, job, plan, 0, len(clip.frames), on_progress)
    return as_stream(job, made, len(clip.frames), "edit", dict(source=clip.name, strength=strength))


def bridge(pipe: Pipeline, job: Job, before: np.ndarray, after: np.ndarray, seconds: float | None,
           on_progress: ProgressFn | None) -> tuple[Iterator[np.ndarray], int]:
    """New frames leading from the end of `before` into the start of `after`, and how many (4n - 1). A
    first-last-frame checkpoint makes them from the two frames they join."""
    f, k = chain.model_window(pipe)
    st = pipe.temporal_stride
    # as much of each clip as the window allows, the start of the second one frame shorter (its frame 0 is made)
    b = max(1, min(k - 1, (len(after) - 1) // st, f - k - 1))
    a = max(1, min(k, (len(before) - 1) // st + 1, f - b - 1))
    default = (pipe.defaults.num_frames - 1) // st if pipe.takes_images else max(1, f - a - b)
    g = default if seconds is None else max(1, round((seconds * job.fps + 1) / st))
    count = st * g - 1
    if seconds is not None and count != round(seconds * job.fps):
        log.warning("a transition has 4n-1 frames; using %d (%.2f s)", count, count / job.fps)
    if pipe.takes_images:  # a clip of the two joined frames and the transition between them
        return _between(pipe, job, before[-1], after[0], count + 2, count, on_progress), count
    plan = chain.Plan(a + g + b, f, k, head=encode_end(pipe, before, a), tail=encode_start(pipe, after, b))
    skip = 1 + st * (a - 1)
    return _frames(pipe, job, plan, skip, skip + count, on_progress, "--seconds"), count


def encode_end(pipe: Pipeline, frames: np.ndarray, count: int) -> Tensor:
    """The clip's last 1 + 4(count-1) frames encoded as a clip of their own: (1, C, count, h, w)."""
    need = 1 + pipe.temporal_stride * (count - 1)
    return pipe.encode(clips.hold(frames[-need:], need, at_start=True))


def encode_start(pipe: Pipeline, frames: np.ndarray, count: int) -> Tensor:
    """Latents 1 .. count of the clip's own encoding (frames 1 .. 4 count, seen after frame 0): how its start
    looks in the middle of a longer video. A clip too short holds its last frame. (1, C, count, h, w)."""
    need = 1 + pipe.temporal_stride * count
    return pipe.encode(clips.hold(frames[:need], need))[:, :, 1:]


def _prepare(pipe: Pipeline, prompt: str | None, clip: Clip, fit: str, settings: dict):
    """The job for editing `clip`, sized after it unless a size is given, and the clip brought to it.
    Without a prompt, the one sora wrote into the clip is used, if any."""
    settings = clips.sized_after(clip, pipe, settings)
    settings.pop("num_frames", None)  # the length follows from the clip and the feature
    job = pipe.resolve(prompt if prompt is not None else str(clip.metadata.get("prompt", "")), **settings)
    return job, clips.conform(clip, job.fps, (job.width, job.height), fit)


def _frames(pipe: Pipeline, job: Job, plan: chain.Plan, first: int, stop: int, on_progress: ProgressFn | None,
          option: str = "--seconds") -> Iterator[np.ndarray]:
    """Decoded frames first .. stop-1 of the plan's latents, made lazily: the model runs on iteration."""
    try:
        chain.windows(plan)  # refuse an impossible plan now, before anything is written
    except ValueError as e:
        raise OptionError(f"{option}: {e}") from None
    progress = on_progress or (lambda stage, done, total: None)

    def frames() -> Iterator[np.ndarray]:
        context = pipe.encode_prompt(job, progress)
        latents = chain.run(pipe, job, context, plan, job.generator(), lambda i, n: progress("denoise", i, n))
        yield from _decode(pipe, latents, first, stop, progress)

    return frames()


def _between(pipe: Pipeline, job: Job, first: np.ndarray, last: np.ndarray | None, frames: int, keep: int,
             on_progress: ProgressFn | None) -> Iterator[np.ndarray]:
    """`keep` new frames of an image-to-video checkpoint after `first` (and before `last`): a clip of `frames`
    (4n + 1) made from them, without the given frames themselves. Lazy: the model runs on iteration."""
    made, _ = _from_images(pipe, replace(job, num_frames=frames),
                           {0: first} | ({} if last is None else {-1: last}), False, on_progress)

    def new() -> Iterator[np.ndarray]:
        yield np.concatenate(list(made))[1:1 + keep]  # one window: held whole for a moment

    return new()


def _sampled(pipe: Pipeline, job: Job, on_progress: ProgressFn | None) -> Iterator[np.ndarray]:
    """The job's frames by `Pipeline.sample`, made lazily: the model runs on iteration."""
    progress = on_progress or (lambda stage, done, total: None)

    def frames() -> Iterator[np.ndarray]:
        latents = pipe.sample([job], on_progress=progress)
        yield from _decode(pipe, iter(latents.split(1, dim=2)), 0, job.num_frames, progress)

    return frames()


def _decode(pipe: Pipeline, latents: Iterator[Tensor], first: int, stop: int,
            progress: ProgressFn) -> Iterator[np.ndarray]:
    """Frames first .. stop-1 of a latent stream, reporting progress as they are decoded."""
    done = 0
    for chunk in chain.decode(pipe, latents, first, stop):
        done += len(chunk)
        progress("decode", done, stop - first)
        yield chunk
