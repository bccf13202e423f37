"""Can the clip recipe's transformer learn the direction word? proxy.py's question for motion, on clips.

    python research/tiny_redesign/motion_proxy.py --name NAME [--blend 0.9] [--known 0.6] [--scenes 1024]
        [--minutes 30] [--steps N] [--threads 2] [--compile] [--every 0] [--heldout 48]

Training set: --scenes scenes of the training split with one object moving in one of the eight directions
(world.sample_scene, drawn again until the motion is a direction, so the held-out split's combinations stay
unseen), 17 frames at 64x64, captioned "a {colour} {shape} moving {direction} {fast|slowly} on a {background}
background" (one template: the question is whether the word is learnt at all, not its phrasings). Each scene is
also drawn moving in one other direction, drawn once, as its blend partner (the recipe caches one partner a clip).
The network is clip_recipe.patch's (1x2x2 patches, width 128, 6 layers); the recipe's shift-3 noise levels, frame
noise correlated 0.5, x0 target with dit_loss's weighting, caption dropout 0.1, AdamW 5e-4 constant after 200
warm-up steps, EMA 0.998, bf16 autocast, batch 16.

  --known P    the recipe's clean-frame masks (dit.clean_frames) drawn with probability P (the recipe's 0.6):
               known frames are given clean, at timestep 0, and left out of the loss.
  --start-only with --known, the mask is always the first latent frame alone (the image-to-video task).
  --blend F    that share of every batch is noised from (1 - l) a + l b, a the clip and b its partner,
               l ~ U(0, 1), at noise >= 0.25, with a the target: the input shows two paths and only the
               direction word can pick one.
  --same-start the partner starts where the clip starts (placed so; one of the directions for which its path
               then stays in the frame): otherwise a partner moving the other way starts at the other end of
               its path, and with the first frame known the path that continues it is the clip's, word or not.

Judged on the EMA weights, every --every minutes (follow only) and at the end:
- follow: probe_word_use.py's figure for 24 left/right pairs that start at the frame's centre (1: the word
  alone moves the estimate from one clip to the other, 0: ignored), all frames noised to s, and with the first
  latent frame known (`start`), at s = 1.0 and 0.7;
- direction: --heldout scenes of the held-out split (one object moving in a direction, its combination unseen),
  the share whose motion judge.py reads as the asked one, with colour and shape; text-to-video in one pass
  (`t2v`), in two (`t2v2`: draw, keep the first latent frame, generate the rest again), and with the true clip's
  first latent frame known (`i2v`); 20 steps, guidance 4.

The world is the one in the working tree: apply the world part of clip_recipe.patch for its object sizes.
Writes runs/NAME.json and runs/NAME.png (frames 0, 4, 8, 12 and 16 of four held-out prompts: one pass, two
passes, start known).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research" / "probes"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sora_cli import Pipeline  # noqa: E402
from sora_cli.conditioning import KnownFrames  # noqa: E402
from sora_cli.models.wan.transformer import WanTransformer, frame_timesteps_to_tokens  # noqa: E402
from sora_cli.sampling import frame_noise  # noqa: E402
from sora_cli.tiny import judge, world  # noqa: E402
from sora_cli.tiny.train.common import Ema, descend, to_model_range  # noqa: E402
from sora_cli.tiny.train.dit import MIN_SIGMA, clean_frames  # noqa: E402

from probe_word_use import estimates, follow_along, pair  # noqa: E402
from proxy import BLEND_FLOOR, CACHE, load_cache, save_cache, transformer_config, write_record  # noqa: E402

HERE = Path(__file__).resolve().parent
FRAMES, SIDE = 17, 64
CORRELATION = 0.5  # the recipe's frame noise correlation (sora-tiny's noise_correlation)


def moving_scenes(split: str, count: int, seed: int) -> list[world.Scene]:
    """`count` scenes of the split with one object moving in one of the eight directions."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < count:
        scene = world.sample_scene(rng, split, num_objects=1)
        if scene.objects[0].motion in world.DIRECTIONS:
            out.append(scene)
    return out


def caption(scene: world.Scene) -> str:
    o = scene.objects[0]
    article = "an" if o.color[0] in "aeiou" else "a"
    pace = "fast" if o.speed == "fast" else "slowly"
    return f"{article} {o.color} {o.shape} moving {o.motion} {pace} on a {scene.background} background"


def moved_otherwise(scene: world.Scene, rng: np.random.Generator, same_start: bool = False) -> world.Scene:
    """The scene with its object moving in another of the eight directions, all else the same; with `same_start`
    placed so that it starts where the scene's object starts (one of the directions for which that keeps the
    path in the frame; the scene itself when there is none)."""
    directions = [d for d in world.DIRECTIONS if d != scene.objects[0].motion]
    if not same_start:
        other = copy.deepcopy(scene)
        other.objects[0].motion = directions[rng.integers(len(directions))]
        return other
    placed = [p for p in (world.start_where(scene, d, FRAMES, SIDE, SIDE) for d in directions) if p is not None]
    return placed[rng.integers(len(placed))] if placed else scene


@torch.no_grad()
def encode(pipe: Pipeline, scenes: list[world.Scene], chunk: int = 16) -> torch.Tensor:
    """(N, C, 5, 16, 16) latents of the scenes' 17-frame 64x64 clips."""
    out = []
    for i in range(0, len(scenes), chunk):
        clips = np.stack([world.draw(s, FRAMES, SIDE, SIDE) for s in scenes[i:i + chunk]])
        out.append(pipe.vae.encode(to_model_range(clips)))
    return torch.cat(out)


def data(pipe: Pipeline, count: int, same_start: bool) -> dict[str, torch.Tensor]:
    """{"latents", "partners": (N, C, 5, 16, 16), "texts": (N, 40, 384) fp16}, cached in /tmp."""
    radius = np.mean([s.objects[0].size for s in moving_scenes("train", 64, 0)])
    tag = "_samestart" if same_start else ""
    path = CACHE / f"motion_n{count}_r{radius:.3f}{tag}.safetensors"  # the radius tells the world's object sizes apart
    if path.exists():
        return load_cache(path)
    scenes = moving_scenes("train", count, 0)
    rng = np.random.default_rng(1)
    partners = [moved_otherwise(s, rng, same_start) for s in scenes]
    print(f"{sum(p.objects[0].motion != s.objects[0].motion for s, p in zip(scenes, partners))} of {count} scenes "
          "have a partner", flush=True)
    other = path.with_name(path.name.replace(tag, "") if tag else path.name.replace(".safetensors", "_samestart.safetensors"))
    with torch.no_grad():  # the clips themselves are those of the other kind of partner's cache, where it exists
        d = {k: v for k, v in load_cache(other).items() if k != "partners"} if other.exists() else \
            dict(latents=encode(pipe, scenes), texts=pipe.encode_text([caption(s) for s in scenes]).half())
        d["partners"] = encode(pipe, partners)
    save_cache(d, path)
    return d


def train(pipe: Pipeline, args: argparse.Namespace) -> tuple[WanTransformer, dict]:
    d = data(pipe, args.scenes, args.same_start)
    latents, partners, texts = d["latents"], d["partners"], d["texts"].float()
    with torch.no_grad():
        empty = pipe.encode_text([""])[0].float()
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    torch.manual_seed(0)
    net = WanTransformer(transformer_config(2, 128)).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = Ema(net, 0.998)
    if args.compile:  # the blocks only, shapes dynamic: how many distinct timesteps a batch holds (clean frames at
        for block in net.blocks:  # 0, blends clamped to one level) changes from step to step, and the transformer's
            block.compile()  # torch.unique over them cannot be compiled
    grid = net.token_grid(*latents.shape[2:])
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    started, step, smooth, log, trend, paused = time.time(), 0, None, [], [], 0.0
    next_check = args.every * 60 if args.every else float("inf")
    b, frames = args.batch, latents.shape[2]
    while time.time() - started - paused < args.minutes * 60 and step < args.steps:
        if time.time() - started - paused >= next_check:
            t = time.time()
            trend.append(dict(step=step, minutes=round(next_check / 60, 1), follow=follow(pipe, ema_copy(net, ema))))
            print("trend", json.dumps(trend[-1]), flush=True)
            paused += time.time() - t
            next_check += args.every * 60
        idx = torch.randint(len(latents), (b,), generator=gen)
        x0, partner = latents[idx], partners[idx]
        context = torch.where((torch.rand(b, generator=gen) < 0.1)[:, None, None], empty, texts[idx])
        u = torch.rand(b, generator=gen)
        sigma = 3 * u / (1 + 2 * u)
        if args.start_only:
            clean = torch.zeros(b, frames, dtype=torch.bool)
            clean[:, 0] = torch.from_numpy(rng.random(b) < args.known)
        else:
            clean = clean_frames(rng, b, frames, args.known)
        blended = torch.arange(b) < round(args.blend * b)
        mix = torch.where(blended, torch.rand(b, generator=gen), 0.0)[:, None, None, None, None]
        sigma = torch.where(blended, sigma.clamp(min=BLEND_FLOOR), sigma)
        source = (1 - mix) * x0 + mix * partner
        noise = frame_noise(x0.shape, gen, CORRELATION)
        rate = args.lr * min(1.0, (step + 1) / 200)
        for group in optimizer.param_groups:
            group["lr"] = rate
        s = sigma[:, None] * ~clean  # (B, F)
        s5, known = s[:, None, :, None, None], clean[:, None, :, None, None]
        xt = (1 - s5) * torch.where(known, x0, source) + s5 * noise
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(xt, frame_timesteps_to_tokens(s * 1000, grid), context).float()
        weight = (~known).float() / s5.clamp(min=MIN_SIGMA) ** 2
        loss = ((out - x0).pow(2) * weight).sum() / ((~clean).sum().clamp(min=1) * x0[0, :, 0].numel())
        value = descend(loss, optimizer)
        ema.update(net, step)
        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
        step += 1
        if step % 250 == 0:
            spent = time.time() - started - paused
            print(f"step {step}: {spent / step:.3f} s a step, loss {smooth:.4f}", flush=True)
            log.append((step, round(spent, 1), round(smooth, 4)))
    spent = time.time() - started - paused
    print(f"{step} steps in {spent / 60:.1f} min", flush=True)
    return ema_copy(net, ema), dict(steps=step, s_per_step=round(spent / step, 3), final_loss=round(smooth, 4),
                                    train_minutes=round(spent / 60, 1), trend=trend, loss_log=log)


def ema_copy(net: WanTransformer, ema: Ema) -> WanTransformer:
    snapshot = WanTransformer(net.config)  # a fresh module: a deep copy would keep the compiled blocks
    snapshot.load_state_dict(ema.shadow)
    for p in snapshot.parameters():
        p.requires_grad_(False)
    return snapshot.eval()


@torch.inference_mode()
def follow(pipe: Pipeline, net: WanTransformer, count: int = 24) -> dict[str, float]:
    """probe_word_use.py's direction figure for this network, the mean over `count` left/right pairs."""
    pipe.transformer = net
    rng, pairs = np.random.default_rng(91), []
    while len(pairs) < count:
        p = pair(rng, "direction")
        if p is not None:
            pairs.append(p)
    out = {}
    for known_start in (False, True):
        for s in (1.0, 0.7):
            values = []
            for i, scenes in enumerate(pairs):
                a, b = (encode(pipe, [x]) for x in scenes)
                context = pipe.encode_text([caption(x) for x in scenes])
                values.append(follow_along(estimates(pipe, a, b, context, s, known_start, seed=i), a, b))
            out[("start@" if known_start else "@") + f"{s}"] = round(float(np.mean(values)), 3)
    return out


@torch.inference_mode()
def judge_heldout(pipe: Pipeline, net: WanTransformer, count: int) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """Judged shares of `count` held-out scenes in each mode, and every mode's clips."""
    pipe.transformer = net
    scenes = moving_scenes("heldout", count, 1)
    truth = encode(pipe, scenes)
    first = torch.zeros(truth.shape[2], dtype=torch.bool)
    first[0] = True
    figures, clips = {}, {}
    for mode, passes, known in (("t2v", 1, None), ("t2v2", 2, None), ("i2v", 1, KnownFrames(truth, first))):
        jobs = [pipe.resolve(caption(s), height=SIDE, width=SIDE, num_frames=FRAMES, seed=i, passes=passes)
                for i, s in enumerate(scenes)]
        latents = pipe.sample(jobs, known)
        clips[mode] = [pipe.decode(latents[i:i + 1]) for i in range(count)]
        hits = [judge.agreement(judge.scene_facts(s), judge.judge_clip(c, world.FPS)) for s, c in zip(scenes, clips[mode])]
        figures[mode] = {k: round(float(np.mean([h[k] for h in hits])), 2) for k in ("motion", "color", "shape")}
    return figures, clips


def picture(clips: dict[str, list[np.ndarray]], path: Path, rows: int = 4) -> None:
    from PIL import Image
    count = min(rows, *(len(c) for c in clips.values()))
    strips = [np.concatenate(list(c[i][::4]), 1) for i in range(count) for c in clips.values()]
    image = Image.fromarray(np.concatenate(strips, 0))
    image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--scenes", type=int, default=1024)
    parser.add_argument("--known", type=float, default=0.6)
    parser.add_argument("--start-only", action="store_true")
    parser.add_argument("--blend", type=float, default=0.9)
    parser.add_argument("--same-start", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=10 ** 9)
    parser.add_argument("--every", type=float, default=0.0, help="the follow figure every so many minutes")
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--prepare", action="store_true", help="only encode and cache the training set")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(None, device="cpu")
    if args.prepare:
        data(pipe, args.scenes, args.same_start)
        return
    net, record = train(pipe, args)
    save_cache(net.state_dict(), CACHE / f"{args.name}.safetensors")  # the EMA weights, for a later look
    t = time.time()
    record["follow"] = follow(pipe, net)
    record["heldout"], clips = judge_heldout(pipe, net, args.heldout)
    out = HERE / "runs"
    out.mkdir(exist_ok=True)
    picture(clips, out / f"{args.name}.png")
    write_record(record, args.name, t)


if __name__ == "__main__":
    main()
