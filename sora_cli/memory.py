"""Where the networks live while a video is made, so that a model larger than the accelerator still runs.

- none: everything stays on the accelerator (the text and image encoders visit it only to encode).
- model: each network waits in CPU memory and visits the accelerator while it runs; of two experts, only the one
  in use is there.
- block: the transformer's small parts stay on the accelerator, and its blocks wait in pinned CPU memory and are
  copied over `ahead` blocks before they run, on a side CUDA stream, so compute waits on the copy only when the
  bus is slower than the blocks; each block's copy is dropped once it has run. The VAE and encoders visit as with
  model offload. On a CPU the same copies are made (the mechanism runs, to no gain).

`plan` picks one, and whether the VAE decodes in spatial tiles, from the free accelerator memory and estimates of
what the weights and the activations need.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from .settings import OFFLOADS

GIB = 1024 ** 3
# Estimates behind the automatic plan. The VAE's streamed decode peaked at 10.1 GiB for 832x480 in float32 on an
# H200 (Wan 2.1's VAE), about 25 kB a pixel of frame area; tiles bound that area.
VAE_BYTES_PER_PIXEL = 25_000
log = logging.getLogger("sora")


@dataclass(frozen=True)
class Plan:
    offload: str  # one of OFFLOADS
    vae_tiling: bool
    text_on_cpu: bool = False  # the text encoder runs on the CPU: alone it would not fit the GPU
    need: float = 0.0  # the estimated peak bytes of the offload mode, where a plan was made


def home(offload: str, device: torch.device) -> torch.device:
    """Where a network waits between its runs."""
    return device if offload == "none" else torch.device("cpu")


class Placement:
    """Moves networks to where the offload mode wants them, and back."""

    def __init__(self, offload: str, device: torch.device, text_on_cpu: bool = False, ahead: int = 2):
        if offload not in OFFLOADS:
            raise ValueError(f"offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")
        self.offload, self.device, self.ahead = offload, device, ahead
        self.text_device = torch.device("cpu") if text_on_cpu else device  # where the text encoder runs
        self.streams: dict[int, BlockStream] = {}

    @property
    def home(self) -> torch.device:
        return home(self.offload, self.device)

    @property
    def moves_experts(self) -> bool:
        """Whether a whole transformer visits the accelerator while it runs (model offload)."""
        return self.offload == "model"

    def place_transformers(self, models: list[nn.Module]) -> None:
        """With block offload: all but the blocks on the accelerator, the blocks streamed through it. Called again
        when the transformers are read again (a LoRA change): the old streams are let go."""
        for stream in self.streams.values():
            stream.detach()
        self.streams = {}
        if self.offload != "block":
            return
        for model in models:
            for name, child in model.named_children():
                if name != "blocks":
                    child.to(self.device)
            for param in model.parameters(recurse=False):
                param.data = param.data.to(self.device)
            self.streams[id(model)] = BlockStream(model.blocks, self.device, self.ahead)

    def release(self) -> None:
        """Drop the blocks copied ahead for a next step that is not coming: the decode wants the room."""
        for stream in self.streams.values():
            stream.release()

    @contextlib.contextmanager
    def visiting(self, module: nn.Module) -> Iterator[None]:
        """With offload, a network (the VAE) visits the accelerator only while it runs."""
        if self.offload != "none":
            module.to(self.device)
        try:
            with torch.inference_mode():
                yield
        finally:
            if self.offload != "none":
                module.to("cpu")


class BlockStream:
    """A transformer's blocks held in CPU memory and copied to `device` just ahead of their turn.

    Blocks run in order, and the order wraps round (the last block of a step is followed by the first of the next),
    so when block i starts, blocks i+1 .. i+ahead are being copied; a block a step cache skipped is simply still
    there when its turn comes. Each block's parameters are swapped between their CPU tensors and their device
    copies (and buffers: quantised weights); the CPU tensors are never changed, so dropping a copy costs nothing.
    """

    def __init__(self, blocks: nn.ModuleList, device: torch.device, ahead: int = 2):
        self.blocks, self.device, self.ahead = blocks, device, max(1, ahead)
        self.cuda = device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.cuda else None
        self.ready: dict[int, object] = {}  # block index -> the event its copy records (None off CUDA)
        # Each resident block's CPU tensors, to put back when it has run. Taken when the copy starts, so that a
        # LoRA merged into the CPU weights in between is what the next copy carries.
        self.host: dict[int, list[Tensor]] = {}
        self.tensors = [block_weights(block) for block in blocks]  # swapped in place by `.data`
        for block, tensors in zip(blocks, self.tensors):
            block.to("cpu")
            for tensor in tensors:
                tensor.data = tensor.data.pin_memory() if self.cuda else tensor.data
        self.hooks = [h for i, block in enumerate(blocks) for h in (
            block.register_forward_pre_hook(lambda module, args, i=i: self._before(i)),
            block.register_forward_hook(lambda module, args, out, i=i: self._after(i)))]
        self.peak_resident = 0  # the most blocks on the device at once, for tests and benchmarks

    def _copy(self, i: int) -> None:
        """Start copying block i to the device (on the side stream on CUDA)."""
        if i in self.ready:
            return
        context = torch.cuda.stream(self.side) if self.cuda else contextlib.nullcontext()
        params = self.tensors[i]
        self.host[i] = [param.data for param in params]
        with context:
            for param, host in zip(params, self.host[i]):
                param.data = host.to(self.device, non_blocking=True) if self.cuda else host.clone()
            self.ready[i] = torch.cuda.Event().record(self.side) if self.cuda else None
        self.peak_resident = max(self.peak_resident, len(self.ready))

    def _before(self, i: int) -> None:
        self._copy(i)  # at once, if the copy ahead was not started (the first block, or after a skip)
        if self.cuda:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(self.ready[i])
            for param in self.tensors[i]:
                param.data.record_stream(compute)  # freed only after the compute that reads it
        for k in range(1, self.ahead + 1):
            self._copy((i + k) % len(self.blocks))

    def _after(self, i: int) -> None:
        for param, host in zip(self.tensors[i], self.host.pop(i)):
            param.data = host
        self.ready.pop(i, None)

    def release(self) -> None:
        for i in list(self.ready):
            self._after(i)

    def detach(self) -> None:
        """Back to plain CPU blocks, hooks removed."""
        for hook in self.hooks:
            hook.remove()
        self.release()


def plan(free: float, transformers: list[float], text_encoder: float, vae: float, step_activations: float,
         vae_peak: float, block_share: float, margin: float = 1.5 * GIB) -> Plan:
    """The lightest plan that fits `free` bytes: no offload, model offload, or block offload; the text encoder on
    the CPU when alone it would not fit; and VAE tiling when the decode would not fit beside what stays resident.
    `transformers`: each expert's weight bytes; `text_encoder`, `vae`: theirs; `step_activations`: one guided
    step's peak; `vae_peak`: an untiled decode's; `block_share`: the share of a transformer's weights on the
    device at once under block offload."""
    budget = free - margin
    text_on_cpu = text_encoder > budget
    visiting = 0 if text_on_cpu else text_encoder  # the encoders visit alone, between the other networks' runs
    needs = {
        "none": sum(transformers) + vae + max(step_activations, visiting),
        "model": max(max(transformers) + step_activations, visiting, vae),
        "block": max(max(transformers) * block_share + step_activations, visiting, vae),
    }
    offload = next((mode for mode in OFFLOADS if needs[mode] <= budget), "block")
    resident = sum(transformers) + vae if offload == "none" else vae
    return Plan(offload, resident + vae_peak > budget, text_on_cpu, needs[offload])


def block_weights(block: nn.Module) -> list[Tensor]:
    """A block's weights: its parameters, and its buffers (quantised weights are buffers, quantize.py)."""
    return [*block.parameters(), *block.buffers()]


def parameters_in(folder: Path) -> int:
    """Parameters a component folder's safetensors hold, from their headers alone."""
    from safetensors import safe_open

    from .loading import weight_files

    count = 0
    for path in weight_files(folder):
        with safe_open(path, framework="pt") as f:
            count += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return count


def step_activations(spec, tokens: int, dtype: torch.dtype) -> float:
    """A guided step's peak activations in one block (both branches): attention's q, k, v and output, the feed
    forward's hidden layer in and out, and the float32 residual stream."""
    c = spec.transformer
    dim, ffn = c.num_attention_heads * c.attention_head_dim, c.ffn_dim
    return 2 * tokens * ((6 * dim + 2 * ffn) * dtype.itemsize + 3 * 4 * dim)


def choose(spec, device: torch.device, dtype: torch.dtype, offload: str = "auto", vae_tiling: str = "auto",
           size: tuple[int, int, int] | None = None) -> Plan:
    """The offload mode and VAE tiling for renders up to `size` (width, height, frames; default the model's):
    what was asked, and for `auto` the lightest that fits the free memory of a CUDA device (none and off
    elsewhere). The choice is said in one info line."""
    tiling = {"on": True, "off": False}.get(vae_tiling)
    if device.type != "cuda" or "auto" not in (offload, vae_tiling):
        return Plan("none" if offload == "auto" else offload, bool(tiling))
    from .loading import text_encoder_dirs

    d = spec.defaults
    width, height, frames = size or (d.width, d.height, d.num_frames)
    folders = [spec.folder / "transformer"] + ([spec.folder / "transformer_2"] if spec.transformer_2 else [])
    transformers = [parameters_in(f) * dtype.itemsize for f in folders]
    text_encoder = parameters_in(text_encoder_dirs(spec.folder, spec.index)[0]) * dtype.itemsize
    free = torch.cuda.mem_get_info(device)[0]
    chosen = plan(free, transformers, text_encoder, parameters_in(spec.folder / "vae") * 4,
                  step_activations(spec, spec.tokens(width, height, frames), dtype),
                  VAE_BYTES_PER_PIXEL * width * height + 12 * frames * width * height,
                  block_share=3 / spec.transformer.num_layers)
    chosen = Plan(chosen.offload if offload == "auto" else offload,
                  chosen.vae_tiling if tiling is None else tiling, chosen.text_on_cpu, chosen.need)
    log.info(f"memory: {free / GIB:.1f} GiB free on the GPU; offload {chosen.offload}, VAE tiling "
             f"{'on' if chosen.vae_tiling else 'off'}{', text encoder on the CPU' if chosen.text_on_cpu else ''} "
             f"(the plan's estimated need {chosen.need / GIB:.1f} GiB)")
    return chosen
