"""Where the networks live (memory.py): block offload streams the transformer's blocks and changes no frame, with
one transformer or two, a step cache or a LoRA; the automatic plan picks the lightest mode that fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_lora
from sora_cli import Pipeline
from sora_cli.memory import GIB, BlockStream, choose, plan
from sora_cli.spec import ModelSpec
from test_cli import call_sora
from test_pipeline import NEGATIVE, PROMPT

SETTINGS = dict(negative_prompt=NEGATIVE, height=32, width=48, num_frames=9, num_steps=4, guidance_scale=5.0,
                seed=3)


@pytest.mark.parametrize("cache", [None, "first-block"])
def test_block_offload_changes_no_frame(tiny_wan_dir, cache):
    kw = dict(SETTINGS, cache=cache, cache_threshold=0.5 if cache else None)
    plain = Pipeline.from_pretrained(tiny_wan_dir, device="cpu", offload="none")(PROMPT, **kw).frames
    pipe = Pipeline.from_pretrained(tiny_wan_dir, device="cpu", offload="block")
    stream = pipe.placement.streams[id(pipe.transformer)]
    assert isinstance(stream, BlockStream) and len(stream.blocks) == len(pipe.transformer.blocks)
    assert np.array_equal(pipe(PROMPT, **kw).frames, plain)
    # the blocks ran from copies, at most the running one and the `ahead` after it at once, and none is left
    assert 0 < stream.peak_resident <= stream.ahead + 1 and not stream.ready
    assert all(p.device.type == "cpu" for p in pipe.transformer.blocks.parameters())


def test_block_offload_with_two_experts_and_a_lora(tiny_experts_dir, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lora.safetensors"
    save_file(random_lora(tiny_experts_dir), str(path))
    kw = dict(SETTINGS, guidance_scale_2=3.0)
    plain = Pipeline.from_pretrained(tiny_experts_dir, device="cpu", offload="none", loras=((path, 0.7),))
    pipe = Pipeline.from_pretrained(tiny_experts_dir, device="cpu", offload="block", loras=((path, 0.7),))
    assert len(pipe.placement.streams) == 2  # each expert's blocks streamed
    assert np.array_equal(pipe(PROMPT, **kw).frames, plain(PROMPT, **kw).frames)
    pipe.use_loras(())  # the transformers read again: streamed anew, the old streams let go
    plain.use_loras(())
    assert set(pipe.placement.streams) == {id(pipe.transformer), id(pipe.transformer_2)}
    assert np.array_equal(pipe(PROMPT, **kw).frames, plain(PROMPT, **kw).frames)


@pytest.mark.parametrize("free_gib,offload,tiling,text_on_cpu", [
    (80, "none", False, False),   # everything fits
    (40, "model", False, False),  # one 14B expert and its step at a time
    (14, "block", False, False),  # a few blocks at a time, the text encoder visiting alone
    (8, "block", True, True),     # the text encoder alone would not fit; nor the untiled decode
])
def test_the_plan_is_the_lightest_that_fits(free_gib, offload, tiling, text_on_cpu):
    chosen = plan(free_gib * GIB, transformers=[28 * GIB], text_encoder=11 * GIB, vae=0.5 * GIB,
                  step_activations=5 * GIB, vae_peak=10 * GIB if free_gib < 80 else 1 * GIB, block_share=3 / 40)
    assert (chosen.offload, chosen.vae_tiling, chosen.text_on_cpu) == (offload, tiling, text_on_cpu)


def test_off_cuda_auto_means_none_and_what_is_asked_is_kept(tiny_wan_dir):
    spec = ModelSpec.read(tiny_wan_dir)
    cpu = torch.device("cpu")
    auto, asked = choose(spec, cpu, torch.float32), choose(spec, cpu, torch.float32, "block", "on")
    assert (auto.offload, auto.vae_tiling, asked.offload, asked.vae_tiling) == ("none", False, "block", True)


def test_the_cli_renders_with_block_offload(tiny_wan_dir, tmp_path, capsys):
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), "--offload", "block",
                             "--out", str(tmp_path / "x.mp4"))
    assert code == 0, err
    assert (tmp_path / "x.mp4").stat().st_size > 0


def test_vae_tiling_from_the_command_line(tiny_wan_dir, tmp_path, capsys):
    # tiles of 256 pixels: a 512x288 clip of the tiny model is decoded in six, a 48x32 one whole
    from sora_cli.video import read_video

    videos = {}
    for tiling in ("off", "on"):
        out = tmp_path / f"{tiling}.mp4"
        code, stdout, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), "--size", "512x288",
                                      "--frames", "5", "--steps", "2", "--vae-tiling", tiling, "--seed", "1",
                                      "--json", "--out", str(out))
        assert code == 0, err
        videos[tiling] = read_video(out)[0].astype(int)
    # the blended seams differ a little from one decode of the whole frame, and nowhere much
    difference = np.abs(videos["on"] - videos["off"])
    assert 0 < difference.mean() < 2, difference.mean()


@pytest.mark.parametrize("free,offload,tiling,text_on_cpu", [(80 * GIB, "none", False, False),
                                                              (1.5 * GIB + 2**20, "block", True, True)])
def test_the_cuda_plan_reads_the_model_and_says_what_it_chose(tiny_wan_dir, monkeypatch, caplog, free, offload,
                                                              tiling, text_on_cpu):
    # the CUDA branch on a machine without CUDA: only the free-memory query is stood in for
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(free), int(80 * GIB)))
    spec = ModelSpec.read(tiny_wan_dir)
    with caplog.at_level("INFO", logger="sora"):
        chosen = choose(spec, torch.device("cuda"), torch.bfloat16, size=(1280, 720, 81))
    assert (chosen.offload, chosen.vae_tiling, chosen.text_on_cpu) == (offload, tiling, text_on_cpu)
    assert f"offload {offload}, VAE tiling {'on' if tiling else 'off'}" in caplog.text
    asked = choose(spec, torch.device("cuda"), torch.bfloat16, offload="model", vae_tiling="off")
    assert (asked.offload, asked.vae_tiling) == ("model", False)  # what is asked is kept; the rest planned
