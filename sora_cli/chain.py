"""Latent clips longer than the model's window, made window by window, and decoded as one stream.

The model sees at most `window` latent frames at once. A longer clip is one latent sequence filled by a series
of windows: each window is given the latent frames already made (or known from an input) as known frames and
generates the next ones. What carries from one window to the next are latents, never pixels: decoding and
re-encoding at every join would drift the colours a little each time. The whole sequence is then decoded as one
clip by the causal VAE's streaming decoder, so no join is visible to the decoder either. Only the current window
is held in memory (except going backwards, where decoding has to wait for the first frame).

Positions are latent frames: position 0 is one video frame, every later one `temporal_stride` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .conditioning import KnownFrames

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .request import Job

StepFn = Callable[[int, int], None]  # (done, total) denoising steps over all windows
ContextFn = Callable[[int, int], Tensor]  # a window's span [start, end) -> its prompt's encoding


@dataclass
class Plan:
    """What to make: a sequence of `length` latent frames, of which some are known.

    head: (1, C, a, h, w) known at positions 0 .. a-1, an encoding that starts at a video's first frame.
    tail: (1, C, b, h, w) known at the last b positions.
    loop_tail: b > 0 says the last b positions equal positions 1 .. b of the sequence itself, so that the video
        flows back into its start (a loop); they are known once the first window has made them.
    source, strength: SDEdit, every position starts from `source` (1, C, length, h, w) noised that far.
    backward: windows run from the end to the start (extending a clip backwards).
    anchor: the colour of later windows is held to the first one's (long continuations); with cuts, to the first
        window of each shot's.
    cuts: the positions where a new shot (a storyboard's next prompt) starts; no window makes frames on both
        sides of one, so every window is made from one shot's prompt.
    """

    length: int
    window: int
    overlap: int
    head: Tensor | None = None
    tail: Tensor | None = None
    loop_tail: int = 0
    source: Tensor | None = None
    strength: float = 1.0
    backward: bool = False
    anchor: bool = False
    cuts: tuple[int, ...] = ()

    @property
    def head_len(self) -> int:
        return 0 if self.head is None else self.head.shape[2]

    @property
    def tail_len(self) -> int:
        return self.loop_tail or (0 if self.tail is None else self.tail.shape[2])


def model_window(pipe: Pipeline) -> tuple[int, int]:
    """(latent frames the model takes at once, latent frames carried from one window into the next)."""
    frames = pipe.window
    return frames, max(1, min(max(2, frames // 4), frames - 1))


def windows(plan: Plan) -> list[tuple[int, int]]:
    """The windows [start, end) in the order they run.

    A window is a clip to the model, whose first latent frame is always a lone video frame (the causal VAE codes
    frame 0 alone), unlike any later position of the sequence. So a window that starts later than position 0
    opens on a frame the model makes and that is then dropped, followed by `overlap` frames carried from the
    window before (going backwards: the window's dropped first frame is remade by the next one). The window that
    meets a known tail makes as much as it can next to it: that is where a transition into a clip's start or a
    loop's seam is made.
    """
    n, f, k = plan.length, plan.window, plan.overlap
    if plan.cuts and (plan.backward or plan.tail_len or not all(0 < c < n for c in plan.cuts)):
        raise ValueError("shots are cut inside a forward plan without a known end")
    if plan.backward:  # the mirror image of a forward plan: see `run` for the dropped first frame
        mirrored = Plan(n, f, k, head=plan.tail, tail=plan.head)
        return [(n - e, n - s) for s, e in windows(mirrored)]
    a, b = plan.head_len, plan.tail_len
    if a + b >= n:
        raise ValueError(f"nothing to make: {a + b} of {n} latent frames are known")
    if n <= f and not plan.loop_tail and not plan.cuts:
        return [(0, n)]
    if not 0 < k < f - 1:
        raise ValueError(f"a window of {f} latent frames cannot open on a made frame, carry {k} and make more")
    # the window meeting the tail carries at least max(1, k - 1) frames; a loop's tail copies positions 1..b,
    # which earlier windows make
    room = f - 1 - max(1, k - 1) - b
    if a >= f or (b and room < 1):
        raise ValueError(f"a window of {f} latent frames cannot hold {a} known at the start and {b} at the end")
    last = n  # where the window meeting the tail starts making frames; without a tail there is no such window
    if b:
        last = n - b - min(room, n - a - b, n - 2 * b - 1 if plan.loop_tail else n)
        if last < max(a, 1 + b if plan.loop_tail else 0) or last >= n - b:
            raise ValueError(f"{n} latent frames are too few for this plan (window {f}, overlap {k})")
    spans, end = [], a
    for stop in [c for c in sorted(set(plan.cuts)) if c > a] + [last]:  # each shot's windows end on its cut
        while end < stop:
            # an opening frame and `overlap` carried ones, more where the window would otherwise run past the end
            start = max(0, min(end - k - 1, stop - f)) if spans else 0
            end = min(start + f, stop)
            spans.append((start, end))
    return spans + ([(max(0, n - f), n)] if last < n else [])


def run(pipe: Pipeline, job: Job, context: Tensor | ContextFn, plan: Plan, generator: torch.Generator,
        on_step: StepFn | None = None) -> Iterator[Tensor]:
    """Yields the sequence's latent frames (1, C, 1, h, w) in order, each as soon as it is final. `context`: the
    prompt's encoding for every window, or a function of a window's span that gives its own (a storyboard's)."""
    spans = windows(plan)
    done: dict[int, Tensor] = {}  # position -> final latent frame; only what later windows or the output need
    if plan.head is not None:
        done.update({p: plan.head[:, :, p:p + 1] for p in range(plan.head_len)})
    if plan.tail is not None:
        done.update({plan.length - plan.tail_len + j: plan.tail[:, :, j:j + 1] for j in range(plan.tail_len)})
    reference, cursor = None, 0
    made = 0  # sampler steps run so far: a window drawn in two passes (pipe.denoise) runs twice its steps
    for w, (s, e) in enumerate(spans):
        noise = pipe.draw_noise(job, generator, e - s)  # (1, C, e - s, h, w), drawn even for a skipped window
        base = plan.source[:, :, s:e] if plan.source is not None else torch.zeros_like(noise)
        known = KnownFrames.nothing(base.to(pipe.device))
        opening = 1 if s > 0 else 0  # a window starting past position 0 opens on a made frame that is dropped
        for p in range(s + opening, e):
            if p in done:
                known = known.with_frames(p - s, done[p])
        new = [p - s for p in range(s + opening, e) if p not in done]
        if new:
            ran = 0

            def report(i: int, n: int) -> None:
                nonlocal ran
                ran = i
                if on_step:  # the total assumes the windows left run as many steps as this one
                    on_step(made + i, made + n * (len(spans) - w))

            strength = plan.strength if plan.source is not None else 1.0
            prompt = context(s, e) if callable(context) else context
            latents = pipe.denoise(job, prompt, noise, known, strength, report)  # (1, C, e - s, h, w)
            made += ran
            if plan.anchor and s + new[0] in plan.cuts:  # a new shot: its colours are its own, not those carried
                reference = latents[:, :, new].mean(dim=(2, 3, 4), keepdim=True)
            elif plan.anchor and e - s > 1:
                if reference is None:
                    # without the window's first frame: a lone video frame's latent (or an opening frame that is
                    # dropped) has statistics of its own, and the later windows are anchored on the others
                    reference = latents[:, :, 1:].mean(dim=(2, 3, 4), keepdim=True)
                else:
                    latents = _anchor(latents, new, reference, plan.backward)
            done.update({s + j: latents[:, :, j:j + 1] for j in new})
        if plan.loop_tail and plan.length - 1 not in done and all(p in done for p in range(1, plan.loop_tail + 1)):
            done.update({plan.length - plan.loop_tail + j: done[1 + j] for j in range(plan.loop_tail)})
        while cursor in done:
            yield done[cursor]
            cursor += 1
        # forget what no later window will read and what has been handed out
        needed = min([start for start, _ in spans[w + 1:]], default=plan.length)
        for p in [p for p in done if p < min(cursor, needed)]:
            del done[p]
    if cursor != plan.length:
        raise RuntimeError(f"plan left latent frame {cursor} of {plan.length} unmade")


def _anchor(latents: Tensor, new: list[int], reference: Tensor, backward: bool) -> Tensor:
    """Pull the newly made frames' per-channel mean (1, C, 1, 1, 1) back to the first window's, gradually away
    from the frames carried in, so the join does not jump and the far end, which the next window carries, is
    fully anchored. The contrast is left alone: an object entering or leaving the frame changes it for real."""
    if not new:
        return latents
    idx = torch.tensor(new, device=latents.device)
    block = latents[:, :, idx]  # (1, C, n, h, w)
    ramp = torch.arange(1, len(new) + 1, device=latents.device, dtype=latents.dtype) / len(new)
    ramp = ramp.flip(0) if backward else ramp
    block = block + ramp.view(1, 1, -1, 1, 1) * (reference - block.mean(dim=(2, 3, 4), keepdim=True))
    out = latents.clone()
    out[:, :, idx] = block
    return out


def decode(pipe: Pipeline, latents: Iterator[Tensor], first: int, stop: int) -> Iterator[np.ndarray]:
    """Video frames first .. stop-1 of a latent stream, as (t, H, W, 3) uint8 chunks, decoding no further."""
    position = 0
    with pipe.decoding() as push:
        for frame in latents:
            if position >= stop:
                break
            frames = push(frame)
            lo = max(first - position, 0)
            hi = min(stop - position, len(frames))
            if lo < hi:
                yield frames[lo:hi]
            position += len(frames)
