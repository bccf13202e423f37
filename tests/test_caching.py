"""The step caches on a tiny random Wan: threshold 0 changes nothing; first-block and MagCache skip the same steps as
diffusers' hooks of the same methods and give the same frames; TeaCache's and MagCache's decisions step by step;
calibrations found by hub id, a folder's own checked, a missing one refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sora_cli import Pipeline, caching
from test_cli import call_sora
from test_pipeline import NEGATIVE, PROMPT, reference_frames

SETTINGS = dict(negative_prompt=NEGATIVE, height=32, width=48, num_frames=9, guidance_scale=5.0, shift=3.0, seed=7)
STEPS = 8


def test_threshold_zero_changes_nothing(tiny_wan_dir):
    plain = Pipeline.from_pretrained(tiny_wan_dir, device="cpu")(PROMPT, num_steps=STEPS, **SETTINGS).frames
    pipe = Pipeline.from_pretrained(tiny_wan_dir, device="cpu")
    cached = pipe(PROMPT, num_steps=STEPS, cache="first-block", cache_threshold=0.0, **SETTINGS)
    assert pipe.skipped_steps == 0 and np.array_equal(cached.frames, plain)
    assert (cached.metadata["cache"], cached.metadata["cache_threshold"]) == ("first-block", 0.0)


@pytest.mark.parametrize("threshold", [0.2, 1.0])
def test_the_same_steps_are_skipped_as_by_diffusers(tiny_wan_dir, threshold):
    from diffusers import WanPipeline
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    pipe = Pipeline.from_pretrained(tiny_wan_dir, device="cpu")
    frames = pipe(PROMPT, num_steps=STEPS, cache="first-block", cache_threshold=threshold, **SETTINGS).frames
    reference = WanPipeline.from_pretrained(tiny_wan_dir)
    apply_first_block_cache(reference.transformer, FirstBlockCacheConfig(threshold=threshold))
    ran = []  # the reference's second block, where it runs: once a step and guidance branch that computes
    reference.transformer.blocks[1].attn1.register_forward_hook(lambda *_: ran.append(1))
    expected = reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=STEPS, **SETTINGS)

    assert 0 < pipe.skipped_steps < STEPS
    assert len(ran) == 2 * (STEPS - pipe.skipped_steps)  # the same steps computed, in both branches
    off = float((np.abs(frames.astype(int) - expected.astype(int)) > 2).mean())
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"


def test_the_cli_reports_the_skipped_steps(tiny_wan_dir, tmp_path, capsys):
    code, out, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), "--steps", str(STEPS),
                               "--cache", "first-block", "--cache-threshold", "0.5", "--json",
                               "--out", str(tmp_path / "x.mp4"))
    assert code == 0, err
    record = json.loads(out)
    assert record["cache"] == "first-block" and 0 < record["cache_skipped"] < STEPS
    assert f"cache: {record['cache_skipped']} transformer calls skipped" in err


# MagCache and TeaCache: a calibration in the folder (_sora.caches), as a user adds one for a model of their own.
RATIOS = [1.0, 1.0, 0.98, 0.97, 0.99, 0.95, 0.9, 0.8]  # one a step; skips steps 2, 3 and 5 at threshold 0.1
CALIBRATED = {"magcache": {"ratios": RATIOS, "threshold": 0.1, "max_skips": 2, "retention": 0.2},
              "teacache": {"coefficients": [0.3], "threshold": 1.0}}


@pytest.fixture(scope="module")
def calibrated_dir(tmp_path_factory):
    from conftest import save_tiny_wan

    return save_tiny_wan(tmp_path_factory.mktemp("calibrated"), caches=CALIBRATED)


@pytest.mark.parametrize("method", ["magcache", "teacache"])
def test_calibrated_caches_at_threshold_zero_change_nothing(calibrated_dir, method):
    plain = Pipeline.from_pretrained(calibrated_dir, device="cpu")(PROMPT, num_steps=STEPS, **SETTINGS).frames
    pipe = Pipeline.from_pretrained(calibrated_dir, device="cpu")
    cached = pipe(PROMPT, num_steps=STEPS, cache=method, cache_threshold=0.0, **SETTINGS)
    assert pipe.skipped_steps == 0 and np.array_equal(cached.frames, plain)
    assert (cached.metadata["cache"], cached.metadata["cache_threshold"]) == (method, 0.0)


def test_magcache_skips_the_steps_diffusers_skips(calibrated_dir):
    from diffusers import WanPipeline
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    pipe = Pipeline.from_pretrained(calibrated_dir, device="cpu")
    video = pipe(PROMPT, num_steps=STEPS, cache="magcache", **SETTINGS)
    assert video.metadata["cache_threshold"] == 0.1  # the calibration's
    reference = WanPipeline.from_pretrained(calibrated_dir)
    apply_mag_cache(reference.transformer, MagCacheConfig(threshold=0.1, max_skip_steps=2, retention_ratio=0.2,
                                                          num_inference_steps=STEPS, mag_ratios=RATIOS))
    ran = []  # the reference's second block, where it runs: once a step and guidance branch that computes
    reference.transformer.blocks[1].attn1.register_forward_hook(lambda *_: ran.append(1))
    expected = reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=STEPS, **SETTINGS)

    assert pipe.skipped_steps == 3  # steps 2, 3 and 5
    assert len(ran) == 2 * (STEPS - pipe.skipped_steps)
    off = float((np.abs(video.frames.astype(int) - expected.astype(int)) > 2).mean())
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"


def run_cache(cache, steps: int, branches: int = 1, modulation=lambda step: torch.ones(1, 6, 4)) -> list[int]:
    """Drive a cache with blocks that add 1: the steps where they ran; every output must be input + 1."""
    ran = []
    for step in range(steps):
        h = torch.full((branches, 3, 4), float(step))
        out = cache.at(step, branches)(h, lambda h, *_: (ran.append(step), h + 1)[1], modulation(step))
        assert torch.equal(out, h + 1)  # a skipped step adds what the blocks added last time
    return ran


def test_teacache_accumulates_the_rescaled_change_after_five_steps():
    # A constant polynomial adds 0.3 a step: skip, skip, skip, then 1.2 is over 1.0 and the blocks run again.
    cache = caching.make("teacache", 1.0, 12, {"teacache": {"coefficients": [0.3], "threshold": 1.0}})
    assert run_cache(cache, 12, branches=2, modulation=lambda step: torch.full((2, 6, 4), 1.0 + step)) == \
        [0, 1, 2, 3, 4, 8]
    assert cache.skipped == 6


def test_magcache_runs_the_blocks_when_any_branch_asks():
    cond = [1.0] * 10
    uncond = [1.0, 1.0, 1.0, 0.5] + [1.0] * 6  # the negative prompt's residual halves at step 3
    cache = caching.make("magcache", 0.1, 10, {"magcache": {"ratios": [cond, uncond], "threshold": 0.1,
                                                            "max_skips": 3}})
    # kept: steps 0 and 1 (20%); then at most 3 skips in a row, except where the second branch's error jumps
    assert run_cache(cache, 10, branches=2) == [0, 1, 3, 7]
    # ratios for another step count: the nearest steps' values (halves to even, as numpy rounds them)
    assert caching.nearest(list(range(10)), 5) == [0, 2, 4, 7, 9]


def test_calibrations_follow_the_hub_id(tmp_path):
    from sora_cli.catalog import hub_id
    from sora_cli.spec import Defaults

    published = Defaults.from_model_index({}, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers").caches
    assert [len(r) for r in published["magcache"]["ratios"]] == [50, 50] and len(published["teacache"]["coefficients"]) == 5
    assert Defaults.from_model_index({}, None).caches == {}
    snapshot = tmp_path / "hub" / "models--Wan-AI--Wan2.1-T2V-14B-Diffusers" / "snapshots" / "abc"
    assert hub_id(str(snapshot), snapshot) == "Wan-AI/Wan2.1-T2V-14B-Diffusers"
    assert hub_id("wan2.1-t2v-1.3b", tmp_path) == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    named = tmp_path / "Wan2.1-I2V-14B-720P-Diffusers"
    assert hub_id(str(named), named) == "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
    assert hub_id(str(tmp_path), tmp_path) == str(tmp_path)


@pytest.mark.parametrize("bad", [{"magcache": {"ratios": [], "threshold": 0.1}}, {"teacache": {"coefficients": [1]}},
                                 {"fastcache": {}}, ["magcache"]])
def test_a_bad_folder_calibration_is_refused(bad):
    from sora_cli.spec import Defaults

    with pytest.raises(ValueError, match="_sora.caches"):
        Defaults.from_model_index({"_sora": {"caches": bad}})


def test_an_uncalibrated_model_refuses_magcache_in_one_line(tiny_wan_dir, tmp_path, capsys):
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), "--cache", "magcache",
                             "--out", str(tmp_path / "x.mp4"))
    assert code == 2 and err.count("\n") == 1 and "needs the model's calibration" in err and "first-block" in err
    assert not (tmp_path / "x.mp4").exists()


def test_the_cli_reports_teacache_skips(calibrated_dir, tmp_path, capsys):
    code, out, err = call_sora(capsys, "generate", PROMPT, "--model", str(calibrated_dir), "--steps", "12",
                               "--cache", "teacache", "--json", "--out", str(tmp_path / "x.mp4"))
    assert code == 0, err
    record = json.loads(out)
    assert (record["cache"], record["cache_threshold"], record["cache_skipped"]) == ("teacache", 1.0, 6)


def test_calibrate_measures_the_ratios_diffusers_measures(tiny_wan_dir, capsys):
    import ast

    from diffusers import WanPipeline
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    pipe = Pipeline.from_pretrained(tiny_wan_dir, device="cpu")
    video = pipe(PROMPT, num_steps=STEPS, cache="calibrate", **SETTINGS)
    ratios = pipe.calibration["magcache"]["ratios"]
    assert pipe.skipped_steps == 0 and [len(r) for r in ratios] == [STEPS, STEPS]
    plain = Pipeline.from_pretrained(tiny_wan_dir, device="cpu")(PROMPT, num_steps=STEPS, **SETTINGS)
    assert np.array_equal(video.frames, plain.frames)  # calibrating changes nothing
    reference = WanPipeline.from_pretrained(tiny_wan_dir)
    apply_mag_cache(reference.transformer, MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    capsys.readouterr()
    reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=STEPS, **SETTINGS)
    printed = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[1")]
    assert len(printed) == 2  # diffusers prints each guidance branch's: the prompt's, then the negative prompt's
    assert np.allclose(ratios, printed, rtol=1e-3, atol=1e-4), (ratios, printed)


def test_a_calibration_goes_into_the_folder_and_is_used(tiny_wan_dir, tmp_path, capsys):
    import shutil

    code, out, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), "--steps", str(STEPS),
                               "--cache", "calibrate", "--json", "--out", str(tmp_path / "c.mp4"))
    assert code == 0 and "_sora" in err, err
    calibration = json.loads(out)["calibration"]
    folder = shutil.copytree(tiny_wan_dir, tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    index["_sora"]["caches"] = calibration
    (folder / "model_index.json").write_text(json.dumps(index))
    code, out, err = call_sora(capsys, "generate", PROMPT, "--model", str(folder), "--steps", str(STEPS),
                               "--cache", "magcache", "--json", "--out", str(tmp_path / "m.mp4"))
    assert code == 0, err
    assert json.loads(out)["cache_threshold"] == 0.12 and "cache_skipped" in json.loads(out)
