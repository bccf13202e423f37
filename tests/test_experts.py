"""Wan 2.2 A14B's two experts, against diffusers' WanPipeline on a tiny two-expert folder it saved itself; expert
switching with offload; and what a model folder may hold that sora refuses instead of rendering without it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from sora_cli import Pipeline
from sora_cli.conditioning import KnownFrames
from sora_cli.errors import ModelError, OptionError
from sora_cli.experts import ExpertSwitch, expert_index
from sora_cli.loading import HUB_PATTERNS, KNOWN_MODELS
from sora_cli.spec import ModelSpec
from sora_cli.sampling import flow_sigmas
from sora_cli.video import read_metadata
from test_cli import call_sora
from test_pipeline import NEGATIVE, PROMPT, reference_frames

BOUNDARY = 0.875 * 1000  # the tiny folder's boundary_ratio times its scheduler's num_train_timesteps


@pytest.fixture(scope="module")
def ours(tiny_experts_dir):
    return Pipeline.from_pretrained(tiny_experts_dir, device="cpu")


@pytest.fixture(scope="module")
def reference(tiny_experts_dir):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(tiny_experts_dir)


def record_experts(pipe: Pipeline, monkeypatch) -> list[str]:
    """The expert of each transformer call, "high" (transformer) or "low" (transformer_2), in order."""
    used: list[str] = []
    for name, module in (("high", pipe.transformer), ("low", pipe.transformer_2)):
        forward = module.forward
        monkeypatch.setattr(module, "forward", lambda *a, _n=name, _f=forward: used.append(_n) or _f(*a))
    return used


def high_noise_steps(num_steps: int, shift: float, sampler: str) -> int:
    """How many of the schedule's steps are at or above the boundary timestep."""
    _, timesteps = flow_sigmas(num_steps, shift, sampler, 1000)
    return int((timesteps >= BOUNDARY).sum())


def off_by_more_than_2(frames: np.ndarray, expected: np.ndarray) -> float:
    return float((np.abs(frames.astype(int) - expected.astype(int)) > 2).mean())


SETTINGS = dict(negative_prompt=NEGATIVE, height=32, width=48, num_frames=9, guidance_scale=5.0, shift=3.0, seed=1234)


@pytest.mark.parametrize("sampler,steps,guidance_2", [
    ("unipc", 8, 3.0),  # the two experts guided differently
    ("euler", 6, 2.0),  # Euler's float32 timesteps meet the boundary as diffusers compares them
    ("unipc", 6, 1.0),  # the low-noise expert unguided: ours runs it on the prompt alone
])
def test_two_experts_match_reference(ours, reference, monkeypatch, sampler, steps, guidance_2):
    used = record_experts(ours, monkeypatch)
    video = ours(PROMPT, num_steps=steps, sampler=sampler, guidance_scale_2=guidance_2, **SETTINGS)
    expected = reference_frames(reference, sampler, prompt=PROMPT, num_inference_steps=steps,
                                guidance_scale_2=guidance_2, **SETTINGS)

    high = high_noise_steps(steps, SETTINGS["shift"], sampler)
    assert 0 < high < steps, "both experts must run for this test to prove anything"
    assert used == ["high"] * high + ["low"] * (steps - high)  # one batched call a step, switching once
    assert expected.std() > 5, "the reference frames are flat, so this comparison would prove nothing"
    assert video.frames.shape == expected.shape == (9, 32, 48, 3)
    off = off_by_more_than_2(video.frames, expected)
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"
    assert video.metadata["guidance"] == 5.0 and video.metadata["guidance_2"] == guidance_2


def test_the_second_expert_decides_the_result(ours, reference, monkeypatch):
    """The comparison above fails if transformer_2 is ignored: the high-noise expert on every step, at its own
    guidance scale (what a loader reading `transformer` alone renders), is far outside the tolerance."""
    expected = reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=8, guidance_scale_2=3.0,
                                **SETTINGS)
    monkeypatch.setattr(ours, "transformer_2", ours.transformer)
    alone = ours(PROMPT, num_steps=8, sampler="unipc", guidance_scale_2=SETTINGS["guidance_scale"], **SETTINGS)
    off = off_by_more_than_2(alone.frames, expected)
    assert off > 0.005, f"only {off:.2%} of pixels changed"  # 5x the tolerance


def test_offload_switches_experts_and_changes_nothing(tiny_experts_dir, ours, monkeypatch):
    offloaded = Pipeline.from_pretrained(tiny_experts_dir, device="cpu", offload="model")
    moves: list[tuple[str, str]] = []
    for name, module in (("high", offloaded.transformer), ("low", offloaded.transformer_2)):
        to = module.to
        monkeypatch.setattr(module, "to", lambda *a, _n=name, _to=to: moves.append((_n, str(a[0]))) or _to(*a))
    kw = dict(num_steps=6, seed=3, guidance_scale_2=3.0)
    assert np.array_equal(offloaded(PROMPT, **kw).frames, ours(PROMPT, **kw).frames)
    # on, off, then the other on, off (here "on" is the CPU too; see the next test for an accelerator)
    assert [name for name, _ in moves] == ["high", "high", "low", "low"]


class Placed(nn.Module):
    """Stands in for an expert: remembers where it was sent, without moving anything."""

    def __init__(self) -> None:
        super().__init__()
        self.where = "cpu"

    def to(self, device: torch.device | str) -> "Placed":
        self.where = str(device)
        return self


def test_only_the_expert_in_use_sits_on_the_accelerator():
    high, low = Placed(), Placed()
    with ExpertSwitch([high, low], [4.0, 3.0], BOUNDARY, "cuda", offload=True) as switch:
        for t in (999, 954, 900, 875, 833, 750, 500, 1):
            model, scale = switch.pick(torch.tensor(t))
            expected, other = (high, low) if t >= BOUNDARY else (low, high)
            assert model is expected and scale == (4.0 if t >= BOUNDARY else 3.0)
            assert (expected.where, other.where) == ("cuda", "cpu")
    assert high.where == low.where == "cpu"
    with ExpertSwitch([high, low], [4.0, 3.0], BOUNDARY, "cuda", offload=False) as switch:
        switch.pick(torch.tensor(999))
        switch.pick(torch.tensor(1))
    assert high.where == low.where == "cpu"  # without offload nothing is moved


def test_the_boundary_is_met_as_diffusers_meets_it():
    assert expert_index(torch.tensor(875), 875.0) == 0  # at the boundary: still the high-noise expert
    assert expert_index(torch.tensor(874), 875.0) == 1
    assert expert_index(torch.tensor(874.99999, dtype=torch.float32), 875.0) == 0  # 875.0 in float32
    assert expert_index(torch.tensor(1), None) == 0  # one transformer: always it


def test_editing_paths_pick_the_expert_by_timestep(ours, monkeypatch):
    """Two passes, SDEdit and known frames run unchanged; which expert runs depends on the step's timestep."""
    used = record_experts(ours, monkeypatch)
    job = ours.resolve(PROMPT, num_frames=9, num_steps=8, seed=0, passes=2)
    context = ours.encode_prompt(job)
    noise = ours.draw_noise(job, torch.Generator().manual_seed(0))
    latents = ours.denoise(job, context, noise)
    high = high_noise_steps(8, job.shift, job.sampler)
    assert used == (["high"] * high + ["low"] * (8 - high)) * 2  # each pass switches at the boundary
    used.clear()
    one = dataclasses.replace(job, passes=1)
    ours.denoise(one, context, noise, KnownFrames.nothing(latents), strength=0.5)  # SDEdit from step 4 of 8
    assert used == ["low"] * 4  # below the boundary: only the low-noise expert
    mask = torch.zeros(latents.shape[2], dtype=torch.bool)
    mask[0] = True
    kept = ours.denoise(one, context, noise, KnownFrames(latents, mask))
    assert torch.equal(kept[:, :, 0], latents[:, :, 0])


def test_the_second_guidance_scale(ours, tiny_wan_dir, tiny_experts_dir, tmp_path):
    assert ours.resolve(PROMPT, guidance_scale=4.0).guidance_scale_2 == 4.0  # default: the guidance scale
    job = ours.resolve(PROMPT, guidance_scale=4.0, guidance_scale_2=3.0)
    assert (job.guidance_scale, job.guidance_scale_2, job.metadata["guidance_2"]) == (4.0, 3.0, 3.0)
    assert ours.resolve(PROMPT, guidance_scale=1.0, guidance_scale_2=3.0).guided  # the negative prompt is needed
    for bad in (float("nan"), -1.0, 101.0, True):
        with pytest.raises(OptionError, match="guidance_scale_2"):  # the Python API names its own keyword
            ours.resolve(PROMPT, guidance_scale_2=bad)
    folder = copy_model(tiny_experts_dir, tmp_path / "defaults")
    edit_index(folder, lambda index: index["_sora"].update(guidance_scale_2=2.5))
    assert Pipeline.from_pretrained(folder, device="cpu").resolve(PROMPT).guidance_scale_2 == 2.5
    single = Pipeline.from_pretrained(tiny_wan_dir, device="cpu")
    assert "guidance_2" not in single.resolve(PROMPT).metadata and single.transformer_2 is None
    with pytest.raises(OptionError, match="two experts"):
        single.resolve(PROMPT, guidance_scale_2=3.0)


def test_the_cli_renders_a_two_expert_model(capsys, tiny_experts_dir, tmp_path):
    out = tmp_path / "fox.mp4"
    code, _, err = call_sora(capsys, "generate", "a fox", "--model", str(tiny_experts_dir), "--out", str(out),
                             "--frames", "5", "--steps", "4", "--guidance", "4", "--quiet")
    assert code == 0, err
    meta = read_metadata(out)
    assert meta["guidance"] == meta["guidance_2"] == 4.0
    # --guidance-2 sets the low-noise expert's, for generate, the editing commands and batch lines alike
    second = tmp_path / "second.mp4"
    code, _, err = call_sora(capsys, "generate", "a fox", "--model", str(tiny_experts_dir), "--out", str(second),
                             "--frames", "5", "--steps", "4", "--guidance", "4", "--guidance-2", "2.5", "--quiet")
    assert code == 0 and read_metadata(second)["guidance_2"] == 2.5, err
    code, _, err = call_sora(capsys, "edit", str(second), "--prompt", "a cat", "--model", str(tiny_experts_dir),
                             "--out", str(tmp_path / "cat.mp4"), "--steps", "4", "--guidance-2", "1.5", "--quiet")
    assert code == 0 and read_metadata(tmp_path / "cat.mp4")["guidance_2"] == 1.5, err
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "a fox", "guidance_2": 3.5, "out": "batch.mp4"}\n')
    code, _, err = call_sora(capsys, "batch", str(lines), "--out-dir", str(tmp_path / "b"), "--model",
                             str(tiny_experts_dir), "--frames", "5", "--steps", "2", "--quiet")
    assert code == 0 and read_metadata(tmp_path / "b" / "batch.mp4")["guidance_2"] == 3.5, err


def test_a_second_guidance_scale_for_a_model_with_one_transformer_is_refused(capsys, tiny_wan_dir, tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call_sora(capsys, "generate", "a fox", "--model", str(tiny_wan_dir), "--guidance-2", "3",
                               "--quiet")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "two experts" in err and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- what is refused


def copy_model(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_index(folder: Path, change: Callable[[dict], object]) -> None:
    edit_json(folder / "model_index.json", change)


def set_key(key: str, value: object) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


REFUSED = {  # name: (two experts?, change to model_index.json, change to transformer_2/config.json, needles)
    "expand-not-bool": (False, set_key("expand_timesteps", "yes"), None, ("expand_timesteps must be true or false",)),
    "image-encoder": (False, set_key("image_encoder", ["transformers", "CLIPVisionModelWithProjection"]), None,
                      ("image encoder without its image processor",)),
    "image-processor": (False, set_key("image_processor", ["transformers", "CLIPImageProcessor"]), None,
                        ("image encoder without its image processor",)),
    "i2v-pipeline": (True, set_key("_class_name", "WanImageToVideoPipeline"), None,
                     ("WanImageToVideoPipeline", "16 input channels")),
    "other-pipeline": (False, set_key("_class_name", "WanVACEPipeline"), None, ("WanVACEPipeline",)),
    "other-family": (False, set_key("transformer", ["diffusers", "LTXVideoTransformer3DModel"]), None,
                     ("LTXVideoTransformer3DModel, which sora does not run",)),
    "ratio-without-second": (False, set_key("boundary_ratio", 0.875), None, ("boundary_ratio", "no transformer_2")),
    "second-without-ratio": (True, set_key("boundary_ratio", None), None, ("transformer_2", "no boundary_ratio")),
    "second-without-ratio-key": (True, lambda d: d.pop("boundary_ratio"), None, ("no boundary_ratio",)),
    **{f"ratio-{v}": (True, set_key("boundary_ratio", v), None, ("boundary_ratio must be a number above 0",))
       for v in (0, 1, 1.5, -0.2, "0.875", True)},
    **{f"shape-{key}": (True, None, set_key(key, value), (f"transformer_2 has {key}", "must match"))
       for key, value in (("in_channels", 8), ("out_channels", 8), ("patch_size", [1, 4, 4]), ("text_dim", 64))},
    "second-unbuildable": (True, None, set_key("qk_norm", "layer_norm"), ("transformer_2: qk_norm",)),
    "unknown-component": (False, set_key("safety_checker", ["diffusers", "SafetyChecker"]), None, ("safety_checker",)),
    "unknown-setting": (False, set_key("upscale", 2), None, ("upscale",)),
    "third-expert": (True, set_key("transformer_3", ["diffusers", "WanTransformer3DModel"]), None, ("transformer_3",)),
    "guidance-2-one-expert": (False, lambda d: d["_sora"].update(guidance_scale_2=3.0), None,
                              ("guidance_scale_2", "one transformer")),
    "guidance-2-text": (True, lambda d: d["_sora"].update(guidance_scale_2="high"), None,
                        ("guidance_scale_2 must be a number",)),
}


@pytest.mark.parametrize("name", REFUSED)
def test_what_sora_does_not_understand_is_refused(name, tiny_wan_dir, tiny_experts_dir, tmp_path, capsys,
                                                  monkeypatch):
    two, index_change, config_change, needles = REFUSED[name]
    folder = copy_model(tiny_experts_dir if two else tiny_wan_dir, tmp_path / "model")
    if index_change:
        edit_index(folder, index_change)
    if config_change:
        edit_json(folder / "transformer_2" / "config.json", config_change)

    with pytest.raises(ModelError) as refused:
        ModelSpec.read(folder)
    message = str(refused.value)
    assert message.startswith(f"model at {folder} is not supported: ") and "\n" not in message
    assert all(needle in message for needle in needles), message

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = call_sora(capsys, "generate", "fox", "--model", str(folder), "--quiet")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and needles[0] in err, err
    assert list(work.iterdir()) == []


def test_what_names_nothing_is_fine(tiny_wan_dir, tmp_path):
    """diffusers writes [null, null] for an optional component it was not given (transformer_2 of a Wan 2.1
    folder), and null for settings left unset: those name nothing to load."""
    index = json.loads((tiny_wan_dir / "model_index.json").read_text())
    assert index["transformer_2"] == [None, None] and index["boundary_ratio"] is None
    assert index["expand_timesteps"] is False
    folder = copy_model(tiny_wan_dir, tmp_path / "model")
    edit_index(folder, lambda d: d.update(image_encoder=[None, None], feature_extractor=None, _name_or_path="x"))
    spec = ModelSpec.read(folder)
    assert spec.transformer_2 is None and spec.boundary_ratio is None and spec.boundary_timestep is None


def test_a_two_expert_folder_is_read_whole(tiny_experts_dir, tmp_path):
    spec = ModelSpec.read(tiny_experts_dir)
    assert spec.boundary_ratio == 0.875 and spec.boundary_timestep == BOUNDARY
    assert spec.transformer_2 == spec.transformer  # the tiny experts differ in weights only
    missing = copy_model(tiny_experts_dir, tmp_path / "missing")
    shutil.rmtree(missing / "transformer_2")
    with pytest.raises(ModelError, match="incomplete: transformer_2/ is missing"):
        ModelSpec.read(missing)
    unweighted = copy_model(tiny_experts_dir, tmp_path / "unweighted")
    for path in (unweighted / "transformer_2").glob("*.safetensors"):
        path.unlink()
    with pytest.raises(ModelError, match="transformer_2 has no .safetensors weights"):
        ModelSpec.read(unweighted)


def test_the_hub_download_fetches_the_second_expert():
    from huggingface_hub.utils import filter_repo_objects

    files = ["transformer_2/config.json", "transformer_2/diffusion_pytorch_model.safetensors.index.json",
             "transformer_2/diffusion_pytorch_model-00001-of-00012.safetensors"]
    assert list(filter_repo_objects(files, allow_patterns=HUB_PATTERNS)) == files
    assert KNOWN_MODELS["wan2.2-t2v-a14b"] == "Wan-AI/Wan2.2-T2V-A14B-Diffusers"

