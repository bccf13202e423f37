"""Our Wan transformer and VAE beside diffusers' at the real shapes, on random weights built from config dicts.

    OUT=DIR PYTHONPATH=. python benchmarks/bench_gpu.py             # the GPU run: under 8 minutes on an H200
    OUT=DIR PYTHONPATH=. python benchmarks/bench_gpu.py --tiny      # CPU dry run: same code path, tiny shapes
    ... --no-reference                                               # ours alone (also when diffusers is missing)
    ... --cases wan21_1.3b,fast,vae     then     ... --cases ti2v_5b,vae22,wan22_a14b
                                        # all six cases take more than one 8-minute run: two runs fit a loan

Cases (--cases, comma-separated):
  wan21_1.3b  Wan 2.1 1.3B transformer, 832x480, 81 frames (latents 16x21x60x104), one guided step (batch 2:
              prompt + negative, 512x4096 text context): median time, peak memory, MFU, output vs diffusers.
  wan22_a14b  one Wan 2.2 A14B expert (14B config) cut to --layers blocks; per-layer time extrapolated to 40.
  vae         Wan 2.1 VAE decode of 21 latent frames at 60x104 (832x480, 81 frames), float32, streamed as
              pipeline.decode does: time, peak memory, output vs diffusers' AutoencoderKLWan.
  ti2v_5b     Wan 2.2 TI2V-5B transformer at 1280x704, 121 frames (latents 48x31x44x80, 27280 tokens), one guided
              step, cut to --layers blocks; per-layer time extrapolated to 30.
  vae22       Wan 2.2 VAE (TI2V-5B's) decode at 1280x704 of 9 latent frames (33 frames), float32, streamed.
  fast        Wan 2.1 1.3B at its shape, sora alone: a guided step with each attention kernel installed (sdpa,
              FlashAttention 3/2, SageAttention), compiled (regional torch.compile), unguided (what a 4-step
              distilled LoRA runs at guidance 1), and a first-block and a MagCache hit; with the 50-step guided
              (plain, compiled, and with MagCache's published 1.3B schedule) and 4-step unguided totals (steps
              only, the VAE decode apart).
Diffusers' model is built from the config with a fixed seed and saved with save_pretrained; ours is loaded from
that folder with sora_cli.loading.load_module, as sora_cli/pipeline.py loads a model. Nothing is downloaded.
Writes $OUT/bench_gpu.json (default ./bench_out; rewritten after each case) and prints a table.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import traceback
from pathlib import Path

import torch
from safetensors.torch import save_file

from sora_cli.loading import load_module
from sora_cli.models.wan.transformer import FP32_PARAM_PATTERNS, TransformerConfig, WanTransformer
from sora_cli.models.wan.vae import VAEConfig, WanVAE

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json (as tests/test_loading.py records it).
WAN21_13B = dict(patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16,
                 out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                 qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN22_A14B = dict(WAN21_13B, num_attention_heads=40, ffn_dim=13824, num_layers=40)  # each expert: the 14B config
# Wan-AI/Wan2.2-TI2V-5B-Diffusers: transformer/config.json, and the vae/config.json of the Wan 2.2 VAE.
WAN22_TI2V_5B = dict(WAN21_13B, num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336)
WAN22_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
                 patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
TINY = {"wan21_1.3b": dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, text_dim=64),
        "wan22_a14b": dict(num_attention_heads=4, attention_head_dim=32, ffn_dim=256, text_dim=64),
        "vae": dict(base_dim=16, num_res_blocks=1),
        "ti2v_5b": dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, text_dim=64),
        "vae22": dict(base_dim=8, decoder_base_dim=16, num_res_blocks=1)}
REAL_SHAPE = dict(latent=(16, 21, 60, 104), text_len=512)  # 832x480, 81 frames
TINY_SHAPE = dict(latent=(16, 3, 8, 8), text_len=16)  # 64x64, 9 frames
TI2V_LATENT = {False: (48, 31, 44, 80), True: (48, 3, 4, 4)}  # 1280x704, 121 frames; tiny: 64x64, 9 frames
VAE22_LATENT = {False: (48, 9, 44, 80), True: (48, 3, 4, 4)}  # 1280x704, 33 frames
PRIOR_S = {"wan21_1.3b": 60.0, "wan22_a14b": 90.0, "vae": 120.0, "ti2v_5b": 90.0, "vae22": 90.0,
           "fast": 120.0}  # H200 guesses
CASES = tuple(PRIOR_S)


@dataclasses.dataclass
class Env:
    device: torch.device
    dtype: torch.dtype
    repeats: int
    vae_repeats: int
    layers: int
    tiny: bool
    peak_flops: float
    reference: object  # the diffusers module, or None
    latent: tuple = REAL_SHAPE["latent"]
    text_len: int = REAL_SHAPE["text_len"]


def sync(env: Env) -> None:
    if env.device.type == "cuda":
        torch.cuda.synchronize()


def free(env: Env) -> None:
    if env.device.type == "cuda":
        torch.cuda.empty_cache()


def measure(fn, env: Env, repeats: int, warmup=None) -> tuple[dict, torch.Tensor]:
    """Warm up once, then the median of `repeats` synchronised runs; peak memory over the timed runs."""
    (warmup or fn)()
    sync(env)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if env.device.type == "cuda" else None
    times, out = [], None
    for _ in range(repeats):
        out = None  # the previous output is not part of this run's peak
        sync(env)
        start = time.perf_counter()
        out = fn()
        sync(env)
        times.append(time.perf_counter() - start)
    gib = lambda b: None if b is None else round(b / 2**30, 3)
    peak = torch.cuda.max_memory_allocated() if env.device.type == "cuda" else None
    return {"median_s": statistics.median(times), "times_s": times, "peak_gib": gib(peak),
            "resident_gib": gib(resident)}, out.float().cpu()


def compare(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (ours - ref).abs()
    return {"max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
            "ref_mean_abs": ref.abs().mean().item(), "ref_max_abs": ref.abs().max().item()}


def dit_flops(cfg: dict, latent: tuple, text_len: int, batch: int = 2) -> float:
    """Matmul FLOPs of one transformer forward (a multiply-add is 2 FLOPs), per sample times `batch`:

    L = tokens (F/pt)(H/ph)(W/pw), S = text tokens, D = heads*head_dim, P = pt*ph*pw, C = in channels
      patch embedding  2·L·C·P·D               text embedding  2·S·(text_dim·D + D²)
      per block  self-attention q,k,v,o 8·L·D² + QKᵀ and AV 2·2·L²·D
                 cross-attention q,o 4·L·D² + k,v 4·S·D² + QKᵀ and AV 2·2·L·S·D
                 FFN 4·L·D·ffn_dim
      head  2·L·D·out·P
    The time embedding (a few D² per sample), norms, RoPE and softmax are left out.
    """
    c, f, h, w = latent
    pt, ph, pw = cfg["patch_size"]
    L, S, P = (f // pt) * (h // ph) * (w // pw), text_len, pt * ph * pw
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    block = 8 * L * D**2 + 4 * L**2 * D + 4 * L * D**2 + 4 * S * D**2 + 4 * L * S * D + 4 * L * D * cfg["ffn_dim"]
    rest = 2 * L * c * P * D + 2 * S * (cfg["text_dim"] * D + D**2) + 2 * L * D * cfg["out_channels"] * P
    return float(batch * (rest + cfg["num_layers"] * block))


def cast_like_from_pretrained(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """diffusers' from_pretrained(torch_dtype=...) keeps the modules its class names in float32 (it needs accelerate
    for that, which the GPU machine may lack): the same cast, on the model in memory. Ours: its own fp32 islands."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or FP32_PARAM_PATTERNS)
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if any(k in name for k in keep) else dtype)


def randomise_vae(model: torch.nn.Module) -> None:
    """Weights at a scale that keeps activations O(1) through the decoder (default init fades to ~0)."""
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        value = noise / p[0].numel() ** 0.5 if p.ndim > 1 else (1 + 0.2 * noise if "gamma" in name else 0.1 * noise)
        p.data.copy_(value)


def saved_weights(folder: Path, env: Env, make_ref, make_ours, prepare):
    """Random weights (seeded) written to `folder`: diffusers' model's through save_pretrained, returned for
    measuring; without diffusers, our own model's (the same state-dict names), returning None."""
    torch.manual_seed(0)
    with torch.device(env.device):
        model = make_ours() if env.reference is None else make_ref()
    prepare(model)
    if env.reference is None:
        save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()},
                  folder / "diffusion_pytorch_model.safetensors")
        return None
    model.save_pretrained(folder)
    return model.eval()


def case_transformer(cfg: dict, env: Env, latent: tuple | None = None) -> dict:
    latent = latent or env.latent
    c, f, h, w = latent
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, c, f, h, w, generator=g).repeat(2, 1, 1, 1, 1).to(env.device, env.dtype)  # as pipeline
    context = torch.randn(2, env.text_len, cfg["text_dim"], generator=g)
    context[0, env.text_len // 8:] = 0  # zero past the prompt, as the text encoder gives it
    context[1, env.text_len // 4:] = 0
    context = context.to(env.device, env.dtype)
    t = torch.full((2,), 757.0, device=env.device)
    result = {"config": cfg, "latent": list(latent), "flops_per_step": dit_flops(cfg, latent, env.text_len)}
    with tempfile.TemporaryDirectory() as tmp:
        ref = saved_weights(Path(tmp), env, lambda: env.reference.WanTransformer3DModel(**cfg),
                            lambda: WanTransformer(TransformerConfig.from_dict(cfg)),
                            lambda model: cast_like_from_pretrained(model, env.dtype))
        if ref is not None:
            result["diffusers"], ref_out = measure(
                lambda: ref(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0],
                env, env.repeats)
            del ref
            free(env)
        ours = load_module(lambda: WanTransformer(TransformerConfig.from_dict(cfg)), Path(tmp), env.device,
                           env.dtype, keep_fp32=FP32_PARAM_PATTERNS)
        result["sora"], out = measure(lambda: ours(x, t, context), env, env.repeats)
        ours = None  # freed before the next model is built
        free(env)
    for impl in ("sora", "diffusers"):
        if impl in result:
            tflops = result["flops_per_step"] / result[impl]["median_s"] / 1e12
            result[impl].update(tflops=tflops, mfu=tflops * 1e12 / env.peak_flops)
    if "diffusers" in result:
        result["parity"] = compare(out, ref_out)
    return result


def magcache_schedule(calibrated: dict, steps: int) -> int:
    """How many of `steps` guided steps MagCache runs at the calibration's own threshold: its decisions depend on
    the calibrated ratios alone."""
    from sora_cli import caching

    cache = caching.make("magcache", calibrated["magcache"]["threshold"], steps, calibrated)
    ran = []
    for i in range(steps):
        cache.at(i, 2)(torch.zeros(2, 1, 1), lambda h, *_: (ran.append(i), h)[1], torch.zeros(1, 6, 1))
    return len(ran)


def case_fast(cfg: dict, env: Env) -> dict:
    """sora's ways to a faster step, each measured on the same random weights (see the module's docstring)."""
    from sora_cli import caching
    from sora_cli.models import attention
    from sora_cli.spec import Defaults

    c, f, h, w = env.latent
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, c, f, h, w, generator=g).repeat(2, 1, 1, 1, 1).to(env.device, env.dtype)
    context = torch.randn(2, env.text_len, cfg["text_dim"], generator=g).to(env.device, env.dtype)
    t = torch.full((2,), 757.0, device=env.device)
    result = {"config": cfg, "flops_per_step": dit_flops(cfg, env.latent, env.text_len), "kernels": {}}
    with tempfile.TemporaryDirectory() as tmp:
        saved_weights(Path(tmp), dataclasses.replace(env, reference=None), None,
                      lambda: WanTransformer(TransformerConfig.from_dict(cfg)), lambda model: None)
        ours = load_module(lambda: WanTransformer(TransformerConfig.from_dict(cfg)), Path(tmp), env.device,
                           env.dtype, keep_fp32=FP32_PARAM_PATTERNS)
        for name in ("sdpa", "flash", "sage"):
            try:
                chosen, kernel = attention.choose(name, env.device, env.dtype)
            except Exception as e:  # not installed, or not on this device
                result["kernels"][name] = {"skipped": str(e)}
                continue
            attention.use(ours, kernel)
            result["kernels"][name], _ = measure(lambda: ours(x, t, context), env, env.repeats)
            result["kernels"][name]["kernel"] = chosen
        attention.use(ours, attention.sdpa)
        result["unguided"], _ = measure(lambda: ours(x[:1], t[:1], context[:1]), env, env.repeats)
        # A cache hit: first-block runs one block; magcache and teacache none, only the residual's addition.
        for method in ("first-block", "magcache"):
            cache = caching.make(method, float("inf"), 10 ** 6, {"magcache": {
                "ratios": [1.0], "threshold": 1, "max_skips": 10 ** 6, "retention": 0}}).at(1, 2)
            ours(x, t, context, cache=cache)  # every call after the first reuses the blocks' residual
            result[f"{method}_hit"], _ = measure(lambda: ours(x, t, context, cache=cache), env, env.repeats)
        start = time.perf_counter()
        for block in ours.blocks:
            block.compile()
        result["compiled"], _ = measure(lambda: ours(x, t, context), env, env.repeats)
        result["compiled"]["compile_and_first_s"] = time.perf_counter() - start - result["compiled"]["median_s"] * (
            env.repeats)
        ours = None
        free(env)
    step = result["kernels"]["sdpa"]["median_s"]
    # MagCache's published calibration of Wan 2.1 1.3B at its defaults fixes which of 50 steps run: no weights
    # are needed to know how many.
    ran = magcache_schedule(Defaults.from_model_index({}, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers").caches, 50)
    result["magcache_published_schedule"] = {"steps_run": ran, "steps_skipped": 50 - ran}
    result["totals_s"] = {"50_guided_steps": 50 * step, "4_unguided_steps": 4 * result["unguided"]["median_s"],
                          "50_guided_steps_compiled": 50 * result["compiled"]["median_s"],
                          "50_guided_steps_magcache": ran * step + (50 - ran) * result["magcache_hit"]["median_s"]}
    for m in (*result["kernels"].values(), result["compiled"]):
        if "median_s" in m:
            m.update(tflops=result["flops_per_step"] / m["median_s"] / 1e12,
                     mfu=result["flops_per_step"] / m["median_s"] / env.peak_flops)
    return result


def case_cut(base: dict, env: Env, latent: tuple | None = None) -> dict:
    """A transformer too large (or too slow) to build whole within the budget: --layers of its blocks, measured,
    and the step time extrapolated to all of them."""
    total = base["num_layers"]
    result = case_transformer(dict(base, num_layers=env.layers), env, latent)
    full = dict(base, num_layers=total)
    result["extrapolated"] = ex = {
        "layers": total,
        "note": f"EXTRAPOLATED: measured with {env.layers} of {total} blocks; step time x {total}/{env.layers} "
                "(embeddings and head, a few % of one block, are counted N/K times)",
        "flops_per_step": dit_flops(full, latent or env.latent, env.text_len)}
    for impl in ("sora", "diffusers"):
        if impl in result:
            per_layer = result[impl]["median_s"] / env.layers
            result[impl]["per_layer_s"] = per_layer
            ex[impl] = {"step_s": per_layer * total,
                        "mfu": ex["flops_per_step"] / (per_layer * total) / env.peak_flops}
    return result


def case_vae(env: Env, cfg: dict | None = None, latent: tuple | None = None) -> dict:
    cfg = cfg if cfg is not None else dict(TINY["vae"]) if env.tiny else {}
    c, f, h, w = latent or env.latent
    z = torch.randn(1, c, f, h, w, generator=torch.Generator().manual_seed(2)).to(env.device)  # normalised latents
    result = {"config": cfg or "AutoencoderKLWan() defaults (Wan 2.1)", "latent_frames": f, "latent": [c, f, h, w]}
    with tempfile.TemporaryDirectory() as tmp:
        ref = saved_weights(Path(tmp), env, lambda: env.reference.AutoencoderKLWan(**cfg),
                            lambda: WanVAE(VAEConfig.from_dict(cfg)), randomise_vae)
        if ref is not None:  # diffusers decodes raw latents: undo the normalisation our decode takes in
            mean = torch.tensor(ref.config.latents_mean, device=env.device).view(1, -1, 1, 1, 1)
            std = torch.tensor(ref.config.latents_std, device=env.device).view(1, -1, 1, 1, 1)
            raw = z * std + mean
            result["diffusers"], ref_out = measure(lambda: ref.decode(raw, return_dict=False)[0], env,
                                                   env.vae_repeats, lambda: ref.decode(raw[:, :, :2]))
            del ref
            free(env)
        config = VAEConfig.from_dict(json.loads((Path(tmp) / "config.json").read_text())) if env.reference \
            else VAEConfig.from_dict(cfg)
        ours = load_module(lambda: WanVAE(config), Path(tmp), env.device, torch.float32)
        result["sora"], out = measure(lambda: ours.decode(z), env, env.vae_repeats, lambda: ours.decode(z[:, :, :2]))
        ours = None  # freed before the next model is built
        free(env)
    result["frames"] = list(out.shape[2:])
    if "diffusers" in result:
        result["parity"] = compare(out, ref_out)
        result["parity"]["share_not_clamped"] = (ref_out.abs() < 0.999).float().mean().item()
    return result


def table(results: dict) -> str:
    rows = [f"{'case':<12} {'impl':<10} {'median s':>9} {'peak GiB':>9} {'TFLOP/s':>8} {'MFU':>6} "
            f"{'max|diff|':>10} {'mean|diff|':>10}"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    for name, r in results.items():
        if "skipped" in r or "error" in r:
            rows.append(f"{name:<12} {'skipped: ' + r['skipped'] if 'skipped' in r else 'ERROR: ' + r['error']}")
            continue
        for impl in ("sora", "diffusers"):
            if impl not in r:
                continue
            m, p = r[impl], r.get("parity", {}) if impl == "sora" else {}
            rows.append(f"{name:<12} {impl:<10} {m['median_s']:>9.4f} {fmt(m['peak_gib'], '.2f'):>9} "
                        f"{fmt(m.get('tflops'), '.1f'):>8} {fmt(m.get('mfu'), '.1%'):>6} "
                        f"{fmt(p.get('max_abs_diff'), '.3e'):>10} {fmt(p.get('mean_abs_diff'), '.3e'):>10}")
        if "kernels" in r:  # the `fast` case: sora's ways to a faster step
            ways = {f"attention {k}": m for k, m in r["kernels"].items()}
            ways |= {"compiled": r["compiled"], "unguided": r["unguided"], "first-block hit": r["first-block_hit"],
                     "magcache hit": r["magcache_hit"]}
            for way, m in ways.items():
                rows.append(f"{name:<12} {way:<16} " + (f"skipped: {m['skipped'][:70]}" if "skipped" in m else
                            f"{m['median_s']:>9.4f} s  {fmt(m.get('mfu'), '.1%'):>6} MFU"))
            rows.append(f"{'':<12} totals (steps only): " + ", ".join(f"{k} {v:.1f} s" for k, v in r["totals_s"].items()))
            continue
        if "diffusers" not in r:
            rows.append(f"{'':<12} (no diffusers: ours alone, no parity)")
        if "extrapolated" in r:
            ex = r["extrapolated"]
            for impl in ("sora", "diffusers"):
                if impl in ex:
                    rows.append(f"{'':<12} {impl:<10} per layer {r[impl]['per_layer_s']:.4f} s -> {ex['layers']} "
                                f"layers {ex[impl]['step_s']:.3f} s, MFU {ex[impl]['mfu']:.1%}  (EXTRAPOLATED)")
        if "parity" in r:
            p = r["parity"]
            rows.append(f"{'':<12} reference output mean|x| {p['ref_mean_abs']:.3e}, max|x| {p['ref_max_abs']:.3e}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="transformer dtype; default bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed transformer steps after one warm-up")
    parser.add_argument("--vae-repeats", type=int, default=2, help="timed whole-clip decodes after a short warm-up")
    parser.add_argument("--layers", type=int, default=None,
                        help="blocks built of the A14B expert and of TI2V-5B (default 8; 2 with --tiny)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: the same code path at tiny shapes")
    parser.add_argument("--no-reference", action="store_true", help="measure ours alone, without diffusers")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="for MFU (H200 bf16 dense, about 790)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run, start-up included")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench_out"))
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := set(cases) - set(CASES):
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")

    reference, why = None, "--no-reference"
    if not args.no_reference:
        try:
            import diffusers as reference

            reference.WanTransformer3DModel, reference.AutoencoderKLWan  # lazy: fails here, not mid-case
            why = None
        except Exception as e:  # missing, or broken by a missing dependency
            reference = None
            why = f"diffusers not importable ({type(e).__name__}: {e}); measuring ours alone"
            print(why)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    shape = TINY_SHAPE if args.tiny else REAL_SHAPE
    env = Env(device, dtype, args.repeats, args.vae_repeats, args.layers or (2 if args.tiny else 8), args.tiny,
              args.peak_tflops * 1e12, reference, **shape)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "diffusers": getattr(reference, "__version__", None), "reference_note": why,
            "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny, "latent": list(env.latent),
            "text_len": env.text_len, "repeats": env.repeats, "vae_repeats": env.vae_repeats, "a14b_layers": env.layers,
            "peak_tflops": args.peak_tflops, "budget_s": args.budget,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_gpu.json"
    results: dict[str, dict] = {}
    spent = prior_spent = 0.0
    run = {"wan21_1.3b": lambda: case_transformer(dict(WAN21_13B, **TINY["wan21_1.3b"]) if args.tiny else WAN21_13B,
                                                   env),
           "wan22_a14b": lambda: case_cut(dict(WAN22_A14B, **TINY["wan22_a14b"]) if args.tiny else WAN22_A14B, env),
           "vae": lambda: case_vae(env),
           "ti2v_5b": lambda: case_cut(dict(WAN22_TI2V_5B, **TINY["ti2v_5b"], in_channels=48) if args.tiny
                                       else WAN22_TI2V_5B, env, TI2V_LATENT[args.tiny]),
           "vae22": lambda: case_vae(env, dict(WAN22_VAE, **TINY["vae22"]) if args.tiny else dict(WAN22_VAE),
                                     VAE22_LATENT[args.tiny]),
           "fast": lambda: case_fast(dict(WAN21_13B, **TINY["wan21_1.3b"]) if args.tiny else WAN21_13B, env)}
    for name in cases:
        prior = PRIOR_S[name] * (env.layers / 8 if name in ("wan22_a14b", "ti2v_5b") else 1) * (0.05 if args.tiny else 1)
        estimate = prior * (spent / prior_spent if prior_spent else 1.0)  # priors scaled by how the others went
        elapsed = time.perf_counter() - T0
        if elapsed + estimate > args.budget:
            results[name] = {"skipped": f"estimated {estimate:.0f} s after {elapsed:.0f} s would pass the "
                                        f"{args.budget:.0f} s budget"}
            print(f"{name}: {results[name]['skipped']}")
            continue
        print(f"{name}: running (estimate {estimate:.0f} s, {elapsed:.0f} s elapsed)", flush=True)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                results[name] = run[name]()
        except Exception as e:  # one failing case (out of memory, say) must not lose the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            free(env)
        results[name]["case_wall_s"] = took = time.perf_counter() - start
        spent, prior_spent = spent + took, prior_spent + prior
        info["total_s"] = time.perf_counter() - T0
        path.write_text(json.dumps({"env": info, "cases": results}, indent=2))
    print(f"\n{info['device']}, {info['dtype']}, torch {info['torch']}, diffusers {info['diffusers'] or 'absent'}"
          f"{', TINY dry run' if args.tiny else ''}; median of {env.repeats} (transformer) / {env.vae_repeats} (VAE)")
    print(table(results))
    info["total_s"] = time.perf_counter() - T0
    path.write_text(json.dumps({"env": info, "cases": results}, indent=2))
    print(f"\nwrote {path} ({info['total_s']:.0f} s in all)")


if __name__ == "__main__":
    main()
