"""Peak GPU memory and time of sora's memory modes at the real shapes, on random weights built from config dicts.

    OUT=DIR PYTHONPATH=. python benchmarks/bench_memory.py          # the GPU run: about 3 minutes on an H200
    OUT=DIR PYTHONPATH=. python benchmarks/bench_memory.py --tiny   # CPU dry run: same code path, tiny shapes

Transformers, one guided step at 832x480, 81 frames (latents 16x21x60x104, batch 2, 512 text tokens):
  wan21_1.3b  Wan 2.1 1.3B, all 30 blocks.
  14b         the 14B shape (Wan 2.1 14B, each Wan 2.2 A14B expert) cut to --layers blocks; its time and its
              resident weights extrapolated to 40 blocks (block offload holds a few blocks whatever their number).
Modes: none (every weight on the GPU, as model offload also holds them while the transformer runs), block (the
blocks streamed through the GPU, memory.py), fp8 (block weights stored in fp8, quantize.py), block+fp8.
VAE: the Wan 2.1 VAE's streamed decode of those 21 latent frames, whole and in 256-pixel tiles (vae_tiling.py).

A render's peak is the largest of its step's, its decode's and the text encoder's visit (UMT5-XXL: 5.7 B
parameters, 10.6 GiB in bf16; none when the plan runs it on the CPU). Writes $OUT/bench_memory.json and prints a
table with those peaks, each step's time and its ratio to no offload.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import (REAL_SHAPE, TINY, TINY_SHAPE, WAN21_13B, WAN22_A14B, Env, cast_like_from_pretrained,  # noqa: E402
                       free, measure, randomise_vae)

from sora_cli import quantize  # noqa: E402
from sora_cli.memory import GIB, Placement, block_weights  # noqa: E402
from sora_cli.models.wan.transformer import TransformerConfig, WanTransformer  # noqa: E402
from sora_cli.models.wan.vae import VAEConfig, WanVAE  # noqa: E402
from sora_cli.models.wan.vae_tiling import Tiling  # noqa: E402

TEXT_ENCODER_GIB = 5.68e9 * 2 / GIB  # UMT5-XXL's encoder in bf16
MODES = ("none", "block", "fp8", "block+fp8")


def step_inputs(cfg: dict, env: Env) -> tuple:
    c, f, h, w = env.latent
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, c, f, h, w, generator=g).repeat(2, 1, 1, 1, 1).to(env.device, env.dtype)
    context = torch.randn(2, env.text_len, cfg["text_dim"], generator=g).to(env.device, env.dtype)
    return x, torch.full((2,), 757.0, device=env.device), context


def build(cfg: dict, env: Env, mode: str) -> WanTransformer:
    torch.manual_seed(0)
    with torch.device(env.device):
        model = WanTransformer(TransformerConfig.from_dict(cfg))
    cast_like_from_pretrained(model, env.dtype)
    model.eval().requires_grad_(False)
    if "fp8" in mode:
        quantize.to_fp8(model)
    if "block" in mode:
        Placement("block", env.device).place_transformers([model])
    return model


def block_bytes(model: WanTransformer) -> int:
    return sum(t.numel() * t.element_size() for t in block_weights(model.blocks[0]))


def case_transformer(cfg: dict, env: Env, total_layers: int) -> dict:
    x, t, context = step_inputs(cfg, env)
    result = {"layers_built": cfg["num_layers"], "layers": total_layers}
    for mode in MODES:
        model = build(cfg, env, mode)
        weights = block_bytes(model)
        m, _ = measure(lambda: model(x, t, context), env, env.repeats)
        missing = total_layers - cfg["num_layers"]  # blocks not built: their weights would be resident too
        extra = 0 if "block" in mode else missing * weights
        scale = total_layers / cfg["num_layers"]
        result[mode] = {"step_s": m["median_s"] * scale, "peak_gib": None if m["peak_gib"] is None else
                        m["peak_gib"] + extra / GIB, "block_gib": weights / GIB, "measured": m}
        model = None
        free(env)
    base = result["none"]["step_s"]
    for mode in MODES:
        result[mode]["time_vs_none"] = result[mode]["step_s"] / base
    return result


def case_vae(env: Env) -> dict:
    cfg = dict(TINY["vae"]) if env.tiny else {}
    c, f, h, w = env.latent
    z = torch.randn(1, c, f, h, w, generator=torch.Generator().manual_seed(2)).to(env.device)
    with torch.device(env.device):
        vae = WanVAE(VAEConfig.from_dict(cfg))
    randomise_vae(vae)
    vae.eval().requires_grad_(False)
    result = {}
    for name, tiling in (("whole", None), ("tiled", Tiling(64, 48) if env.tiny else Tiling())):
        vae.tiling = tiling
        result[name], _ = measure(lambda: vae.decode(z), env, env.vae_repeats, lambda: vae.decode(z[:, :, :2]))
    return result


def table(results: dict) -> str:
    decode = {k: results["vae"][k]["peak_gib"] or 0.0 for k in ("whole", "tiled")}
    rows = [f"{'model':<11} {'mode':<10} {'step s':>7} {'x none':>7} {'step GiB':>9} {'render GiB, T5 on GPU':>22} "
            f"{'T5 on CPU, tiled VAE':>21}"]
    for name in ("wan21_1.3b", "14b"):
        for mode in MODES:
            r = results[name][mode]
            step = r["peak_gib"] or 0.0
            rows.append(f"{name:<11} {mode:<10} {r['step_s']:>7.3f} {r['time_vs_none']:>7.2f} {step:>9.2f} "
                        f"{max(step, TEXT_ENCODER_GIB, decode['whole']):>22.2f} {max(step, decode['tiled']):>21.2f}")
    rows.append(f"VAE decode peak: whole {decode['whole']:.2f} GiB ({results['vae']['whole']['median_s']:.2f} s), "
                f"tiled {decode['tiled']:.2f} GiB ({results['vae']['tiled']['median_s']:.2f} s)")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: the same code path at tiny shapes")
    parser.add_argument("--layers", type=int, default=None, help="blocks built of the 14B shape (default 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench_out"))
    args = parser.parse_args()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = TINY_SHAPE if args.tiny else REAL_SHAPE
    env = Env(device, dtype, args.repeats, 1, args.layers or (2 if args.tiny else 8), args.tiny, 0.0, None, **shape)
    small = dict(WAN21_13B, **TINY["wan21_1.3b"]) if args.tiny else WAN21_13B
    large = dict(WAN22_A14B, **TINY["wan22_a14b"]) if args.tiny else WAN22_A14B
    started = time.perf_counter()
    results = {}
    with torch.no_grad():
        results["wan21_1.3b"] = case_transformer(small, env, small["num_layers"])
        results["14b"] = case_transformer(dict(large, num_layers=env.layers), env, WAN22_A14B["num_layers"])
        results["vae"] = case_vae(env)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny,
            "latent": list(env.latent), "text_len": env.text_len, "total_s": time.perf_counter() - started}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_memory.json"
    path.write_text(json.dumps({"env": info, "cases": results}, indent=2))
    print(f"{info['device']}, {info['dtype']}{', TINY dry run' if args.tiny else ''}")
    print(table(results))
    print(f"\nwrote {path} ({info['total_s']:.0f} s in all)")


if __name__ == "__main__":
    main()
