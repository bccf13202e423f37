"""What both recipes share: synthetic clips, deterministic randomness, checkpoints, EMA and the recipe record.

Every step draws its randomness from (seed, step), so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ... import files

stderr = Console(stderr=True)


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, stream])


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(step_rng(seed, step, stream).integers(2**62)))


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on `device`: on a GPU, or on a CPU with AMX or AVX-512 BF16. Other
    CPUs emulate bf16 matrix products, and a step takes some 15 times float32's (an AVX2 EPYC: 5.3 s against
    0.36 s for a proxy step)."""
    if device.type != "cpu":
        return True
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def to_model_range(frames: np.ndarray) -> Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio of two clips in [-1, 1], in dB."""
    mse = ((a - b) / 2).pow(2).mean().item()
    return 10 * np.log10(1.0 / max(mse, 1e-12))


class Ema:
    """Exponential moving average of a model's weights: what gets shipped, since it samples cleaner."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm up: early weights are forgotten quickly
        for k, v in model.state_dict().items():
            self.shadow[k].lerp_(v.float(), 1 - d)


def descend(loss: Tensor, optimizer: torch.optim.Optimizer) -> float:
    """One optimiser step down `loss`, its gradients clipped to norm 1 as in every recipe here; the loss's value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], 1.0)
    optimizer.step()
    return loss.item()


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Ema | None,
                    step: int, extra: dict | None = None) -> None:
    """Model, EMA and Adam moments as safetensors (no pickle), the rest as JSON; written atomically."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.shadow.items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        tensors |= {f"adam.{idx}.{k}": torch.as_tensor(v) for k, v in state.items()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = dict(step=step, param_groups=opt["param_groups"], **(extra or {}))
    files.write_atomically(path, True, lambda tmp: save_file(tensors, str(tmp)))
    files.write_json_atomic(path.with_suffix(".json"), meta, overwrite=True)


def ema_weights(path: Path) -> dict[str, Tensor]:
    """A checkpoint's EMA weights as a state dict: what an evaluation loads mid-run."""
    return {k[4:]: v for k, v in load_file(str(path)).items() if k.startswith("ema.")}


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Ema | None,
                    device: str | torch.device = "cpu") -> dict:
    tensors = load_file(str(path))  # Adam's moments follow their parameters; its step counters stay here
    meta = json.loads(path.with_suffix(".json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    if ema is not None:
        ema.shadow = {k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")}
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("adam."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=stderr)


def show_step(bar: Progress, task, step: int, total: int, status: str) -> None:
    """Advance the bar; when stderr is a log file rather than a terminal, also write a line now and then."""
    bar.update(task, completed=step, status=status)
    if not stderr.is_terminal and (step % 100 == 0 or step == total):
        print(f"step {step}/{total} {status}", file=sys.stderr, flush=True)


def recipe_record(stage: str, command: str, config: dict, started: float, steps: int, results: dict) -> dict:
    return dict(stage=stage, command=command, config=config, steps=steps,
                wall_minutes=round((time.time() - started) / 60, 1),
                machine=dict(system=platform.platform(), processor=platform.processor() or platform.machine(),
                             cpus=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                             device="cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
                results=results)
