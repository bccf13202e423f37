"""The transformers of a pipeline as they run: read from the model folder or from single files, LoRAs merged,
block weights stored in fp8 if asked, the attention kernel chosen, blocks compiled, and placed (memory.py).

The order matters: LoRAs merge into float weights, so they go in before fp8 storage; compiling and placing come
last, on the layers that will run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import quantize
from .errors import OptionError
from .loading import load_module
from .memory import Placement
from .models import attention as attention_kernels
from .models.wan.transformer import FP32_PARAM_PATTERNS
from .spec import ModelSpec



@dataclass(frozen=True)
class Build:
    """How the transformers are made ready: the compute dtype, where they wait (`home`), single files that replace
    the folder's weights (the transformer's, the low-noise expert's), weight storage, kernel and compilation."""

    dtype: torch.dtype
    home: torch.device
    files: tuple[Path | None, Path | None] = (None, None)
    quantize: str = "none"
    kernel: attention_kernels.Kernel = attention_kernels.sdpa
    compile: bool = False


def read_transformers(spec: ModelSpec, build: Build) -> tuple:
    """The transformer (or the two experts; None for a second one it lacks), from the folder or the single files:
    a .gguf (quantised blocks stay quantised) or a .safetensors in Wan's own key names (fp8 stays fp8)."""
    models = []
    for name, config, file in (("transformer", spec.transformer, build.files[0]),
                               ("transformer_2", spec.transformer_2, build.files[1])):
        if config is None:
            models.append(None)
            continue
        make = lambda config=config: spec.networks["transformer"](config)  # noqa: E731
        # Stored in fp8 later, the weights arrive in CPU memory: a 14B model's bf16 weights need not fit the GPU.
        where = torch.device("cpu") if build.quantize == "fp8" else build.home
        if file is None:
            models.append(load_module(make, spec.folder / name, where, build.dtype, keep_fp32=FP32_PARAM_PATTERNS))
            continue
        with torch.device("meta"):
            model = make()
        read = quantize.load_gguf if Path(file).suffix.lower() == ".gguf" else quantize.load_single_file
        read(model, file, build.dtype)
        models.append(model.to(where).eval().requires_grad_(False))
    return tuple(models)


def replaced(files: tuple) -> tuple[str, ...]:
    """The components whose weights the single files replace: the model folder need not hold theirs."""
    return tuple(name for name, file in zip(("transformer", "transformer_2"), files) if file is not None)


def stored_small(model: nn.Module) -> bool:
    """Whether any of the model's layers holds quantised weights (which a LoRA cannot merge into)."""
    return any(isinstance(m, (quantize.Fp8Linear, quantize.GGUFLinear)) for m in model.modules())


def check_mergeable(model: nn.Module | None, loras: tuple, option: str) -> None:
    if loras and model is not None and stored_small(model):
        raise OptionError(f"{option} merges into float weights, and this transformer file stores them quantised "
                          "(GGUF or fp8): use a bf16 or fp16 file, or the model folder's own weights with "
                          "--quantize fp8")


def prepare(models: list[nn.Module], build: Build, placement: Placement) -> None:
    """fp8 storage if asked (after any LoRA merge), the attention kernel, each block compiled if asked
    (regionally: one block's graph serves them all), and the blocks placed."""
    for model in models:
        if build.quantize == "fp8" and not stored_small(model):
            quantize.to_fp8(model)
        model.to(build.home)  # a move only: fp8 weights stay fp8
        attention_kernels.use(model, build.kernel)
        for block in model.blocks if build.compile else ():
            block.compile()
    placement.place_transformers(models)
