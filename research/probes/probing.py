"""What the transformer probes share: the model to probe, optionally with a `sora train dit` checkpoint's EMA
weights, so that a run can be looked into while it goes on; and the loop of the scripts that train it on one task
alone (`learn_start_motion.py`, `learn_shape.py`)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from sora_cli import Pipeline
from sora_cli.loading import resolve_model
from sora_cli.models.wan.transformer import WanTransformer
from sora_cli.tiny.train.common import descend, ema_weights, fast_bf16


def probe_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--checkpoint", default=None, help="a DiT training checkpoint to take the EMA weights from")
    return parser


def probed_pipeline(args: argparse.Namespace) -> Pipeline:
    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    if args.checkpoint:
        pipe.transformer.load_state_dict(ema_weights(args.checkpoint), strict=True)
    return pipe


def drill_parser(doc: str | None, every: int, batch: int) -> argparse.ArgumentParser:
    """The options of a script that trains the transformer on one task alone (`drill`)."""
    parser = probe_parser(doc)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=every)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--save", default=None, help="write the trained model as a model folder here")
    return parser


def drill(pipe: Pipeline, args: argparse.Namespace, loss_at: Callable[[torch.Generator], torch.Tensor],
          report: Callable[[int], None]) -> None:
    """Train `pipe.transformer` (a trainable copy by then) on `loss_at(generator)` for args.steps steps (AdamW at a
    constant args.lr, no weight decay, as the recipe's drill stage), reporting every args.every steps; then
    write the model folder to args.save if given."""
    model = pipe.transformer
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    report(0)
    bf16 = fast_bf16(torch.device("cpu"))  # float32 where the CPU would emulate bf16
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_at(torch.Generator().manual_seed(step))
        value = descend(loss, optimizer)
        if step % args.every == 0:
            print(f"  {(time.perf_counter() - started) / step:.2f} s a step, loss {value:.4f}", flush=True)
            report(step)
    if args.save:
        write_model_folder(model, resolve_model(args.model), Path(args.save))


def write_model_folder(model: WanTransformer, source: Path, dest: Path) -> None:
    """`source`'s model folder at `dest` with `model` as its transformer."""
    shutil.copytree(source, dest)
    (dest / "transformer" / "recipe.json").unlink(missing_ok=True)  # it no longer made these weights
    (dest / "transformer" / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(dest / "transformer" / "diffusion_pytorch_model.safetensors"))


def drilled_pipeline(parser: argparse.ArgumentParser) -> tuple[Pipeline, argparse.Namespace]:
    """The parsed options and the pipeline, its transformer a trainable copy (the loader hands out frozen modules,
    in inference mode)."""
    args = parser.parse_args()
    if args.save and Path(args.save).exists():
        parser.error(f"--save {args.save} exists; give a new folder")
    torch.manual_seed(0)
    pipe = probed_pipeline(args)
    model = WanTransformer(pipe.transformer.config)
    model.load_state_dict(pipe.transformer.state_dict())
    pipe.transformer = model.train()
    return pipe, args
