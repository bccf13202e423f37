"""The first-block step cache against diffusers' FirstBlockCache hook on a tiny random Wan: threshold 0 changes
nothing, and at thresholds that skip most steps both skip the same steps and give the same frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sora_cli import Pipeline
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
