"""Text to video: encode the prompt, draw noise, denoise step by step, decode.

`Pipeline.from_pretrained(model)` loads the networks of a Diffusers-layout folder (spec.py reads its configs: a
transformer, or Wan 2.2 A14B's two experts, see experts.py; a VAE and a text encoder); calling the pipeline runs
the fixed-step flow-matching sampler and returns uint8 frames.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from . import caching, experts, lora, memory, networks, parsers, settings
from .conditioning import Guide, ImageInput, KnownFrames, conditioning_mode, image_input, sdedit_start
from .errors import OptionError
from .loading import load_module, open_device, text_encoder_dirs
from .models import attention as attention_kernels
from .models.image_encoder import ImageEncoder
from .models.text_encoder import TextEncoder
from .models.wan.transformer import WanTransformer
from .models.wan.vae import WanVAE
from .models.wan.vae_tiling import Tiling
from .request import Job
from .sampling import SamplerConfig, flow_sigmas, frame_noise, sample
from .shapes import snap_frames, snap_size
from .spec import Defaults, ModelSpec

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Video:
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    seed: int
    metadata: dict = field(default_factory=dict)


class Pipeline:
    def __init__(self, spec: ModelSpec, transformer: WanTransformer, vae: WanVAE, text_encoder: TextEncoder,
                 device: torch.device, dtype: torch.dtype, offload: str = "none",
                 transformer_2: WanTransformer | None = None, image_encoder: ImageEncoder | None = None,
                 build: networks.Build | None = None, text_on_cpu: bool = False):
        # `transformer` is the only transformer, or the high-noise expert; `transformer_2` the low-noise one.
        self.spec, self.transformer, self.vae, self.text_encoder = spec, transformer, vae, text_encoder
        self.transformer_2, self.image_encoder = transformer_2, image_encoder
        self.device, self.dtype = device, dtype
        self.placement = memory.Placement(offload, device, text_on_cpu)  # where each network waits and runs
        self.conditioning = conditioning_mode(spec.defaults.conditioning)  # how known frames reach the model
        # what was merged into each expert, as its metadata records: {"lora": [...] or None, "lora_2": ...}
        self.loras: dict = {"lora": None, "lora_2": None}
        self._merged: tuple | None = None  # the (path, scale) pairs behind them; None: not made ready yet
        self.skipped_steps = 0  # transformer calls a step cache has skipped, all renders together
        self.calibration: dict | None = None  # what the last render with --cache calibrate measured
        self.build = build or networks.Build(dtype, self.placement.home)  # how the transformers are made ready

    @classmethod
    def from_pretrained(cls, model: str | Path | ModelSpec | None = None, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, offline: bool = False,
                        offload: str = "auto", loras: tuple = (), loras_2: tuple = (), attention: str = "auto",
                        compile: bool = False, vae_tiling: str = "auto", size: tuple[int, int, int] | None = None,
                        quantize: str = "none", transformer_files: tuple = (None, None)) -> "Pipeline":
        """`model`: a folder, a known name or a hub repo id, or the `ModelSpec` already read from one. `loras`
        ((path, scale) pairs, lora.py) are merged into the transformer (the high-noise expert), `loras_2` into a
        two-expert model's low-noise one, once, as they load. `attention` names the kernel (models/attention.py);
        `compile` compiles each transformer block with torch.compile (once per shape). `offload` (none, model,
        block) and `vae_tiling` (on, off) may be auto: chosen from the free GPU memory for renders up to `size`
        (width, height, frames; default the model's), see memory.py. `quantize` "fp8" stores the transformer's
        block weights in fp8; `transformer_files` replace the folder's transformer weights (networks.py)."""
        spec = model if isinstance(model, ModelSpec) else ModelSpec.read(model, offline)
        folder = spec.folder
        device = open_device(device)
        dtype = _parse_dtype(dtype) if dtype is not None else (torch.float32 if device.type == "cpu" else torch.bfloat16)
        _, kernel = attention_kernels.choose(attention, device, dtype)  # refused before anything loads
        plan = memory.choose(spec, device, dtype, offload, vae_tiling, size)
        # Modules live on the accelerator unless offloading; the text encoder only visits it to encode.
        home = memory.home(plan.offload, device)
        build = networks.Build(dtype, home, tuple(transformer_files), quantize, kernel, compile)
        transformer, transformer_2 = networks.read_transformers(spec, build)
        # The VAE stays in float32: it is a small share of the time, and decoding is where banding would show.
        vae = load_module(lambda: spec.networks["vae"](spec.vae), folder / "vae", home, torch.float32)
        vae.tiling = Tiling() if plan.vae_tiling else None  # spatial tiles: bounded memory at any frame size
        encoder_class = (spec.index.get("text_encoder") or [None, "UMT5EncoderModel"])[1]
        text_encoder = TextEncoder.load(*text_encoder_dirs(folder, spec.index), encoder_class,
                                        spec.defaults.text_length, dtype)
        image_encoder = None
        if spec.transformer.image_dim is not None:  # Wan 2.1 image-to-video: CLIP, visiting the device as text does
            image_encoder = ImageEncoder.load(folder / "image_encoder", folder / "image_processor",
                                              spec.index["image_encoder"][1], dtype)
        pipe = cls(spec, transformer, vae, text_encoder, device, dtype, plan.offload, transformer_2, image_encoder,
                   build, plan.text_on_cpu)
        pipe.use_loras(loras, loras_2)
        return pipe

    def use_loras(self, loras: tuple = (), loras_2: tuple = ()) -> None:
        """Merge these LoRAs ((path, scale) pairs; `loras_2` for a two-expert model's low-noise expert), and only
        these: with others merged already, or weights stored in fp8 since, the transformers are first read again
        from their files. A batch calls it before each item, so that its lines may each name their own."""
        wanted = (tuple(loras), tuple(loras_2))
        if wanted == self._merged:
            return
        if loras_2 and self.transformer_2 is None:
            raise OptionError("--lora-2 is for a two-expert model's low-noise expert; this model has one transformer")
        ready = self._merged is not None
        if ready and (any(self._merged) or self.build.quantize != "none"):
            self.transformer = self.transformer_2 = None  # let go first: two copies of a 14B expert do not fit
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.transformer, self.transformer_2 = networks.read_transformers(self.spec, self.build)
            ready = False
        networks.check_mergeable(self.transformer, loras, "--lora")
        networks.check_mergeable(self.transformer_2, loras_2, "--lora-2")
        self._merged = (("(failed)",), ())  # until every merge is through: a failed one is read again next time
        self.loras = {key: lora.merge(model, [lora.Lora(Path(p), float(s)) for p, s in pairs]) if pairs else None
                      for key, model, pairs in (("lora", self.transformer, loras),
                                                ("lora_2", self.transformer_2, loras_2))}
        if not ready:
            networks.prepare([m for m in (self.transformer, self.transformer_2) if m is not None], self.build,
                             self.placement)
        self._merged = wanted

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def defaults(self) -> Defaults:
        return self.spec.defaults

    @property
    def sampler(self) -> SamplerConfig:
        return self.spec.sampler

    @property
    def size_multiple(self) -> int:
        """Frame sides are multiples of this: the VAE's spatial stride times the transformer's patch."""
        return self.spec.size_multiple

    @property
    def temporal_stride(self) -> int:
        """Video frames a latent frame stands for, after the first (which stands for one)."""
        return self.spec.vae.temporal_stride

    @property
    def window(self) -> int:
        """Latent frames the model makes at once: those of its default clip length, what it was trained on."""
        return self.latent_frames(self.defaults.num_frames)

    def __call__(self, prompt: str, negative_prompt: str | None = None, height: int | None = None,
                 width: int | None = None, num_frames: int | None = None, num_steps: int | None = None,
                 guidance_scale: float | None = None, shift: float | None = None, sampler: str | None = None,
                 seed: int | None = None, fps: float | None = None, passes: int | None = None,
                 guidance_scale_2: float | None = None, known: KnownFrames | None = None, strength: float = 1.0,
                 images: dict[int, np.ndarray] | None = None, cache: str | None = None,
                 cache_threshold: float | None = None, on_progress: ProgressFn | None = None) -> Video:
        """A video for the prompt. `known` frames (latents for this size and length) are kept and the rest is
        generated around them; strength < 1 is SDEdit: sampling starts from `known.latents` noised that far.
        `images` {video frame: (H, W, 3) uint8} are the frames an image-to-video checkpoint is given (0, and -1
        for the last). guidance_scale_2 is the low-noise expert's, for a two-expert model."""
        job = self.resolve(prompt, negative_prompt, height, width, num_frames, num_steps, guidance_scale, shift,
                           sampler, seed, fps, passes, guidance_scale_2, cache, cache_threshold)
        image = self.image_input(job, images) if images else None
        latents = self.sample([job], known, strength, on_progress, image)
        return Video(frames=self.decode(latents, on_progress), fps=job.fps, seed=job.seed, metadata=job.metadata)

    def sample(self, jobs: list[Job], known: KnownFrames | None = None, strength: float = 1.0,
               on_progress: ProgressFn | None = None, image: ImageInput | None = None) -> Tensor:
        """Latents (N, C, F, h, w) of N jobs that share every setting but prompt and seed, denoised as one batch:
        each the latents it gets alone, up to a rounding step (a batched matrix product rounds a little
        differently)."""
        progress = on_progress or (lambda stage, done, total: None)

        if self.takes_images and image is None:
            raise OptionError("this is an image-to-video checkpoint: give it the first frame (--image)")

        # 1. Encode the text: each prompt, and the negative prompts that guidance steers away from.
        contexts = [self.encode_prompt(job, progress) for job in jobs]  # each (1 or 2, L, D)
        context = torch.cat([c[:1] for c in contexts] + [c[1:] for c in contexts])

        # 2. Draw each job's noise from its own seeded generator, so a seed gives one video alone or in a batch.
        noise = torch.cat([self.draw_noise(job, job.generator()) for job in jobs])

        # 3. Denoise step by step along the shifted flow-matching schedule, keeping the known frames.
        return self.denoise(jobs[0], context, noise, known, strength, lambda i, n: progress("denoise", i, n), image)

    @property
    def takes_images(self) -> bool:
        """Whether the checkpoint reads given frames as input channels (Wan's image-to-video layout)."""
        return self.spec.takes_images

    def image_input(self, job: Job, images: dict[int, np.ndarray]) -> ImageInput:
        """Frames {video frame: (H, W, 3) uint8} as an image-to-video checkpoint reads them (conditioning.py)."""
        if not self.takes_images:
            raise OptionError("this checkpoint is not an image-to-video one; give it known frames instead")

        def encode_video(video: Tensor) -> Tensor:
            with self.placement.visiting(self.vae):
                return self.vae.encode(video.to(self.device))

        def encode_images(frames: list[np.ndarray]) -> Tensor:
            encoder = self.image_encoder.model.to(self.device)  # visiting the device, as the text encoder does
            try:
                return self.image_encoder.encode(frames).to(self.device, self.dtype)
            finally:
                encoder.to("cpu")

        return image_input(images, job.num_frames, job.height, job.width, self.temporal_stride, encode_video,
                           encode_images if self.image_encoder is not None else None)

    def resolve(self, prompt: str, negative_prompt: str | None = None, height: int | None = None,
                width: int | None = None, num_frames: int | None = None, num_steps: int | None = None,
                guidance_scale: float | None = None, shift: float | None = None, sampler: str | None = None,
                seed: int | None = None, fps: float | None = None, passes: int | None = None,
                guidance_scale_2: float | None = None, cache: str | None = None,
                cache_threshold: float | None = None) -> Job:
        """What is not given comes from the model's defaults; sizes and lengths are snapped with a warning.
        guidance_scale_2 (the low-noise expert's) defaults to the model's, else to the guidance scale."""
        d, two_experts = self.defaults, self.transformer_2 is not None
        given = settings.check_keywords(dict(negative_prompt=negative_prompt, num_steps=num_steps, seed=seed,
                                             guidance_scale=guidance_scale, guidance_scale_2=guidance_scale_2,
                                             shift=shift, sampler=sampler, passes=passes, cache=cache,
                                             cache_threshold=cache_threshold))
        width, height = snap_size(width or d.width, height or d.height, self.size_multiple)
        high, why = parsers.MAX_SIDE, "4K"
        rope = min(c.rope_max_seq_len for c in (self.spec.transformer, self.spec.transformer_2) if c is not None)
        positions = rope * self.size_multiple  # rotary positions a side
        if positions < high:
            high, why = positions, "what the transformer has positions for"
        for side in (width, height):
            parsers.check_side(f"frame size {width}x{height}", side, high, why)
        guidance = d.guidance_scale if guidance_scale is None else guidance_scale
        frames = snap_frames(num_frames or d.num_frames)
        return Job(
            prompt=prompt,
            negative_prompt=d.negative_prompt if negative_prompt is None else negative_prompt,
            width=width, height=height, num_frames=frames,
            num_steps=num_steps or d.num_steps,
            guidance_scale=guidance,
            guidance_scale_2=experts.guidance_2(guidance_scale_2, two_experts, d.guidance_scale_2, guidance),
            shift=shift if shift is not None else d.shift if d.shift is not None else self.sampler.shift,
            sampler=given["sampler"] or d.sampler or self.sampler.sampler,
            seed=settings.random_seed() if seed is None else seed,
            fps=fps or d.fps,
            passes=(passes or d.passes) if self.latent_frames(frames) > 1 else 1,  # one latent frame: one pass
            model=self.name, loras=self.loras["lora"], loras_2=self.loras["lora_2"],
            transformer=_name(self.build.files[0]), transformer_2=_name(self.build.files[1]),
            quantize=None if self.build.quantize == "none" else self.build.quantize, cache=given["cache"],
            cache_threshold=None if cache is None else caching.threshold(cache, cache_threshold, d.caches))

    def latent_frames(self, num_frames: int) -> int:
        return self.spec.latent_frames(num_frames)

    def draw_noise(self, job: Job, generator: torch.Generator, latent_frames: int | None = None) -> Tensor:
        """(1, C, F, h, w) float32 noise on the CPU; F is the whole job's unless given."""
        s = self.vae.spatial_stride
        f = latent_frames or self.latent_frames(job.num_frames)
        shape = (1, self.vae.config.z_dim, f, job.height // s, job.width // s)
        return frame_noise(shape, generator, self.defaults.noise_correlation)

    def encode_prompt(self, job: Job, progress: ProgressFn | None = None) -> Tensor:
        """The job's prompt, and its negative prompt when guidance is on, as one batch (B, L, D)."""
        progress = progress or (lambda stage, done, total: None)
        progress("encode text", 0, 1)
        context = self.encode_text([job.prompt, job.negative_prompt] if job.guided else [job.prompt])
        progress("encode text", 1, 1)
        return context

    def denoise(self, job: Job, context: Tensor, noise: Tensor, known: KnownFrames | None = None,
                strength: float = 1.0, on_step: Callable[[int, int], None] | None = None,
                image: ImageInput | None = None) -> Tensor:
        """noise (N, C, F, h, w) -> latents of that shape, with the known frames exactly their clean latents.
        context: the N prompts, then (under guidance) the N negative prompts."""
        start = sdedit_start(strength, job.num_steps)
        if start and known is None:
            raise ValueError("strength < 1 (SDEdit) needs the source latents, given as `known`")
        nothing_known = (known is None or not known.any) and image is None
        if not (job.passes == 2 and nothing_known and start == 0 and noise.shape[2] > 1):
            return self._sample(job, context, noise, known, start, on_step, image)
        # Two passes: draw the clip, keep its first latent frame, and generate the rest again from it. With the first
        # frame known the direction word alone decides the path, which sora-tiny was trained to follow
        # (tiny/train/start_motion.py). The second pass's noise is the first's with its channels rotated by half:
        # independent values, yet a function of the sample's own noise, so a seed gives one video alone or batched.
        n = job.num_steps
        drawn = self._sample(job, context, noise, None, 0, (lambda i, _: on_step(i, 2 * n)) if on_step else None)
        first = torch.zeros(noise.shape[2], dtype=torch.bool)
        first[0] = True
        return self._sample(job, context, noise.roll(noise.shape[1] // 2, dims=1), KnownFrames(drawn, first), 0,
                            (lambda i, _: on_step(n + i, 2 * n)) if on_step else None)

    def _sample(self, job: Job, context: Tensor, noise: Tensor, known: KnownFrames | None, start: int,
                on_step: Callable[[int, int], None] | None, image: ImageInput | None = None) -> Tensor:
        sigmas, timesteps = flow_sigmas(job.num_steps, job.shift, job.sampler, self.sampler.num_train_timesteps)
        noise = noise.to(self.device)
        guide = Guide(known, noise, sigmas, self.conditioning, self.transformer.token_grid(*noise.shape[2:]), image)
        # One step cache an expert: each remembers only its own steps.
        caches = {id(m): caching.make(job.cache, job.cache_threshold, job.num_steps, self.defaults.caches)
                  for m in (self.transformer, self.transformer_2)} if job.cache else {}
        with self._expert_switch(job) as switch, torch.inference_mode():
            x = guide.initial(None if known is None else known.latents, start)
            try:
                latents = sample(self._velocity_fn(context, switch, sigmas, guide, caches), x, sigmas, timesteps,
                                 job.sampler, start=start, before_step=guide.before_step, on_step=on_step)
            finally:
                self.placement.release()
        self.skipped_steps += sum(c.skipped for c in caches.values())
        self.calibration = caching.calibrated(list(caches.values()), job.num_steps) or self.calibration
        return guide.finish(latents)

    def _expert_switch(self, job: Job) -> experts.ExpertSwitch:
        """Each step's transformer and guidance scale: the one transformer throughout, or the expert of its
        timestep (resolve sets guidance_scale_2 for every two-expert job)."""
        models = [m for m in (self.transformer, self.transformer_2) if m is not None]
        return experts.ExpertSwitch(models, [job.guidance_scale, job.guidance_scale_2][:len(models)],
                                    self.spec.boundary_timestep, self.device, self.placement.moves_experts)

    def encode_text(self, prompts: list[str]) -> Tensor:
        """prompts -> (B, L, D) on the pipeline's device, in the transformer's dtype."""
        encoder = self.text_encoder.model
        encoder.to(self.placement.text_device)  # the accelerator, unless the encoder alone would not fit there
        try:
            context = self.text_encoder.encode(prompts)
        finally:
            encoder.to("cpu")  # leave the accelerator to the transformer
        return context.to(self.device, self.dtype)

    def _velocity_fn(self, context: Tensor, switch: experts.ExpertSwitch, sigmas: Tensor, guide: Guide,
                     caches: dict) -> Callable[[Tensor, Tensor, int], Tensor]:
        predicts_x0 = self.sampler.prediction == "sample"
        features = guide.image.features if guide.image is not None else None  # (1, S, image_dim) or None

        def velocity(x: Tensor, t: Tensor, i: int) -> Tensor:
            model, guidance_scale = switch.pick(t)  # by the step's timestep alone, as diffusers picks
            x_in, t_in = guide.model_input(x, t)  # with clean tokens: known frames clean, t (1, L) 0 on them
            # The N samples with their prompts and, under guidance, again with their negative prompts: one batch.
            # An expert whose scale is at most 1 runs unguided, on the prompts alone.
            copies = context.shape[0] // x.shape[0] if guidance_scale > 1.0 else 1
            batch = copies * x.shape[0]
            x_in = x_in.to(self.dtype).repeat(copies, 1, 1, 1, 1)
            image = None if features is None else features.expand(batch, *features.shape[1:])
            cache = caches[id(model)].at(i, copies) if caches else None
            v = model(x_in, t_in.to(self.device).expand(batch, *t_in.shape[1:]), context[:batch], image,
                      cache).float()
            if predicts_x0:  # x = (1 - s) x0 + s noise, so the velocity noise - x0 is (x - x0) / s
                v = (x.float().repeat(copies, 1, 1, 1, 1) - v) / float(sigmas[i])
            if copies == 1:
                return v
            v_cond, v_uncond = v.chunk(2)
            return v_uncond + guidance_scale * (v_cond - v_uncond)

        return velocity

    def decode(self, latents: Tensor, progress: ProgressFn | None = None) -> np.ndarray:
        """(1, C, F, h, w) latents -> (T, H, W, 3) uint8 frames."""
        on_chunk = (lambda i, n: progress("decode", i, n)) if progress else None
        with self.placement.visiting(self.vae), torch.no_grad():
            return _to_uint8(self.vae.decode(latents.float(), on_chunk=on_chunk)[0])

    @contextlib.contextmanager
    def decoding(self) -> Iterator[Callable[[Tensor], np.ndarray]]:
        """A long latent clip decoded piece by piece, as one clip: each call takes the next latent frames
        (1, C, f, h, w) and returns their (T, H, W, 3) uint8 frames. Memory stays that of one piece."""
        with self.vae.decoding() as decode:
            def push(latents: Tensor) -> np.ndarray:
                with self.placement.visiting(self.vae):
                    return _to_uint8(decode(latents.to(self.device, torch.float32))[0])

            yield push

    def encode(self, frames: np.ndarray) -> Tensor:
        """(T, H, W, 3) uint8 frames, T = 4n + 1 -> latents (1, C, 1 + n, h, w), float32 on the device."""
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)
        with self.placement.visiting(self.vae):
            return self.vae.encode(video.to(self.device, torch.float32) / 127.5 - 1)


def _to_uint8(video: Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    video = ((video + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, parsers.parse_dtype(dtype))


def _name(path: Path | None) -> str | None:
    return None if path is None else Path(path).name
