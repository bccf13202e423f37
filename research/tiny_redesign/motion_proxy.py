"""Can the clip recipe's transformer learn the direction word? proxy.py's question for motion, on clips.

    python research/tiny_redesign/motion_proxy.py --name NAME [--blend 0.9] [--known 0.6] [--scenes 1024]
        [--world directions|recipe] [--captions template|recipe|anchored|plain] [--partners directions|recipe]
        [--exclude M,N] [--second 0.3] [--undirected 0.2] [--buckets none|recipe] [--minutes 30] [--steps N]
        [--first N] [--first-captions C] [--keep-first P] [--threads 2] [--compile] [--every 0] [--heldout 48]
        [--judge-captions template|heldout] [--judge FOLDER | --weights NAME]

Training set: --scenes scenes of the training split with one object moving in one of the eight directions
(world.sample_scene, drawn again until the motion is a direction, so the held-out split's combinations stay
unseen), 17 frames at 64x64, captioned "a {colour} {shape} moving {direction} {fast|slowly} on a {background}
background" (one template: the question is whether the word is learnt at all, not its phrasings). Each scene is
also drawn moving in one other direction, drawn once, as its blend partner (the recipe caches one partner a clip).
The network is clip_recipe.patch's (1x2x2 patches, width 128, 6 layers); the recipe's shift-3 noise levels, frame
noise correlated 0.5, x0 target with dit_loss's weighting, caption dropout 0.1, AdamW 5e-4 constant after 200
warm-up steps, EMA 0.998, bf16 autocast where the CPU has it natively (float32 otherwise:
common.fast_bf16), batch 16.

  --known P    the recipe's clean-frame masks (dit.clean_frames) drawn with probability P (the recipe's 0.6):
               known frames are given clean, at timestep 0, and left out of the loss.
  --start-only with --known, the mask is always the first latent frame alone (the image-to-video task).
  --blend F    that share of every batch is noised from (1 - l) a + l b, a the clip and b its partner,
               l ~ U(0, 1), at noise >= 0.25, with a the target: the input shows two paths and only the
               direction word can pick one.
  --same-start the partner starts where the clip starts (placed so; one of the directions for which its path
               then stays in the frame): otherwise a partner moving the other way starts at the other end of
               its path, and with the first frame known the path that continues it is the clip's, word or not.
  --world recipe  the clip recipe's scenes instead (world.sample_scene with clip_recipe.patch applied: any of the
               13 motions, two objects in 30%), three recipe captions a scene (sora_cli.tiny.captions, one drawn
               a sample), and the recipe's motion partner (any other motion that starts where the clip starts,
               as partner_scenes does); the judging keeps the eight directions and the one template.
  --captions recipe, --partners recipe  one part of --world recipe on its own (each is the default with it):
               the recipe's three captions a scene, or its motion partners (any other motion that starts where the
               clip starts), on the eight directions' scenes.
  --captions anchored  two of the recipe's captions a scene and one plain phrasing in the recipe's first words
               ("a red circle moving up and to the left quickly on a white background"), so that one phrasing
               of each word recurs while the others vary.
  --captions plain  the plain phrasing alone (captions.plain_caption), one a scene.
  --first N    the first N steps on the eight directions' scenes, --first-captions' phrasing, partners moving in
               another direction, where the word is learnt soonest, and the rest on the set the other switches
               name: whether a word learnt on the simple scenes is kept, and carried, on the recipe's.
  --first-captions C  those first steps' captions, one of --captions' choices (default plain).
  --keep-first P  after the first N steps, that share of batches still drawn from the first steps' set: whether
               the word is kept better on the recipe's scenes while its simple scenes recur.
  --exclude M,N  with --world recipe, --partners recipe, --second or --undirected, no object moves so (e.g.
               spin,grow,shrink: the motions that change an object's outline or size), in the scenes or the
               partners.
  --second P   on the eight directions' scenes, that share of them hold a second object (the recipe's 0.3),
               placed and sized as the world places two, in any motion but --exclude's; the template joins the
               two with "and"; the partner moves the first object otherwise.
  --undirected P  on the eight directions' scenes, that share of them have their one object in a motion that is
               not a direction (bounce, still, and spin, grow or shrink unless --exclude'd), as about a fifth of
               the recipe world's first objects are without spin, grow and shrink.
  --buckets recipe  draw each training scene at one of the recipe's five aspect-ratio buckets (48x80 ... 80x48);
               each batch from one bucket, drawn in proportion to its scenes, as the recipe does; the judging
               keeps 64x64.

Judged on the EMA weights, every --every minutes (follow only) and at the end:
- follow: probe_word_use.py's figure for 24 left/right pairs that start at the frame's centre (1: the word
  alone moves the estimate from one clip to the other, 0: ignored), all frames noised to s, and with the first
  latent frame known (`start`), at s = 1.0 and 0.7;
- direction: --heldout scenes of the held-out split (one object moving in a direction, its combination unseen),
  the share whose motion judge.py reads as the asked one, with colour and shape; text-to-video in one pass
  (`t2v`), in two (`t2v2`: draw, keep the first latent frame, generate the rest again), and with the true clip's
  first latent frame known (`i2v`); 20 steps, guidance 4.
Both under the one template, or with --judge-captions heldout under the recipe's held-out phrasings
(captions.caption's held-out split: templates and synonyms no training caption uses; a pair's two captions
phrased alike).

The world is the one in the working tree: apply clip_recipe.patch (its object sizes, start_where, plain_caption).
With --judge FOLDER, a model folder (a clip-recipe run's) is judged the same way instead of a trained network;
with --weights NAME, an earlier run's EMA weights (kept in the cache as NAME.safetensors).
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
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research" / "probes"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sora_cli import Pipeline  # noqa: E402
from sora_cli.conditioning import KnownFrames  # noqa: E402
from sora_cli.models.wan.transformer import WanTransformer, frame_timesteps_to_tokens  # noqa: E402
from sora_cli.sampling import frame_noise  # noqa: E402
from sora_cli.tiny import captions, judge, world  # noqa: E402
from sora_cli.tiny.train.common import Ema, descend, fast_bf16, to_model_range  # noqa: E402
from sora_cli.tiny.train.dit import MIN_SIGMA, clean_frames  # noqa: E402

from probe_word_use import estimates, follow_along, pair  # noqa: E402
from proxy import (BLEND_FLOOR, CACHE, frame_sizes, load_cache, save_cache, transformer_config,  # noqa: E402
                   write_record)

HERE = Path(__file__).resolve().parent
FRAMES, SIDE = 17, 64
CORRELATION = 0.5  # the recipe's frame noise correlation (sora-tiny's noise_correlation)
CAPTIONS = ("template", "recipe", "anchored", "plain")  # --captions' choices, described above


def moving_scenes(split: str, count: int, seed: int) -> list[world.Scene]:
    """`count` scenes of the split with one object moving in one of the eight directions."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < count:
        scene = world.sample_scene(rng, split, num_objects=1)
        if scene.objects[0].motion in world.DIRECTIONS:
            out.append(scene)
    return out


def replaced(scenes: list[world.Scene], share: float, seed: int, num_objects: int,
             fits: Callable[[world.Scene], bool]) -> list[world.Scene]:
    """The scenes, `share` of them (drawn) replaced by a training scene of `num_objects` objects that `fits`."""
    rng, out = np.random.default_rng(seed), []
    for scene in scenes:
        if rng.random() < share:
            scene = world.sample_scene(rng, "train", num_objects=num_objects)
            while not fits(scene):
                scene = world.sample_scene(rng, "train", num_objects=num_objects)
        out.append(scene)
    return out


def caption(scene: world.Scene) -> str:
    """The one template, "a red circle moving right fast on a white background"; a second object joins with
    "and" ("... and a blue square standing still on ...")."""
    def phrase(o: world.ObjectSpec) -> str:
        pace = "fast" if o.speed == "fast" else "slowly"
        verb = {"still": "standing still", "bounce": f"bouncing {pace}", "spin": f"spinning {pace}",
                "grow": f"growing {pace}", "shrink": f"shrinking {pace}"}.get(o.motion, f"moving {o.motion} {pace}")
        return f"{'an' if o.color[0] in 'aeiou' else 'a'} {o.color} {o.shape} {verb}"
    return " and ".join(map(phrase, scene.objects)) + f" on a {scene.background} background"


def judge_caption(scene: world.Scene, phrasing: str, seed: int) -> str:
    """The judging's caption: the one template, or a held-out phrasing drawn with `seed`."""
    if phrasing == "template":
        return caption(scene)
    return captions.caption(scene, np.random.default_rng(seed), "heldout")


def moved_otherwise(scene: world.Scene, rng: np.random.Generator, same_start: bool = False, height: int = SIDE,
                    width: int = SIDE, motions: tuple[str, ...] = world.DIRECTIONS) -> world.Scene:
    """The scene with its first object in another of `motions`, all else the same; with `same_start` placed so
    that it starts where the scene's object starts (one of the motions that can: a path that stays in the frame
    from there, not a bounce or growth; the scene itself when there is none), as clip_recipe.patch's
    partner_scenes places the recipe's motion partner."""
    obj = scene.objects[0]
    others = [m for m in motions if m != obj.motion and not (m == "spin" and obj.shape == "circle")]
    if not same_start:
        other = copy.deepcopy(scene)
        other.objects[0].motion = others[rng.integers(len(others))]
        return other
    placed = [p for p in (world.start_where(scene, m, FRAMES, height, width) for m in others) if p is not None]
    return placed[rng.integers(len(placed))] if placed else scene


@torch.no_grad()
def encode(pipe: Pipeline, scenes: list[world.Scene], chunk: int = 16, height: int = SIDE,
           width: int = SIDE) -> torch.Tensor:
    """(N, C, 5, H/4, W/4) latents of the scenes' 17-frame clips."""
    out = []
    for i in range(0, len(scenes), chunk):
        clips = np.stack([world.draw(s, FRAMES, height, width) for s in scenes[i:i + chunk]])
        out.append(pipe.vae.encode(to_model_range(clips)))
    return torch.cat(out)


Data = dict[str, dict[str, torch.Tensor]]


def data(pipe: Pipeline, args: argparse.Namespace) -> Data:
    """{"latents", "partners": {"HxW": (n, C, 5, H/4, W/4)}, "texts": {"HxW": (n, K, 40, 384) fp16}} (K phrasings a
    scene: 1, or the recipe's 3), cached in /tmp."""
    count, recipe, buckets = args.scenes, args.world == "recipe", args.buckets == "recipe"
    exclude = tuple(m for m in args.exclude.split(",") if m)
    radius = np.mean([s.objects[0].size for s in moving_scenes("train", 64, 0)])
    tag = ("_samestart" if args.same_start else "") + ("_recipe" if recipe else "") + ("_buckets" if buckets else "")
    if not recipe:  # one part of the recipe's world on the directions' scenes
        tag += (f"_{args.captions}captions" if args.captions != "template" else "") + \
            ("_recipepartners" if args.partners == "recipe" else "")
        tag += f"_second{args.second:.2f}" if args.second else ""
        tag += f"_undirected{args.undirected:.2f}" if args.undirected else ""
    tag += "".join(f"_no{m}" for m in exclude)
    path = CACHE / f"motion_n{count}_r{radius:.3f}{tag}.safetensors"  # the radius tells the world's object sizes apart
    if path.exists():
        return load_cache(path)
    rng = np.random.default_rng(1)
    if recipe:
        draw_rng, scenes = np.random.default_rng(0), []
        while len(scenes) < count:
            scene = world.sample_scene(draw_rng, "train")
            if not any(o.motion in exclude for o in scene.objects):
                scenes.append(scene)
    else:
        # --second: the first object moving in a direction, the second in any motion not excluded
        scenes = replaced(moving_scenes("train", count, 0), args.second, 2, 2, lambda s: s.objects[0].motion in
                          world.DIRECTIONS and s.objects[1].motion not in exclude)
        # --undirected: one object, in a motion that is neither a direction nor excluded
        scenes = replaced(scenes, args.undirected, 3, 1, lambda s: s.objects[0].motion not in world.DIRECTIONS
                          and s.objects[0].motion not in exclude)
    motions = tuple(m for m in world.MOTIONS if m not in exclude) if args.partners == "recipe" else world.DIRECTIONS
    d: Data = {"latents": {}, "partners": {}, "texts": {}}
    by_size: dict[tuple[int, int], list[world.Scene]] = {}
    for scene, size in zip(scenes, frame_sizes(count, buckets)):
        by_size.setdefault(size, []).append(scene)
    moved = 0
    for (h, w), group in sorted(by_size.items()):
        partners = [moved_otherwise(s, rng, args.same_start, h, w, motions) for s in group]
        recipe_texts = lambda s, k: [captions.caption(s, rng, "train") for _ in range(k)]
        texts = {"template": lambda s: [caption(s)],
                 "recipe": lambda s: recipe_texts(s, 3),
                 "anchored": lambda s: [captions.plain_caption(s)] + recipe_texts(s, 2),
                 "plain": lambda s: [captions.plain_caption(s)],
                 }[args.captions]
        texts = [t for s in group for t in texts(s)]
        moved += sum(p.objects[0].motion != s.objects[0].motion for s, p in zip(group, partners))
        key = f"{h}x{w}"
        with torch.no_grad():
            d["latents"][key] = encode(pipe, group, height=h, width=w)
            d["partners"][key] = encode(pipe, partners, height=h, width=w)
            d["texts"][key] = pipe.encode_text(texts).half().unflatten(0, (len(group), -1))
    print(f"{moved} of {count} scenes have a partner", flush=True)
    save_cache(d, path)
    return d


def buckets(d: Data) -> tuple[list[str], np.ndarray]:
    """The set's bucket sizes and each one's share of its scenes: a batch's bucket, drawn as the recipe draws it."""
    sizes = sorted(d["latents"])
    counts = np.array([len(d["latents"][k]) for k in sizes])
    return sizes, counts / counts.sum()


def train(pipe: Pipeline, args: argparse.Namespace) -> tuple[WanTransformer, dict]:
    d = data(pipe, args)
    simple = dict(world="directions", captions=args.first_captions, partners="directions", second=0.0,
                  undirected=0.0, exclude="", buckets="none")  # --first's scenes: the ninth round's
    first = data(pipe, argparse.Namespace(**{**vars(args), **simple})) if args.first else d
    stages = {True: (first, *buckets(first)), False: (d, *buckets(d))}
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
        torch._dynamo.config.recompile_limit = 64  # each bucket's sizes become dynamic one recompile at a time
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    bf16 = fast_bf16(torch.device("cpu"))  # float32 where the CPU would emulate bf16
    started, step, smooth, log, trend, paused = time.time(), 0, None, [], [], 0.0
    next_check = args.every * 60 if args.every else float("inf")
    b = args.batch
    while time.time() - started - paused < args.minutes * 60 and step < args.steps:
        if time.time() - started - paused >= next_check:
            t = time.time()
            trend.append(dict(step=step, minutes=round(next_check / 60, 1),
                              follow=follow(pipe, ema_copy(net, ema), args.judge_captions)))
            print("trend", json.dumps(trend[-1]), flush=True)
            paused += time.time() - t
            next_check += args.every * 60
        current, sizes, share = stages[step < args.first or (args.keep_first > 0 and rng.random() < args.keep_first)]
        size = sizes[rng.choice(len(sizes), p=share)]
        latents, texts = current["latents"][size], current["texts"][size]
        idx = torch.randint(len(latents), (b,), generator=gen)
        x0, partner = latents[idx], current["partners"][size][idx]
        text = texts[idx, torch.randint(texts.shape[1], (b,), generator=gen)].float()  # one phrasing a sample
        context = torch.where((torch.rand(b, generator=gen) < 0.1)[:, None, None], empty, text)
        grid, frames = net.token_grid(*x0.shape[2:]), x0.shape[2]
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
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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
                                    train_minutes=round(spent / 60, 1), bf16=bf16, trend=trend,
                                    loss_log=log)


def ema_copy(net: WanTransformer, ema: Ema) -> WanTransformer:
    snapshot = WanTransformer(net.config)  # a fresh module: a deep copy would keep the compiled blocks
    snapshot.load_state_dict(ema.shadow)
    for p in snapshot.parameters():
        p.requires_grad_(False)
    return snapshot.eval()


@torch.inference_mode()
def follow(pipe: Pipeline, net: WanTransformer, phrasing: str = "template", count: int = 24) -> dict[str, float]:
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
                context = pipe.encode_text([judge_caption(x, phrasing, seed=i) for x in scenes])
                values.append(follow_along(estimates(pipe, a, b, context, s, known_start, seed=i), a, b))
            out[("start@" if known_start else "@") + f"{s}"] = round(float(np.mean(values)), 3)
    return out


@torch.inference_mode()
def judge_heldout(pipe: Pipeline, net: WanTransformer, count: int,
                  phrasing: str = "template") -> tuple[dict, dict[str, list[np.ndarray]]]:
    """Judged shares of `count` held-out scenes in each mode, and every mode's clips."""
    pipe.transformer = net
    scenes = moving_scenes("heldout", count, 1)
    truth = encode(pipe, scenes)
    first = torch.zeros(truth.shape[2], dtype=torch.bool)
    first[0] = True
    figures, clips = {}, {}
    for mode, passes, known in (("t2v", 1, None), ("t2v2", 2, None), ("i2v", 1, KnownFrames(truth, first))):
        jobs = [pipe.resolve(judge_caption(s, phrasing, seed=1000 + i), height=SIDE, width=SIDE, num_frames=FRAMES,
                             seed=i, passes=passes) for i, s in enumerate(scenes)]
        latents = pipe.sample(jobs, known)
        clips[mode] = [pipe.decode(latents[i:i + 1]) for i in range(count)]
        hits = [judge.agreement(judge.scene_facts(s), judge.judge_clip(c, world.FPS))
                for s, c in zip(scenes, clips[mode])]
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
    parser.add_argument("--world", choices=("directions", "recipe"), default="directions")
    parser.add_argument("--captions", choices=CAPTIONS,
                        help="default: recipe with --world recipe")
    parser.add_argument("--partners", choices=("directions", "recipe"), help="default: recipe with --world recipe")
    parser.add_argument("--buckets", choices=("none", "recipe"), default="none")
    parser.add_argument("--exclude", default="",
                        help="with recipe partners, --second or --undirected: motions (comma-separated) left out")
    parser.add_argument("--second", type=float, default=0.0, help="share of scenes with a second object")
    parser.add_argument("--undirected", type=float, default=0.0,
                        help="share of scenes whose object moves otherwise than in a direction")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=10 ** 9)
    parser.add_argument("--first", type=int, default=0, help="steps on the simple scenes first (see above)")
    parser.add_argument("--first-captions", choices=CAPTIONS, default="plain")
    parser.add_argument("--keep-first", type=float, default=0.0, help="share of later batches from --first's set")
    parser.add_argument("--every", type=float, default=0.0, help="the follow figure every so many minutes")
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--prepare", action="store_true", help="only encode and cache the training set")
    parser.add_argument("--judge-captions", choices=("template", "heldout"), default="template")
    parser.add_argument("--judge", metavar="FOLDER", help="judge a model folder (a recipe run's) instead of training")
    parser.add_argument("--weights", metavar="NAME", help="judge an earlier run's cached EMA weights")
    args = parser.parse_args()
    recipe = args.world == "recipe"
    args.captions = args.captions or ("recipe" if recipe else "template")
    args.partners = args.partners or ("recipe" if recipe else "directions")
    if recipe and (args.captions, args.partners) != ("recipe", "recipe"):
        parser.error("--world recipe keeps the recipe's captions and partners")
    unknown = set(filter(None, args.exclude.split(","))) - set(world.MOTIONS)
    if args.exclude and (args.partners != "recipe" and not args.second and not args.undirected or unknown):
        parser.error(f"--exclude takes motions of {', '.join(world.MOTIONS)}, with --world or --partners recipe, "
                     "--second or --undirected")
    for knob in ("second", "undirected"):
        if getattr(args, knob) and (recipe or not 0 < getattr(args, knob) < 1):
            parser.error(f"--{knob} takes a share in (0, 1), on the directions' scenes (--world recipe has its own)")
    if args.keep_first and not (args.first and 0 < args.keep_first < 1):
        parser.error("--keep-first takes a share in (0, 1), with --first")
    if args.judge and args.weights:
        parser.error("--judge judges a model folder, --weights a cached run: one of the two")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(args.judge, device="cpu")
    if args.prepare:
        data(pipe, args)
        return
    if args.judge:
        net, record = pipe.transformer, dict(judged=args.judge)
    elif args.weights:
        net = WanTransformer(transformer_config(2, 128)).eval()
        net.load_state_dict(load_cache(CACHE / f"{args.weights}.safetensors"))
        record = dict(judged=args.weights)
    else:
        net, record = train(pipe, args)
        save_cache(net.state_dict(), CACHE / f"{args.name}.safetensors")  # the EMA weights, for a later look
    t = time.time()
    record["follow"] = follow(pipe, net, args.judge_captions)
    record["heldout"], clips = judge_heldout(pipe, net, args.heldout, args.judge_captions)
    out = HERE / "runs"
    out.mkdir(exist_ok=True)
    picture(clips, out / f"{args.name}.png")
    write_record(record, args.name, t)


if __name__ == "__main__":
    main()
