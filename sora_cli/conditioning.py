"""Known frames: latent frames the sampler must keep, and the rest generated around them.

Every editing feature (image-to-video, extension both ways, loops, transitions, long videos in windows, SDEdit)
comes down to a latent clip in which some frames are known. The model is told about them in one of two ways,
chosen by the checkpoint (`model_index.json`, `_sora.conditioning`):

- "clean_tokens": the model was trained with clean-frame masks (sora-tiny). The known frames are given to the
  transformer as their clean latents at timestep 0 on every step, every other token at the current timestep.
- anything else ("replace", e.g. the Wan 2.1 checkpoints, never trained that way): latent replacement. Before
  every step the known frames are reset to their clean latents noised to the current sigma with the same noise
  the sample started from, so the rest is denoised next to a consistent picture of them.

In both modes the solver's own state keeps the known frames on their noised path (the solvers assume one noise
level for the whole latent), and the final latents' known frames are exactly the clean ones.

Image-to-video checkpoints (Wan 2.1 I2V and FLF2V, Wan 2.2 I2V) take given video frames as input channels instead
(`ImageInput`): beside the noisy latents, on every step, a mask of which video frames are given and the VAE's
latents of a clip that holds them with grey everywhere else; Wan 2.1's also attend to the image encoder's tokens
of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .models.wan.transformer import frame_timesteps_to_tokens
from .sampling import add_noise

CLEAN_TOKENS = "clean_tokens"
REPLACE = "replace"


def conditioning_mode(setting: str | None) -> str:
    """The mode for a checkpoint's `_sora.conditioning` value: only a model trained for it gets clean tokens."""
    return CLEAN_TOKENS if setting == CLEAN_TOKENS else REPLACE


@dataclass
class KnownFrames:
    """Clean latents (N, C, F, h, w) and which of the F latent frames are known, a bool mask (F,), the same for
    each of the N samples.

    The latents of unknown frames are ignored, except as the starting point of SDEdit (strength < 1).
    """

    latents: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.latents.ndim != 5:
            raise ValueError(f"known latents must be (N, C, F, h, w), got {tuple(self.latents.shape)}")
        if self.mask.dtype != torch.bool or self.mask.shape != (self.latents.shape[2],):
            raise ValueError(f"known mask must be bool ({self.latents.shape[2]},), got "
                             f"{self.mask.dtype} {tuple(self.mask.shape)}")

    @classmethod
    def nothing(cls, like: Tensor) -> "KnownFrames":
        """No frame known; `like`'s values become the SDEdit source."""
        return cls(like, torch.zeros(like.shape[2], dtype=torch.bool))

    def with_frames(self, start: int, latents: Tensor) -> "KnownFrames":
        """A copy in which latent frames start .. start + f are known to be `latents` (N, C, f, h, w)."""
        f = latents.shape[2]
        if start < 0 or start + f > self.latents.shape[2]:
            raise ValueError(f"frames {start}..{start + f} fall outside {self.latents.shape[2]} latent frames")
        merged = torch.cat([self.latents[:, :, :start], latents.to(self.latents), self.latents[:, :, start + f:]], 2)
        mask = self.mask.clone()
        mask[start:start + f] = True
        return KnownFrames(merged, mask)

    @property
    def any(self) -> bool:
        return bool(self.mask.any())


@dataclass
class ImageInput:
    """Given video frames as an image-to-video checkpoint reads them. `channels` (1, 4 + C, F, h, w) go beside the
    noisy latents on every step: for each latent frame, which of the video frames it stands for are given (4, the
    first latent frame's one frame repeated), then the latents; `features` (1, S, image_dim), the image encoder's
    tokens of the given frames (Wan 2.1), or None."""

    channels: Tensor
    features: Tensor | None = None


def frame_mask_channels(given: Tensor, stride: int) -> Tensor:
    """Which video frames are given, a bool (T,) for T = 1 + stride*n, as (stride, 1 + n) latent-frame channels:
    latent frame 0 stands for video frame 0 alone (repeated), frame k for video frames stride*(k-1)+1 .. stride*k."""
    padded = torch.cat([given[:1].repeat(stride - 1), given]).float()  # (stride * (1 + n),)
    return padded.view(-1, stride).T


def image_input(images: dict[int, np.ndarray], frames: int, height: int, width: int, stride: int,
                encode_video: Callable[[Tensor], Tensor],
                encode_images: Callable[[list[np.ndarray]], Tensor] | None) -> ImageInput:
    """Given frames {video frame (negative from the end): (H, W, 3) uint8} of a clip of `frames` at that size:
    the clip holding them, grey elsewhere, through `encode_video` (the VAE: (1, 3, T, H, W) in [-1, 1] -> latents
    (1, C, F, h, w)), beside which frames they are; and `encode_images` of them in order (Wan 2.1's)."""
    positions = [p % frames for p in images]
    if not all(-frames <= p < frames for p in images) or len(set(positions)) != len(positions):
        raise ValueError(f"given frames {sorted(images)} are not distinct frames of a {frames}-frame clip")
    ordered = dict(sorted(zip(positions, images.values()), key=lambda pf: pf[0]))
    video = torch.zeros(1, 3, frames, height, width)  # grey: 0 in the VAE's [-1, 1]
    given = torch.zeros(frames, dtype=torch.bool)
    for p, frame in ordered.items():
        video[0, :, p] = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 127.5 - 1
        given[p] = True
    latents = encode_video(video)
    mask = frame_mask_channels(given, stride).to(latents)[None, :, :, None, None]  # (1, 4, F, 1, 1)
    channels = torch.cat([mask.expand(1, -1, -1, *latents.shape[3:]), latents], dim=1)
    return ImageInput(channels, encode_images(list(ordered.values())) if encode_images else None)


def sdedit_start(strength: float, num_steps: int) -> int:
    """The step SDEdit starts at: strength is the share of the schedule that is run (1 = from pure noise)."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    # round, not int(): 0.29 * 100 is 28.999... in floating point; and at least one step is always run
    return num_steps - max(1, round(strength * num_steps))


class Guide:
    """Applies known frames during sampling: `initial`, then `before_step` and `model_input` at every step,
    then `finish`.

    noise: the samples' noise (N, C, F, h, w); sigmas: the schedule; grid: the transformer's token grid (f, h, w)
    for this latent, whose f must equal F (temporal patch 1, as in every Wan checkpoint).
    """

    def __init__(self, known: KnownFrames | None, noise: Tensor, sigmas: Tensor, mode: str,
                 grid: tuple[int, int, int], image: ImageInput | None = None):
        self.noise, self.sigmas, self.mode, self.grid, self.image = noise, sigmas, mode, grid, image
        self.known = known if known is not None and known.any else None
        if known is not None:
            if known.latents.shape != noise.shape:
                raise ValueError(f"known latents {tuple(known.latents.shape)} do not match the noise "
                                 f"{tuple(noise.shape)}")
            if grid[0] != noise.shape[2]:
                raise ValueError("known frames need one token frame per latent frame (temporal patch size 1)")
        if self.known is not None:
            dev = noise.device
            self.clean = known.latents.to(dev, noise.dtype)
            self.frame_mask = known.mask.to(dev)[None, None, :, None, None]  # (1, 1, F, 1, 1)

    def initial(self, source: Tensor | None, start: int) -> Tensor:
        """The latent sampling starts from: the noise, or SDEdit's source noised to sigmas[start]."""
        if start == 0 or source is None:
            return self.noise
        return add_noise(source.to(self.noise), self.noise, float(self.sigmas[start]))

    def before_step(self, x: Tensor, i: int) -> Tensor:
        if self.known is None:
            return x
        noised = add_noise(self.clean, self.noise, float(self.sigmas[i])).to(x.dtype)
        return torch.where(self.frame_mask, noised, x)

    def model_input(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """What the transformer sees for solver state x at timestep t (0-d): with clean tokens, the known frames
        clean at timestep 0 and per-token timesteps (1, L); otherwise x and t as they are."""
        if self.known is not None and self.mode == CLEAN_TOKENS:
            x = torch.where(self.frame_mask, self.clean.to(x.dtype), x)
            mask = self.known.mask.to(t.device)
            t_frames = torch.where(mask, torch.zeros((), dtype=t.dtype, device=t.device), t)[None]  # (1, F)
            t = frame_timesteps_to_tokens(t_frames, self.grid)
        if self.image is not None:  # the given frames as channels beside every sample's latents
            channels = self.image.channels.to(x.device, x.dtype)
            x = torch.cat([x, channels.expand(x.shape[0], *channels.shape[1:])], dim=1)
        return x, t

    def finish(self, x: Tensor) -> Tensor:
        if self.known is None:
            return x
        return torch.where(self.frame_mask, self.clean.to(x.dtype), x)
