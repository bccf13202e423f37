"""Does a wider or longer-trained decoder on the shipped VAE's frozen encoder reach 32 dB on the world's objects?

    python research/tiny_redesign/vae_decoder.py --name NAME [--width 32] [--steps 5000] [--warm]
        [--init RUN] [--seeds 0,1,2] [--threads 2]

The recipe's decoder phase (train/vae.py: run_phase on the decoder and post_quant_conv, the encoder frozen, crops
of stream 4, AdamW 1e-3 with warm-up and cosine decay, EMA 0.999, bf16 autocast where the CPU has it natively) on
the shipped encoder, so the latents, and every transformer trained on them, stay exactly as they are. `--width` is
the new decoder's base width (the shipped one is 32); `--warm` starts from the shipped decoder (width 32 only)
instead of afresh, the cheap way to ask whether more decoder steps would help; `--init RUN` (implies `--warm`)
starts from an earlier run's EMA decoder (its checkpoint in the cache), a fresh schedule on top of it. Reports
evaluate_psnr (24 held-out clips at the buckets' sizes) for each seed, the shipped VAE beside it, and the decoder's
step time. The world is the one in the working tree: apply the world part of clip_recipe.patch for its object
sizes. Writes runs/NAME.json.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from sora_cli import Pipeline
from sora_cli.models.wan.vae import WanVAE
from sora_cli.tiny.train.common import ema_weights, fast_bf16
from sora_cli.tiny.train.vae import VAERecipe, decoder_only, evaluate_psnr, run_phase, with_new_decoder

from proxy import CACHE

HERE = Path(__file__).resolve().parent


def decoder_on(shipped: WanVAE, width: int, warm: bool) -> WanVAE:
    """A VAE with the shipped encoder and latent statistics, and a fresh decoder of base width `width` (or, with
    `warm`, the shipped decoder itself)."""
    if not warm:
        return with_new_decoder(shipped, width, seed=0)
    if width != shipped.config.decoder_base_dim:
        raise SystemExit(f"error: --warm keeps the shipped decoder's width ({shipped.config.decoder_base_dim})")
    return copy.deepcopy(shipped).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warm", action="store_true")
    parser.add_argument("--init", help="an earlier run's name: start from its EMA decoder")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    shipped = Pipeline.from_pretrained(None, device="cpu").vae.float()
    vae = decoder_on(shipped, args.width, args.warm or args.init is not None)
    if args.init:
        vae.load_state_dict(ema_weights(CACHE / f"{args.init}_decoder.safetensors"))
    recipe = VAERecipe(decoder_steps=args.steps, decoder_lr=args.lr)
    bf16 = fast_bf16(torch.device("cpu"))
    CACHE.mkdir(exist_ok=True)
    seconds, _ = run_phase("decoder", vae, decoder_only(vae), args.steps, args.lr, recipe,
                           CACHE / f"{args.name}_decoder.safetensors", resume=False, stream=4, bf16=bf16)
    vae.eval().requires_grad_(False)
    shipped.eval()
    record = dict(width=args.width, warm=args.warm, init=args.init, steps=args.steps, lr=args.lr, bf16=bf16,
                  s_per_step=round(seconds / max(args.steps, 1), 3), train_minutes=round(seconds / 60, 1),
                  decoder_mb=round(sum(p.numel() for p in vae.decoder.parameters()) * 4 / 2 ** 20, 2),
                  psnr_db={s: evaluate_psnr(vae, s) for s in seeds},
                  shipped_psnr_db={s: evaluate_psnr(shipped, s) for s in seeds})
    print(json.dumps(record, indent=2))
    out = HERE / "runs"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(dict(command=f"vae_decoder.py {vars(args)}", time=time.ctime(),
                                                           **record), indent=2))


if __name__ == "__main__":
    main()
