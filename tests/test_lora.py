"""LoRAs against diffusers' `load_lora_weights` on a tiny random Wan: the same LoRA in diffusers' format and
rewritten in the ComfyUI/Kijai and musubi formats gives the same frames; scales, two experts, the metadata, and
LoRAs that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sora_cli import Pipeline
from sora_cli.errors import ModelError
from sora_cli.video import read_metadata
from conftest import LORA_RANK as RANK, random_lora
from test_cli import call_sora
from test_pipeline import NEGATIVE, PROMPT, reference_frames

pytest.importorskip("peft")  # diffusers loads LoRAs through it

SETTINGS = dict(negative_prompt=NEGATIVE, height=32, width=48, num_frames=9, guidance_scale=5.0, shift=3.0, seed=7)
# diffusers' module names -> Wan's, for the rewritten formats
WAN = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
       "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
       "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}


def as_kijai(lora: dict[str, torch.Tensor], alpha: float = 8.0, underscores: bool = False) -> dict:
    """The same changes in ComfyUI/Kijai's format (`diffusion_model.` + Wan's names, lora_down / lora_up and an
    alpha), or musubi's (`lora_unet_` + Wan's names with "_")."""
    out = {}
    for key, value in lora.items():
        module, half = key.removeprefix("transformer.").rsplit(".", 2)[0], key.split(".")[-2]
        block, rest = module.split(".", 2)[1], module.split(".", 2)[2]
        wan = f"blocks.{block}.{WAN[rest]}"
        name = "lora_unet_" + wan.replace(".", "_") if underscores else f"diffusion_model.{wan}"
        if half == "lora_A":
            out[f"{name}.lora_down.weight"] = value
            out[f"{name}.alpha"] = torch.tensor(alpha)
        else:  # alpha/rank scales the pair: the up half makes up for it, so the change is the same
            out[f"{name}.lora_up.weight"] = value * RANK / alpha
    return out


def write(tensors: dict, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def off_by_more_than_2(frames: np.ndarray, expected: np.ndarray) -> float:
    return float((np.abs(frames.astype(int) - expected.astype(int)) > 2).mean())


@pytest.fixture(scope="module")
def files(tiny_wan_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    lora = random_lora(tiny_wan_dir)
    return dict(diffusers=write(lora, folder / "style.safetensors"),
                kijai=write(as_kijai(lora), folder / "style_kijai.safetensors"),
                musubi=write(as_kijai(lora, underscores=True), folder / "style_musubi.safetensors"))


@pytest.fixture(scope="module")
def expected(tiny_wan_dir, files):
    """diffusers' frames with the LoRA at scales 1 and 0.5, and without it."""
    from diffusers import WanPipeline

    reference = WanPipeline.from_pretrained(tiny_wan_dir)
    plain = reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=4, **SETTINGS)
    reference.load_lora_weights(str(files["diffusers"]), adapter_name="style")
    full = reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=4, **SETTINGS)
    reference.set_adapters(["style"], [0.5])
    half = reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=4, **SETTINGS)
    return {1.0: full, 0.5: half, 0.0: plain}


@pytest.mark.parametrize("form", ["diffusers", "kijai", "musubi"])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_a_lora_matches_diffusers(tiny_wan_dir, files, expected, form, scale):
    pipe = Pipeline.from_pretrained(tiny_wan_dir, device="cpu", loras=((files[form], scale),))
    frames = pipe(PROMPT, num_steps=4, **SETTINGS).frames
    assert off_by_more_than_2(expected[scale], expected[0.0]) > 0.005, "the LoRA must change the video (5x the tolerance)"
    off = off_by_more_than_2(frames, expected[scale])
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"


def test_the_cli_merges_and_records_loras(tiny_wan_dir, files, expected, tmp_path, capsys):
    out = tmp_path / "styled.mp4"
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), "--lora",
                             f"{files['kijai']}:0.5", "--negative", NEGATIVE, "--size", "48x32", "--frames", "9",
                             "--steps", "4", "--guidance", "5", "--shift", "3", "--seed", "7", "--out", str(out))
    assert code == 0, err
    [record] = read_metadata(out)["lora"]
    assert record["file"] == "style_kijai.safetensors" and record["scale"] == 0.5 and len(record["sha256"]) == 64


def test_two_loras_add_up(tiny_wan_dir, files, expected):
    """The same LoRA twice at 0.5 is the LoRA at 1."""
    pair = ((files["diffusers"], 0.5), (files["kijai"], 0.5))
    frames = Pipeline.from_pretrained(tiny_wan_dir, device="cpu", loras=pair)(PROMPT, num_steps=4, **SETTINGS).frames
    assert off_by_more_than_2(frames, expected[1.0]) <= 0.001


def test_each_expert_takes_its_own(tiny_experts_dir, tmp_path):
    high, low = random_lora(tiny_experts_dir, seed=1), random_lora(tiny_experts_dir, seed=2)
    high_file, low_file = write(high, tmp_path / "high.safetensors"), write(low, tmp_path / "low.safetensors")
    pipe = Pipeline.from_pretrained(tiny_experts_dir, device="cpu", loras=((high_file, 1.0),),
                                    loras_2=((low_file, 1.0),))
    plain = Pipeline.from_pretrained(tiny_experts_dir, device="cpu")
    key = "blocks.0.attn1.to_q.weight"
    for model, base, lora in ((pipe.transformer, plain.transformer, high), (pipe.transformer_2, plain.transformer_2, low)):
        a, b = (lora[f"transformer.blocks.0.attn1.to_q.lora_{h}.weight"] for h in "AB")
        torch.testing.assert_close(model.state_dict()[key], base.state_dict()[key] + b @ a, atol=1e-5, rtol=0)
    job = pipe.resolve(PROMPT)
    assert [r["file"] for r in job.metadata["lora"]] == ["high.safetensors"]
    assert [r["file"] for r in job.metadata["lora_2"]] == ["low.safetensors"]


@pytest.mark.parametrize("damage", ["unknown key", "wrong shape", "half a pair", "not safetensors", "second expert"])
def test_a_lora_that_does_not_fit_is_one_line(tiny_wan_dir, files, damage, tmp_path, capsys):
    lora = load_file(str(files["diffusers"]))
    name = "style.safetensors"
    if damage == "unknown key":
        lora["transformer.blocks.9.attn1.to_q.lora_A.weight"] = torch.zeros(RANK, 24)
    elif damage == "wrong shape":
        key = next(k for k in lora if k.endswith("lora_B.weight"))
        lora[key] = torch.zeros(lora[key].shape[0] + 1, RANK)
    elif damage == "half a pair":
        lora.pop(next(k for k in lora if k.endswith("lora_B.weight")))
    elif damage == "not safetensors":
        name = "style.pt"
    path = write(lora, tmp_path / name)
    option = "--lora-2" if damage == "second expert" else "--lora"
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), option, str(path),
                             "--out", str(tmp_path / "x.mp4"))
    needle = {"unknown key": "names no weight", "wrong shape": "has shape", "half a pair": "without the other",
              "not safetensors": ".safetensors files only", "second expert": "two-expert"}[damage]
    assert code != 0 and needle in err and len(err.strip().splitlines()) <= 3, err
    assert not (tmp_path / "x.mp4").exists()


def test_the_python_api_refuses_a_lora_for_no_weight(tiny_wan_dir, tmp_path):
    path = write({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(RANK, 7),
                  "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(24, RANK)},
                 tmp_path / "bad.safetensors")
    with pytest.raises(ModelError, match="has shape"):
        Pipeline.from_pretrained(tiny_wan_dir, device="cpu", loras=((path, 1.0),))


def test_batch_lines_carry_their_own_loras(tiny_wan_dir, files, tmp_path, capsys):
    """Each line merges its own LoRAs (relative paths start at the prompt file): the transformer is read again
    when they change, so a line after one without the LoRA makes what the first line with it made."""
    import shutil

    from sora_cli.video import read_video

    shutil.copy(files["kijai"], tmp_path / "style.safetensors")
    lines = [dict(prompt=PROMPT, seed=7, lora="style.safetensors:0.5"), dict(prompt=PROMPT, seed=7),
             dict(prompt=PROMPT, seed=7, lora=["style.safetensors:0.5"])]
    (tmp_path / "p.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    code, out, err = call_sora(capsys, "batch", str(tmp_path / "p.jsonl"), "--out-dir", str(tmp_path / "out"),
                               "--model", str(tiny_wan_dir), "--steps", "4", "--size", "48x32", "--frames", "9",
                               "--batch-size", "1", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [[r["file"] for r in rec.get("lora") or []] for rec in records] == [["style.safetensors"], [],
                                                                               ["style.safetensors"]]
    first, plain, again = (read_video(Path(rec["path"]))[0] for rec in records)
    assert np.array_equal(first, again) and not np.array_equal(first, plain)


def test_a_folder_may_carry_a_distilled_loras_defaults(tiny_wan_dir, tmp_path):
    """A step-distilled LoRA runs as its makers intend (4 steps, guidance 1, their shift and sampler): a model
    folder may say so under `_sora`, and what is given still comes first."""
    import shutil

    from sora_cli.spec import ModelSpec

    folder = tmp_path / "distilled"
    shutil.copytree(tiny_wan_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_sora"] |= dict(num_steps=4, guidance_scale=1.0, shift=5.0, sampler="euler")
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    job = pipe.resolve(PROMPT)
    assert (job.num_steps, job.guidance_scale, job.shift, job.sampler, job.guided) == (4, 1.0, 5.0, "euler", False)
    assert (pipe.resolve(PROMPT, shift=2.0, sampler="unipc").shift, pipe.resolve(PROMPT, sampler="unipc").sampler) \
        == (2.0, "unipc")
    for bad in (dict(shift=0), dict(sampler="ddim")):
        (folder / "model_index.json").write_text(json.dumps(dict(index, _sora=index["_sora"] | bad)))
        with pytest.raises(ModelError, match="shift|sampler"):
            ModelSpec.read(folder)
