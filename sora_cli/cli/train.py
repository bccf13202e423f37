"""`sora train`: the two steps that rebuild the embedded model sora-tiny."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..catalog import KNOWN_MODELS

train_app = typer.Typer(no_args_is_help=True, help="Rebuild the embedded model sora-tiny from scratch.")
TINY_DIR = Path(KNOWN_MODELS["sora-tiny"])


@train_app.command("vae")
def train_vae(
    out: Path = typer.Option(TINY_DIR, help="Model folder to write vae/ into."),
    work_dir: Path = typer.Option(Path("runs/sora-tiny"), help="Checkpoints and caches."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps. Default: the recipe's."),
    seed: int = typer.Option(0, help="Seed of the whole run."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --work-dir."),
) -> None:
    """Train the video VAE on the synthetic world (step 1 of 2)."""
    from ..tiny.train.vae import VAERecipe, train_vae as run

    recipe = VAERecipe(seed=seed, **({"steps": steps} if steps else {}))
    record = run(out, work_dir, recipe, resume, " ".join(["sora", *sys.argv[1:]]))
    print(json.dumps(record["results"]))


@train_app.command("dit")
def train_dit(
    out: Path = typer.Option(TINY_DIR, help="Model folder holding vae/; transformer/ and the rest are written there."),
    work_dir: Path = typer.Option(Path("runs/sora-tiny"), help="Checkpoints and the latent cache."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps. Default: the recipe's."),
    clips: Optional[int] = typer.Option(None, help="Distinct training clips, encoded once. Default: the recipe's."),
    batch: Optional[int] = typer.Option(None, help="Clips per step. Default: the recipe's."),
    drill_steps: Optional[int] = typer.Option(None, help="Steps of the start-known motion drill after the main "
                                                        "steps (0: none). Default: the recipe's."),
    settle_steps: Optional[int] = typer.Option(None, help="Steps mixing the drill into the recipe's batches after "
                                                         "it (0: none). Default: the recipe's."),
    seed: int = typer.Option(0, help="Seed of the whole run."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --work-dir."),
    device: str = typer.Option("cpu", help="cpu, or cuda to train further on a GPU; the data is the same."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="bf16 autocast or float32. Default: bf16 "
                                        "where it is fast (a GPU, a CPU with AMX or AVX-512 BF16), float32 on "
                                        "other CPUs, which emulate bf16 at some 15x the time."),
) -> None:
    """Train the diffusion transformer on the VAE's latents and assemble the model (step 2 of 2)."""
    from ..parsers import parse_device
    from ..tiny.train.dit import DiTRecipe, train_dit as run

    device = parse_device(device)
    given = {k: v for k, v in dict(steps=steps, clips=clips, batch=batch).items() if v}
    given |= {k: v for k, v in dict(drill_steps=drill_steps, settle_steps=settle_steps).items() if v is not None}
    recipe = DiTRecipe(seed=seed, bf16=bf16, **given)
    record = run(out, work_dir, recipe, resume, " ".join(["sora", *sys.argv[1:]]), device)
    print(json.dumps(record["results"]))
