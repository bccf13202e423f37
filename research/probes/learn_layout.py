"""Which token layout learns the shape word sooner? A fresh transformer trained on text-to-image alone, then judged.

    python research/probes/learn_layout.py --out DIR [--patch 4] [--heads 4] [--ffn 1024] [--layers 6] [--minutes 18]
                                      [--batch 32] [--device cpu]
    python research/probes/learn_layout.py --judge-only --model PATH     # the same judgement of an existing model

A transformer of the given layout (patch 1 x P x P of the VAE's 16 x 16 latents, heads of 64, so width 64 x
heads) starts from random weights and trains for a fixed wall time on 4096 single 64x64 frames of one still
object of the training split, captioned "a {colour} {shape} on a {background} background": the recipe's
noise levels (shift 3), caption dropout 0.1, x0 prediction with the recipe's loss, AdamW 5e-4 after 200 warm-up
steps, EMA 0.998. Giving each layout the same minutes asks which one a CPU (or a GPU) should spend them on. The
EMA weights are written with sora-tiny's VAE and text encoder as a model folder at --out, and 100 held-out
(colour, shape, background) combinations are drawn with the same template, one 64x64 frame each (20 steps,
guidance 4, one pass), and judged by `sora_cli.tiny.judge`: colour, shape and background, in shares of 100.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sora_cli import Pipeline
from sora_cli.loading import resolve_model
from sora_cli.models.wan.transformer import TransformerConfig, WanTransformer
from sora_cli.tiny import judge, world
from sora_cli.tiny.train.common import Ema, descend, fast_bf16
from sora_cli.tiny.train.dit import TINY_DIT, dit_loss

from probe_word_use import caption
from probing import write_model_folder

IMAGES = 4096


def still_scenes(split: str, count: int, seed: int) -> list[world.Scene]:
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, split, num_objects=1) for _ in range(count)]
    for scene in scenes:
        scene.objects[0].motion = "still"
    return scenes


def train(pipe: Pipeline, args: argparse.Namespace) -> WanTransformer:
    device = torch.device(args.device)
    with torch.no_grad():
        scenes = still_scenes("train", IMAGES, 0)
        latents = torch.cat([pipe.encode(world.draw(s, 1, 64, 64)) for s in scenes]).to(device)
        # in float16, as the recipe caches caption states
        texts = pipe.encode_text([caption(s.objects[0], s.background) for s in scenes]).half().float().to(device)
        empty = pipe.encode_text([""])[0].float().to(device)
    # under bf16 autocast the q/k RMS norms see bf16 activations with their float32 weights, as in the recipe
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    torch.manual_seed(0)
    config = TransformerConfig.from_dict(dict(TINY_DIT, patch_size=(1, args.patch, args.patch),
                                              num_attention_heads=args.heads, ffn_dim=args.ffn, num_layers=args.layers))
    model = WanTransformer(config).to(device).train()
    print(f"{sum(t.numel() for t in model.parameters()) / 1e6:.2f} M parameters, "
          f"{(16 // args.patch) ** 2} tokens a frame", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, betas=(0.9, 0.99))
    ema = Ema(model, 0.998)
    gen = torch.Generator().manual_seed(0)  # every draw on the CPU, as the recipe's
    bf16 = fast_bf16(device)  # float32 where the CPU would emulate bf16
    started, step, smooth = time.time(), 0, None
    while time.time() - started < args.minutes * 60:
        idx = torch.randint(IMAGES, (args.batch,), generator=gen).to(device)
        drop = torch.rand(args.batch, generator=gen) < 0.1
        u = torch.rand(args.batch, generator=gen)
        sigma = 3 * u / (1 + 2 * u)
        noise = torch.randn((args.batch, *latents.shape[1:]), generator=gen)
        context = torch.where(drop.to(device)[:, None, None], empty, texts[idx])
        for group in optimizer.param_groups:
            group["lr"] = 5e-4 * min(1.0, (step + 1) / 200)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = dit_loss(model, latents[idx], context, sigma.to(device),
                            torch.zeros(args.batch, 1, dtype=torch.bool, device=device), noise.to(device))
        value = descend(loss, optimizer)
        ema.update(model, step)
        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
        step += 1
        if step % 500 == 0:
            print(f"step {step}: {(time.time() - started) / step:.3f} s a step, loss {smooth:.4f}", flush=True)
    print(f"{step} steps in {(time.time() - started) / 60:.1f} min", flush=True)
    model.load_state_dict(ema.shadow)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="the model folder to write (train)")
    parser.add_argument("--model", default=None, help="with --judge-only: the model to judge (default sora-tiny)")
    parser.add_argument("--judge-only", action="store_true")
    parser.add_argument("--patch", type=int, choices=(1, 2, 4), default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=18.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not args.judge_only and (not args.out or Path(args.out).exists()):
        parser.error("give --out, a folder that does not exist yet")

    pipe = Pipeline.from_pretrained(args.model if args.judge_only else None, device="cpu")
    if not args.judge_only:
        write_model_folder(train(pipe, args), resolve_model(None), Path(args.out))
        pipe = Pipeline.from_pretrained(args.out, device="cpu")

    hits: dict[str, list[bool]] = {"color": [], "shape": [], "background": []}
    for i, scene in enumerate(still_scenes("heldout", 100, 1)):
        video = pipe(caption(scene.objects[0], scene.background), height=64, width=64, num_frames=1, seed=i, passes=1)
        verdict = judge.agreement(judge.scene_facts(scene), judge.judge_clip(video.frames, video.fps))
        for key in hits:
            hits[key].append(verdict[key])
    print(json.dumps({"model": args.out or args.model or "sora-tiny",
                      **{k: round(float(np.mean(v)), 2) for k, v in hits.items()}}))


if __name__ == "__main__":
    main()
