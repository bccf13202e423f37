"""A model folder as sora reads it before loading any weights: its configs, checked, and its generation
defaults. Enough to size a job (or a batch's groups) and to refuse what sora cannot render before anything loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import caching, experts
from .errors import ModelError
from .catalog import hub_id
from .loading import is_named, read_json, resolve_model
from .models import checks
from .models import family
from .models.wan.transformer import TransformerConfig
from .models.wan.vae import VAEConfig
from .sampling import SamplerConfig
from .settings import SAMPLERS

# Wan's own default negative prompt (its shared config), used when a Wan checkpoint names none.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# Wan 2.2 TI2V-5B (`expand_timesteps`: a timestep per token): 720p at 24 fps, 5 s, as its makers run it; and the
# first frame given clean at timestep 0, the image conditioning it was trained with (conditioning.py).
TI2V = dict(width=1280, height=704, num_frames=121, fps=24, conditioning="clean_tokens")
# What the makers of published checkpoints run them at, where it differs from Wan's defaults and nothing in the
# folder says so (diffusers leaves it to the caller). A model's own `_sora` entries still come first.
HD = dict(width=1280, height=720)
NATIVE = {"Wan-AI/Wan2.1-I2V-14B-720P-Diffusers": HD, "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers": HD,
          "Wan-AI/Wan2.2-T2V-A14B-Diffusers": dict(HD, num_steps=40, guidance_scale=4.0, guidance_scale_2=3.0),
          "Wan-AI/Wan2.2-I2V-A14B-Diffusers": dict(HD, num_steps=40, guidance_scale=3.5, guidance_scale_2=3.5)}


@dataclass
class Defaults:
    """Generation defaults of a model. Wan's values unless model_index.json overrides them under "_sora"."""

    width: int = 832
    height: int = 480
    num_frames: int = 81
    fps: int = 16
    num_steps: int = 50
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None  # the low-noise expert's, for a two-expert model; None: guidance_scale
    text_length: int = 512
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    conditioning: str | None = None  # "clean_tokens" for a model trained with clean-frame masks (conditioning.py)
    noise_correlation: float = 0.0  # between latent frames, as the model was trained (sampling.frame_noise)
    passes: int = 1  # 2: text-to-video draws the first frame, then animates it (a model trained to do that)
    shift: float | None = None  # None: the scheduler config's; a step-distilled model may name its own
    sampler: str | None = None  # None: the scheduler config's
    caches: dict = field(default_factory=dict)  # step-cache calibrations by method (caching.py)

    @classmethod
    def from_model_index(cls, index: dict, source: str | None = None) -> "Defaults":
        """The defaults its makers run the model with (by its hub id `source`, or TI2V's), then the `_sora`
        entries this class names, checked (ValueError names one that is not usable)."""
        native = NATIVE.get(source, {}) | (TI2V if index.get("expand_timesteps") else {})
        own = native | {k: v for k, v in index.get("_sora", {}).items() if k in cls.__dataclass_fields__}
        checks.whole_numbers(own, "width", "height", "num_frames", "fps", "num_steps", "text_length", "passes")
        checks.number(own, "guidance_scale", 0)
        checks.number(own, "guidance_scale_2", 0)
        checks.number(own, "noise_correlation", 0, 1)
        checks.string(own, "negative_prompt")
        checks.string(own, "conditioning", nullable=True)
        checks.number(own, "shift", 0, above=True)
        if own.get("sampler") not in (None, *SAMPLERS):
            raise ValueError(f"_sora.sampler must be one of {', '.join(SAMPLERS)}, got {str(own['sampler'])[:40]}")
        own["caches"] = caching.calibration(source, own.get("caches"))
        return cls(**own)


@dataclass
class ModelSpec:
    """A model folder's configs, read without its weights: enough to size a job before the model is loaded."""

    name: str  # as the user gave it, or the folder's name
    folder: Path
    index: dict
    defaults: Defaults
    transformer: TransformerConfig  # the only one, or the high-noise expert of two
    vae: VAEConfig
    sampler: SamplerConfig
    transformer_2: TransformerConfig | None = None  # the low-noise expert of a two-expert model
    boundary_ratio: float | None = None  # set exactly when transformer_2 is
    networks: dict = field(default_factory=dict)  # component -> the network class built from its config

    @classmethod
    def read(cls, model: str | Path | None = None, offline: bool = False,
             replaced: tuple[str, ...] = ()) -> "ModelSpec":
        """Every config of the folder, checked: what sora cannot render is a ModelError before weights load.
        `replaced`: components whose weights come from single files (networks.py), not the folder."""
        folder = resolve_model(None if model is None else str(model), offline=offline, replaced=replaced)
        index = read_json(folder / "model_index.json")
        try:
            ratio = experts.boundary_ratio(index)
            # Each config is checked against what its network implements here, before any weights load.
            transformer_config, transformer_network = family(index, "transformer")
            vae_config, vae_network = family(index, "vae")
            transformer = transformer_config.from_dict(read_json(folder / "transformer" / "config.json"))
            vae = vae_config.from_dict(read_json(folder / "vae" / "config.json"))
            second = None if ratio is None else experts.low_noise_config(
                read_json(folder / "transformer_2" / "config.json"), transformer)
            source = hub_id(None if model is None else str(model), folder)
            spec = cls(folder.name if model is None else str(model), folder, index,
                       Defaults.from_model_index(index, source), transformer, vae,
                       SamplerConfig.from_scheduler_config(read_json(folder / "scheduler" / "scheduler_config.json")),
                       second, ratio, dict(transformer=transformer_network, vae=vae_network))
            if (index.get("_class_name") == "WanImageToVideoPipeline") != spec.takes_images:
                raise ValueError(f"model_index.json names a {index.get('_class_name')}, but the transformer takes "
                                 f"{transformer.in_channels} input channels (image-to-video: 2 x {vae.z_dim} + "
                                 f"{vae.temporal_stride})")
            if (transformer.image_dim is not None) != is_named(index.get("image_encoder")):
                raise ValueError("its transformer reads image-encoder features (image_dim) but the folder has no "
                                 "image_encoder, or the other way round")
            return spec
        except ValueError as e:
            raise ModelError(f"model at {folder} is not supported: {e}") from None

    @property
    def boundary_timestep(self) -> float | None:
        """The timestep from which down the low-noise expert runs; None with one transformer."""
        return None if self.boundary_ratio is None else self.boundary_ratio * self.sampler.num_train_timesteps

    @property
    def takes_images(self) -> bool:
        """Wan's image-to-video input layout: the noisy latents, a 4-channel mask and the given frames' latents."""
        return self.transformer.in_channels == 2 * self.vae.z_dim + self.vae.temporal_stride

    @property
    def takes_last_image(self) -> bool:
        """An image-to-video checkpoint that also takes a last frame: one without an image encoder (Wan 2.2 I2V),
        or whose image tokens have positions for two frames (Wan 2.1 FLF2V)."""
        return self.takes_images and (self.transformer.image_dim is None or bool(self.transformer.pos_embed_seq_len))

    @property
    def size_multiple(self) -> int:
        return self.vae.spatial_stride * self.transformer.patch_size[1]

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a 4n + 1 frame clip: the first frame, then one per temporal_stride frames."""
        return (num_frames - 1) // self.vae.temporal_stride + 1

    def tokens(self, width: int, height: int, num_frames: int) -> int:
        """The transformer's sequence length for one clip of this size (sides rounded up to the token grid)."""
        m = self.size_multiple
        return self.latent_frames(num_frames) // self.transformer.patch_size[0] * -(-width // m) * -(-height // m)
