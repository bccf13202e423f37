"""Attention kernels and compiling: the kernel a transformer uses is the one chosen, GPU kernels are wrapped to the
same layout as PyTorch's, what cannot run here is one error line before anything loads, and a compiled
transformer makes the same video."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sora_cli import Pipeline
from sora_cli.errors import OptionError
from sora_cli.models import attention
from test_cli import call_sora
from test_pipeline import PROMPT

SETTINGS = dict(height=32, width=48, num_frames=9, num_steps=2, seed=3)


def qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 10, 8, generator=g) for _ in range(3)]  # (B, H, L, Dh)


def test_on_a_cpu_auto_is_pytorchs_and_the_gpu_kernels_are_refused():
    assert attention.choose("auto", torch.device("cpu"), torch.float32) == ("sdpa", attention.sdpa)
    for name in ("flash", "sage"):
        with pytest.raises(OptionError, match=f"--attention {name} runs on a CUDA GPU"):
            attention.choose(name, torch.device("cpu"), torch.float32)


def test_gpu_kernels_are_called_in_their_own_layout():
    q, k, v = qkv()
    expected = F.scaled_dot_product_attention(q, k, v)
    seen = []

    def flash3(q, k, v):  # FlashAttention's layout is (B, L, H, Dh); version 3 returns (out, lse)
        seen.append(q.shape)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2), None

    def sageattn(q, k, v, tensor_layout, is_causal):
        assert (tensor_layout, is_causal) == ("HND", False)
        return F.scaled_dot_product_attention(q, k, v)

    torch.testing.assert_close(attention.flash(flash3)(q, k, v), expected)
    assert seen == [(2, 10, 3, 8)]
    torch.testing.assert_close(attention.sage(sageattn)(q, k, v), expected)


def test_the_transformer_uses_the_chosen_kernel(tiny_wan_dir):
    pipe = Pipeline.from_pretrained(tiny_wan_dir, device="cpu", attention="sdpa")
    plain = pipe(PROMPT, **SETTINGS).frames
    calls = []
    attention.use(pipe.transformer, lambda q, k, v: calls.append(1) or attention.sdpa(q, k, v))
    assert np.array_equal(pipe(PROMPT, **SETTINGS).frames, plain)
    blocks, steps, attentions = len(pipe.transformer.blocks), SETTINGS["num_steps"], 2  # self and cross
    assert len(calls) == blocks * steps * attentions


def test_a_kernel_that_cannot_run_is_one_line_before_loading(tiny_wan_dir, tmp_path, capsys):
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(tiny_wan_dir), "--attention", "flash",
                             "--out", str(tmp_path / "x.mp4"))
    assert code == 2 and "error: --attention flash runs on a CUDA GPU" in err and "load model" not in err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own
def test_a_compiled_transformer_makes_the_same_video(tiny_wan_dir):
    plain = Pipeline.from_pretrained(tiny_wan_dir, device="cpu")(PROMPT, **SETTINGS).frames
    compiled = Pipeline.from_pretrained(tiny_wan_dir, device="cpu", compile=True)
    assert all(hasattr(block, "_compiled_call_impl") and block._compiled_call_impl is not None
               for block in compiled.transformer.blocks)
    frames = compiled(PROMPT, **SETTINGS).frames
    assert np.abs(frames.astype(int) - plain.astype(int)).max() <= 2
