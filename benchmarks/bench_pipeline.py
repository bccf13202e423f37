"""Time our pipeline against the reference (diffusers' WanPipeline) on the same folder and settings.

    python benchmarks/bench_pipeline.py                      # a random Wan-layout model, bigger than the tests'
    python benchmarks/bench_pipeline.py --model PATH --device cuda --size 832x480 --frames 81 --steps 50

Both load the same folder; runs alternate (ours, reference, ours, ...) so drift in machine load hits both.
Prints the median wall time of each, the ratio, and how far apart their frames are.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def bench_folder(folder: Path) -> Path:
    """A random model with the Wan architecture at a size where the transformer, not overhead, dominates."""
    from conftest import save_tiny_wan

    return save_tiny_wan(folder, seed=0, transformer=dict(num_attention_heads=4, attention_head_dim=64,
                                                          ffn_dim=1024, num_layers=6, text_dim=32),
                         vae=dict(base_dim=16, dim_mult=[1, 2, 2, 2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: build a random one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--size", default="96x64")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from diffusers import WanPipeline

    from sora_cli import Pipeline

    tmp = tempfile.TemporaryDirectory()
    folder = args.model or bench_folder(Path(tmp.name) / "bench-wan")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    width, height = map(int, args.size.split("x"))
    prompt, negative, seed = "a red fox running through snow", "blurry, static", 0

    ours = Pipeline.from_pretrained(folder, device=device, dtype=dtype)
    reference = WanPipeline.from_pretrained(folder, torch_dtype=dtype)
    reference.vae.to(torch.float32)
    reference.to(device)
    reference.set_progress_bar_config(disable=True)
    text_length = ours.text_encoder.max_length

    def run_ours() -> np.ndarray:
        return ours(prompt, negative_prompt=negative, height=height, width=width, num_frames=args.frames,
                    num_steps=args.steps, guidance_scale=args.guidance, seed=seed).frames

    def run_reference() -> np.ndarray:
        out = reference(prompt=prompt, negative_prompt=negative, height=height, width=width,
                        num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=args.guidance,
                        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                        max_sequence_length=text_length).frames[0]
        return (out * 255).round().astype(np.uint8)

    def timed(fn) -> tuple[float, np.ndarray]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        frames = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, frames

    timed(run_ours), timed(run_reference)  # warm-up: kernels, allocator, lazy caches
    times: dict[str, list[float]] = {"sora": [], "diffusers": []}
    for _ in range(args.runs):
        t, a = timed(run_ours)
        times["sora"].append(t)
        t, b = timed(run_reference)
        times["diffusers"].append(t)

    ours_s, ref_s = statistics.median(times["sora"]), statistics.median(times["diffusers"])
    off = np.abs(a.astype(int) - b.astype(int))
    print(f"model      {folder}")
    print(f"settings   {width}x{height}, {args.frames} frames, {args.steps} steps, guidance {args.guidance}, "
          f"{device.type} {str(dtype).removeprefix('torch.')}, median of {args.runs}")
    print(f"sora       {ours_s:8.3f} s")
    print(f"diffusers  {ref_s:8.3f} s")
    print(f"ratio      {ours_s / ref_s:8.3f}  (sora / diffusers; below 1 means sora is faster)")
    print(f"frames     {(off > 2).mean():.4%} of pixels more than 2 levels apart (max {off.max()})")


if __name__ == "__main__":
    main()
