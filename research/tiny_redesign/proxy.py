"""Variants of research/probes/learn_layout.py's proxy: can a fresh sora-tiny-sized transformer learn the shape word?

    python research/tiny_redesign/proxy.py --name NAME [--cond text|tokens] [--noise shift3|logitnormal]
        [--target x0|v] [--size-scale 1.0] [--minutes 15] [--batch 32] [--threads N]

Same proxy as learn_layout.py (4096 single 64x64 frames of one still object of the training split, captioned
"a {colour} {shape} on a {background} background"; 1x4x4 patches, width 256, 6 layers; caption dropout 0.1; AdamW
5e-4 after 200 warm-up steps, EMA 0.998; bf16 autocast where the CPU has it natively; 100 held-out combinations
judged with the pipeline's sampler, 20 steps, guidance 4, one pass, seed i), with these switches:

  --cond tokens       the context is three learned 384-d tokens, one per word (colour, shape, background), instead
                      of the MiniLM caption states; caption dropout swaps all three for learned null tokens.
  --noise logitnormal sigma = sigmoid(N(0, 1)) (SD3) instead of shift 3 (sigma = 3u / (1 + 2u)).
  --noise band        half of each batch as shift 3, half uniform in [0.85, 1): the levels where a noised frame still
                      shows where the object is but no longer its outline (word_signal.py).
  --target v          the network predicts the velocity noise - x0, plain MSE (weight 1); the default x0 target
                      keeps dit_loss (x0 error / max(sigma, 0.05)^2). Judged with the pipeline treating the
                      output as a velocity (prediction "flow_prediction").
  --size-scale K      each object's nominal radius times K (the world caps it at MAX_SIZE 0.28 units and keeps the
                      outline inside the frame); held-out scenes are scaled alike.
  --patch 2|1         1x2x2 (64 tokens a frame) or 1x1x1 (256) patches instead of 1x4x4 (16).
  --width W, --layers N  the transformer's width (64-d heads, FFN 4W) and depth: 256 and 6 as sora-tiny. Four
                      times the tokens at half the width costs about the same per step in the linear layers.
  --place centre      every object (training and held-out) at the frame's centre: a diagnostic that takes the
                      object's position, and so the averaging over places at high noise, out of the problem.
  --aux-shape W       an auxiliary loss (weight W): a linear head reads the shape from the mean of the middle block's
                      output tokens (cross-entropy, captioned samples only). At high noise only the shape word can
                      tell it, so the loss pulls the word's information into the image tokens, where the
                      denoising loss can then use it (the idea of representation-alignment losses).
  --shape-mix F       that share of every batch from --shape-only's scenes, all run long (the full world for the rest).
  --shape-first M     a curriculum: the first M training minutes on --shape-only's scenes, then the full world.
  --blend F           that share of every batch is a caption-necessary blend: the input frame is noised from a mix
                      (1 - l) a + l m of the scene's latent a and the mean m of the same scene drawn with each of the
                      five shapes (same place, size, colour, background), l ~ U(0, 1), at noise >= 0.25 (see
                      --blend-floor); the target stays a. The noised input then shows where the object is and its
                      colour, but its outline only partly, so the shape word is what tells the network which
                      outline to draw, at every noise level, not only in the narrow band where plain training
                      needs it.
  --blend-floor S     the blended share's lowest noise level (0.25); below 0.25 its loss keeps 0.25's weight, so a
                      nearly clean blend (an outline the network should redraw) does not swamp the loss.
  --blend-with other  blend with the same scene drawn with one of the four other shapes instead of the five-shape
                      mean: the input shows a wrong outline, which only the word can overrule.
  --lr R              AdamW's learning rate after the 200 warm-up steps (5e-4).
  --schedule recipe   the clip recipe's schedule: after the warm-up the rate falls on a cosine to a tenth of --lr at
                      --steps (common.lr_at), and the EMA decays by 0.999 rather than 0.998.
  --decay F           the learning rate falls linearly to 0 over the last share F of the training minutes (the
                      budget is wall time, so the schedule is too); constant by default.
  --text-lr K         the text path's learning rate K times the rest's: the caption states' embedding MLP and the
                      cross-attention's key and value projections (and key norms).
  --guidance G[,G2..] the guidance scale the judging samples with (4); the final held-out judging is repeated at
                      each further scale (the run's JSON: guidance_G2).
  --outline W         each latent position's loss weighted 1 + W d / mean(d), d the squared distance there between
                      the scene's latent and the mean of its five shapes (the outline band: where the shape word
                      is what decides the pixel), so the few positions that carry the shape are not drowned by the
                      many that carry colour, background and place.
  --compile           the training forward pass through torch.compile: with --threads 2 on this 2-core machine a
                      run makes 2.7x the steps of an eager one-thread run (step_time.py; the first three rounds
                      ran that way, two runs side by side).
  --captions recipe   train on the clip recipe's captions (three phrasings a scene from sora_cli.tiny.captions, with
                      its synonyms and templates, one drawn a sample) instead of the fixed template; the judging
                      keeps the fixed template.
  --scenes recipe     train on the first frames of the clip recipe's own scenes (world.sample_scene with
                      clip_recipe.patch applied: its sizes, which a moving object's path caps, two objects in 30%,
                      any motion, which recipe captions name) drawn at 64x64, instead of still single objects scaled
                      by --size-scale; the judging keeps the proxy's held-out stills.
  --buckets recipe    draw each training scene at one of the clip recipe's five aspect-ratio buckets (48x80, 48x64,
                      64x64, 64x48, 80x48, one drawn uniformly a scene, as dit.draw_clips does), an object's size
                      measured against the shorter side as the world does; each batch from one bucket, chosen in
                      proportion to its scenes (as the recipe does); the judging keeps 64x64.
  --images N          train on the first N of the 4096 scenes only (the recipe encodes 2000 clips).
  --one-partner       each scene's blend partner is one other shape fixed for the run (the recipe caches one partner
                      clip a scene) rather than any of the four others, drawn afresh each time.
  --steps N           stop after N training steps (or the minutes, whichever comes first), for step-matched runs.
  --shape-only        every object red on black: the shape word is the only word that varies (a diagnostic: can
                      the shape be learnt at all when no other word competes for the network's first steps?).

Writes research/tiny_redesign/runs/NAME.json (command, steps, s/step, loss, judged shares) and NAME.png (5 shapes
x 3 seeds, "a red SHAPE on a white background").
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research" / "probes"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from sora_cli import Pipeline  # noqa: E402
from sora_cli.models.wan.transformer import TransformerConfig, WanTransformer, frame_timesteps_to_tokens  # noqa: E402
from sora_cli.tiny import captions, judge, world  # noqa: E402
from sora_cli.tiny.train.common import Ema, descend, fast_bf16, lr_at  # noqa: E402
from sora_cli.tiny.train.dit import MIN_SIGMA, TINY_DIT  # noqa: E402

from learn_layout import IMAGES, still_scenes  # noqa: E402
from probe_word_use import caption  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = Path("/tmp/tiny_redesign_cache")
GRID = ("red", "white")  # colour and background of the picture grid
BLEND_FLOOR = 0.25  # the blends' default lowest noise level; a blend's loss weight never exceeds this level's


STEPS_UNSET = 10 ** 9  # --steps' default: the minutes end the run
PLACE = "random"  # set from --place
RECIPE_CAPTIONS = False  # set from --captions
RECIPE_SCENES = False  # set from --scenes
BUCKETS = False  # set from --buckets
SHAPE_ONLY = False  # set from --shape-only


def scaled(scenes: list[world.Scene], k: float) -> list[world.Scene]:
    for s in scenes:
        s.objects[0].size = min(s.objects[0].size * k, world.MAX_SIZE)
        if PLACE == "centre":
            s.objects[0].x = s.objects[0].y = 0.5
        if SHAPE_ONLY:
            s.objects[0].color, s.background = "red", "black"
    return scenes


class Tokens(nn.Module):
    """Three learned context tokens a caption: its colour, shape and background word (or null tokens)."""

    def __init__(self, dim: int = 384):
        super().__init__()
        self.colour = nn.Embedding(len(world.OBJECT_COLORS), dim)
        self.shape = nn.Embedding(len(world.SHAPES), dim)
        self.background = nn.Embedding(len(world.BACKGROUNDS), dim)
        self.null = nn.Parameter(torch.randn(3, dim))

    @staticmethod
    def ids(text: str) -> tuple[int, int, int] | None:
        if not text.strip():
            return None
        w = text.split()  # "a(n) {colour} {shape} on a {background} background"
        return world.OBJECT_COLORS.index(w[1]), world.SHAPES.index(w[2]), world.BACKGROUNDS.index(w[5])

    def forward(self, ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """ids (B, 3) long, drop (B,) bool -> (B, 3, dim)."""
        tok = torch.stack([self.colour(ids[:, 0]), self.shape(ids[:, 1]), self.background(ids[:, 2])], 1)
        return torch.where(drop[:, None, None], self.null.expand_as(tok), tok)

    def encode(self, texts: list[str]) -> torch.Tensor:
        parsed = [self.ids(t) for t in texts]
        ids = torch.tensor([p or (0, 0, 0) for p in parsed])
        return self(ids, torch.tensor([p is None for p in parsed]))


class Net(nn.Module):
    def __init__(self, dit: WanTransformer, tokens: Tokens | None, aux: bool = False):
        super().__init__()
        self.dit, self.tokens = dit, tokens
        self.aux = nn.Linear(dit.config.dim, len(world.SHAPES)) if aux else None
        self.middle: torch.Tensor | None = None  # the middle block's output (B, L, D), kept by a hook
        if aux:
            dit.blocks[len(dit.blocks) // 2 - 1].register_forward_hook(lambda m, i, o: setattr(self, "middle", o))


def transformer_config(patch: int, width: int, layers: int = 6) -> TransformerConfig:
    """sora-tiny's transformer with other patches, width (64-d heads, FFN 4x as wide) and depth."""
    return TransformerConfig.from_dict(dict(TINY_DIT, patch_size=(1, patch, patch), num_layers=layers,
                                            num_attention_heads=width // 64, ffn_dim=4 * width))


def training_scenes(k: float) -> list[world.Scene]:
    """The training set's scenes: still single objects scaled by k, or with --scenes recipe the clip recipe's."""
    if RECIPE_SCENES:
        rng = np.random.default_rng(0)
        return [world.sample_scene(rng, "train") for _ in range(IMAGES)]
    return scaled(still_scenes("train", IMAGES, 0), k)


def frame_sizes(n: int, buckets: bool) -> list[tuple[int, int]]:
    """Each of n training scenes' (height, width): 64x64, or with `buckets` (--buckets recipe) one of the recipe's
    buckets of 64x64's area."""
    if not buckets:
        return [(64, 64)] * n
    sizes = sorted({world.bucket_size(aw, ah, 64 * 64) for aw, ah in world.ASPECTS})
    return [sizes[i] for i in np.random.default_rng(7).integers(len(sizes), size=n)]


def by_size(n: int) -> dict[str, torch.Tensor]:
    """{"HxW": the indices of the training scenes drawn at that size}."""
    out: dict[str, list[int]] = {}
    for i, (h, w) in enumerate(frame_sizes(n, BUCKETS)):
        out.setdefault(f"{h}x{w}", []).append(i)
    return {k: torch.tensor(v) for k, v in out.items()}


def encode(pipe: Pipeline, scenes: list[world.Scene]) -> dict[str, torch.Tensor]:
    """The scenes' latents {"HxW": (n, 16, 1, H/4, W/4)}, in scene order within each size (as by_size)."""
    out = {}
    for size, idx in by_size(len(scenes)).items():
        h, w = map(int, size.split("x"))
        out[size] = torch.cat([pipe.encode(world.draw(scenes[i], 1, h, w)) for i in idx.tolist()])
    return out


def save_cache(tensors: dict, path: Path) -> None:
    """A dict of tensors, or of dicts of tensors one level deep (latents by size), as safetensors ("a/b" keys)."""
    flat = {}
    for k, v in tensors.items():
        for name, t in (v.items() if isinstance(v, dict) else [("", v)]):
            flat[f"{k}/{name}" if name else k] = t.contiguous().clone()  # clone: safetensors refuses shared storage
    path.parent.mkdir(exist_ok=True)
    save_file(flat, str(path))


def load_cache(path: Path) -> dict:
    """save_cache's dict back."""
    out: dict = {}
    for key, t in load_file(str(path)).items():
        k, _, name = key.partition("/")
        if name:
            out.setdefault(k, {})[name] = t
        else:
            out[k] = t
    return out


def sized(x: torch.Tensor | dict) -> dict[str, torch.Tensor]:
    """A cache's latents by size (caches of 64x64 frames only hold one tensor)."""
    return x if isinstance(x, dict) else {"64x64": x}


def cache_path(what: str, k: float) -> Path:
    """Where the training set's latents (or their five-shape means) for this world are cached."""
    tags = ("_centre" if PLACE == "centre" else "") + ("_shape" if SHAPE_ONLY else "")
    tags += "_recipescenes" if RECIPE_SCENES else ""
    tags += "_buckets" if BUCKETS else ""
    tags += "_recipecap" if RECIPE_CAPTIONS and what == "train" else ""
    return CACHE / f"{what}_k{k}{tags}.safetensors"


def data(pipe: Pipeline, k: float) -> tuple[dict, torch.Tensor, torch.Tensor, list[world.Scene]]:
    """Latents by size {"HxW": (n, 16, 1, H/4, W/4)} (as encode), caption states (N, 40, 384) fp16->fp32 (with
    --captions recipe (N, 3, 40, 384): three phrasings a scene), word ids (N, 3), cached in /tmp."""
    scenes = training_scenes(k)
    path = cache_path("train", k)
    if path.exists():
        d = load_cache(path)
    else:
        with torch.no_grad():
            drawn = path.with_name(path.name.replace("_recipecap", ""))  # the same stills, captioned otherwise
            latents = load_cache(drawn)["latents"] if drawn.exists() and drawn != path else \
                encode(pipe, scenes)
            if RECIPE_CAPTIONS:
                rng = np.random.default_rng(0)
                phrased = [captions.caption(s, rng, "train") for s in scenes for _ in range(3)]
                texts = pipe.encode_text(phrased).half().unflatten(0, (len(scenes), 3))
            else:
                texts = pipe.encode_text([caption(s.objects[0], s.background) for s in scenes]).half()
        d = dict(latents=latents, texts=texts)
        save_cache(d, path)
    ids = torch.tensor([(world.OBJECT_COLORS.index(s.objects[0].color), world.SHAPES.index(s.objects[0].shape),
                         world.BACKGROUNDS.index(s.background)) for s in scenes])
    return sized(d["latents"]), d["texts"].float(), ids, scenes


def five_shapes(pipe: Pipeline, k: float, each: bool = False) -> dict[str, torch.Tensor]:
    """Each training scene drawn with each of the five shapes, by size (as encode): the mean latent (n, 16, 1, h, w),
    or with `each` all five (5, n, 16, 1, h, w) in world.SHAPES' order, half precision; cached in /tmp."""
    path = cache_path("shapes5" if each else "mean5", k)
    if path.exists():
        return sized(load_cache(path))
    scenes = training_scenes(k)
    drawn = []
    with torch.no_grad():
        for shape in world.SHAPES:
            for s in scenes:
                s.objects[0].shape = shape
            drawn.append(encode(pipe, scenes))
    out = {b: torch.stack([d[b] for d in drawn]) for b in drawn[0]}
    out = {b: x.half() if each else x.mean(0) for b, x in out.items()}
    save_cache(out, path)
    return out


Latents = dict[str, torch.Tensor] | None


def blend_partners(pipe: Pipeline, args: argparse.Namespace) -> tuple[Latents, Latents]:
    """What a run's blends and outline weights need: the five-shape mean latents, and for --blend-with other all five
    drawings (the mean then taken from them); None where not needed."""
    if args.blend and args.blend_with == "other":
        each5 = five_shapes(pipe, args.size_scale, each=True)
        return {b: x.float().mean(0) for b, x in each5.items()}, each5
    if args.blend or args.outline:
        return five_shapes(pipe, args.size_scale), None
    return None, None


def train(pipe: Pipeline, args: argparse.Namespace) -> tuple[Net, dict]:
    """Trains for args.minutes of wall time; every args.every minutes the EMA weights so far are judged on the
    held-out set (the clock is stopped meanwhile), to show the trend."""
    global SHAPE_ONLY
    latents, texts, ids, _ = data(pipe, args.size_scale)
    if args.shape_first or args.shape_mix:  # the same scenes, red on black
        SHAPE_ONLY = True
        first_stage = data(pipe, args.size_scale)[:3]
        SHAPE_ONLY = False
    full = (latents, texts, ids)
    # a batch is one frame size's scenes (the first --images of them), the size drawn in proportion to its scenes
    scenes_at = {b: i[i < args.images] for b, i in by_size(IMAGES).items()}
    sizes = sorted(scenes_at)
    size_weights = torch.tensor([len(scenes_at[b]) for b in sizes], dtype=torch.float)
    mean5, each5 = blend_partners(pipe, args)
    mixed = first_stage if args.shape_mix else None
    first_stage = first_stage if args.shape_first else None
    with torch.no_grad():
        empty = pipe.encode_text([""])[0].float()
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    torch.manual_seed(0)
    dit = WanTransformer(transformer_config(args.patch, args.width, args.layers))
    net = Net(dit, Tokens() if args.cond == "tokens" else None, args.aux_shape > 0).train()
    print(f"{sum(t.numel() for t in net.parameters()) / 1e6:.2f} M parameters", flush=True)
    # the text path (the caption states' embedding and the cross-attention's keys and values) may learn faster
    text_path = ("condition_embedder.text_embedder.", "attn2.to_k.", "attn2.to_v.", "attn2.norm_k.")
    text = {n for n, _ in net.named_parameters() if any(k in n for k in text_path)}
    groups = [dict(params=[p for n, p in net.named_parameters() if (n in text) == is_text],
                   scale=args.text_lr if is_text else 1.0) for is_text in (True, False)]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = Ema(net, 0.999 if args.schedule == "recipe" else 0.998)
    # one graph a frame size: dynamic shapes would be compiled as one slow general graph
    forward = torch.compile(net.dit, dynamic=False) if args.compile else net.dit
    if args.compile and len(sizes) > 1:  # the rope tables of every frame size up front: the transformer's one-entry
        rope, tables = net.dit._rope, {}  # cache would enter each graph's guards and recompile it at each new size
        for size in sizes:
            grid = net.dit.token_grid(*latents[size].shape[2:])
            tables[grid] = rope(grid, torch.device("cpu"))
        net.dit._rope = lambda grid, device: tables[grid] if grid in tables else rope(grid, device)
    gen = torch.Generator().manual_seed(0)
    if args.one_partner:  # each scene's other shape, as an offset from its own in world.SHAPES
        fixed_shift = torch.randint(1, len(world.SHAPES), (IMAGES,), generator=torch.Generator().manual_seed(1))
    started, step, smooth, log, trend, paused = time.time(), 0, None, [], [], 0.0
    aux_smooth = None  # the auxiliary shape loss (log 5 = 1.61: the shape not read at all)
    bf16 = fast_bf16(torch.device("cpu"))  # float32 where the CPU would emulate bf16
    next_check = args.every * 60 if args.every else float("inf")
    while time.time() - started - paused < args.minutes * 60 and step < args.steps:
        if time.time() - started - paused >= next_check:
            t = time.time()
            snapshot = copy.deepcopy(net)
            snapshot.load_state_dict(ema.shadow)
            attach(pipe, snapshot.eval(), args.target)
            with torch.inference_mode():
                figures = judge_heldout(pipe, args.size_scale, args.heldout, args.guidance[0])
            figures["follow"] = follow(pipe, snapshot, args.target, args.size_scale)
            trend.append(dict(step=step, minutes=round(next_check / 60, 1), **figures))
            print("trend", json.dumps(trend[-1]), flush=True)
            paused += time.time() - t
            next_check += args.every * 60
        b = args.batch
        if args.shape_first and time.time() - started - paused >= args.shape_first * 60 and first_stage:
            first_stage = None
            print(f"step {step}: the full world from here", flush=True)
        latents, texts, ids = first_stage or full
        g = sizes[int(torch.multinomial(size_weights, 1, generator=gen))] if len(sizes) > 1 else sizes[0]
        j = torch.randint(len(scenes_at[g]), (b,), generator=gen)  # the batch's places in its size's latents
        idx = scenes_at[g][j]  # and its scenes
        x0, states, words = latents[g][j], texts[idx], ids[idx]
        if mixed is not None:  # the first share of the batch from the shape-only scenes
            m = round(args.shape_mix * b)
            x0, states, words = (torch.cat([x[:m], y[m:]]) for x, y in
                                 zip((mixed[0][g][j], mixed[1][idx], mixed[2][idx]), (x0, states, words)))
        drop = torch.rand(b, generator=gen) < 0.1
        if args.noise == "shift3":
            u = torch.rand(b, generator=gen)
            sigma = 3 * u / (1 + 2 * u)
        elif args.noise == "logitnormal":
            sigma = torch.sigmoid(torch.randn(b, generator=gen))
        else:  # band: half the batch as shift 3, half uniform in [0.85, 1), where the frame shows the object's place
            u = torch.rand(b, generator=gen)  # but not its shape (word_signal.py)
            sigma = torch.where(torch.arange(b) < b // 2, 3 * u / (1 + 2 * u), 0.85 + 0.15 * u)
        noise = torch.randn(x0.shape, generator=gen)
        if net.tokens is None:
            if states.dim() == 4:  # one of each scene's phrasings
                states = states[torch.arange(b), torch.randint(states.shape[1], (b,), generator=gen)]
            context = torch.where(drop[:, None, None], empty, states)
        else:
            context = net.tokens(words, drop)
        left = 1 - (time.time() - started - paused) / (args.minutes * 60)  # the share of the budget still to go
        if args.schedule == "recipe":
            rate = lr_at(step, args.steps, args.lr, 200)
        else:
            rate = args.lr * min(1.0, (step + 1) / 200, left / args.decay if args.decay else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = rate * group["scale"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            source = x0  # what is noised; the target stays x0 (or its velocity)
            if mean5 is not None:  # the first share of the batch a caption-necessary blend
                blended = torch.arange(b) < round(args.blend * b)
                lam = torch.where(blended, torch.rand(b, generator=gen), torch.zeros(b))[:, None, None, None, None]
                sigma = torch.where(blended, sigma.clamp(min=args.blend_floor), sigma)
                if each5 is None:
                    partner = mean5[g][j]
                else:  # the same scene with one of the four other shapes
                    n = len(world.SHAPES)
                    shift = fixed_shift[idx] if args.one_partner else torch.randint(1, n, (b,), generator=gen)
                    other = (words[:, 1] + shift) % n
                    partner = each5[g][other, j].float()
                source = (1 - lam) * x0 + lam * partner
            s5 = sigma[:, None, None, None, None]
            out = forward((1 - s5) * source + s5 * noise, sigma * 1000, context).float()  # one timestep a sample
            if args.target == "v":
                loss = (out - (noise - x0)).pow(2).mean()
            else:  # dit_loss's weighting: the x0 error over max(sigma, MIN_SIGMA)^2
                weight = 1 / s5.clamp(min=MIN_SIGMA) ** 2
                if mean5 is not None:  # a blend's weight as at BLEND_FLOOR at most, whatever its floor
                    capped = weight.clamp(max=BLEND_FLOOR ** -2)
                    weight = torch.where(blended[:, None, None, None, None], capped, weight)
                if args.outline:  # (B, 1, 1, H, W): where this shape's latent differs from the five shapes' mean
                    d = (x0 - mean5[g][j]).pow(2).sum(1, keepdim=True)
                    weight = weight * (1 + args.outline * d / d.mean((2, 3, 4), keepdim=True).clamp(min=1e-6))
                loss = ((out - x0).pow(2) * weight).mean()
        if net.aux is not None:
            logits = net.aux(net.middle.float().mean(1))  # (b, shapes)
            aux = nn.functional.cross_entropy(logits, words[:, 1], reduction="none")
            aux = (aux * ~drop).sum() / max(1, int((~drop).sum()))
            aux_smooth = float(aux) if aux_smooth is None else 0.98 * aux_smooth + 0.02 * float(aux)
            loss = loss + args.aux_shape * aux
            net.middle = None  # a graph's tensor: not to be kept (or deep-copied with the network)
        value = descend(loss, optimizer)
        ema.update(net, step)
        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
        step += 1
        if step % 250 == 0:
            spent = time.time() - started - paused
            aux_text = "" if aux_smooth is None else f", shape loss {aux_smooth:.3f}"
            print(f"step {step}: {spent / step:.3f} s a step, loss {smooth:.4f}{aux_text}", flush=True)
            log.append((step, round(spent, 1), round(smooth, 4)))
    spent = time.time() - started - paused
    print(f"{step} steps in {spent / 60:.1f} min", flush=True)
    net.load_state_dict(ema.shadow)
    return net.eval(), dict(steps=step, s_per_step=round(spent / step, 3), final_loss=round(smooth, 4),
                            train_minutes=round(spent / 60, 1), trend=trend, loss_log=log)


def attach(pipe: Pipeline, net: Net, target: str) -> None:
    """Judge with the pipeline's own sampler, its transformer (and text encoding) replaced by the trained ones."""
    for p in net.parameters():
        p.requires_grad_(False)
    pipe.transformer = net.dit
    if target == "v":
        pipe.spec = dataclasses.replace(pipe.spec, sampler=dataclasses.replace(pipe.sampler, prediction="flow_prediction"))
    if net.tokens is not None:
        tokens = net.tokens
        pipe.encode_text = lambda prompts: tokens.encode(prompts).to(pipe.device, pipe.dtype)


@torch.inference_mode()
def follow(pipe: Pipeline, net: Net, target: str, k: float, count: int = 40) -> dict:
    """probe_word_use.py's figure for this network: two training scenes that differ in one word (shape or colour),
    their latents a and b; the midpoint (a + b) / 2 noised to s; the x0 estimates with a's and b's captions;
    follow = <x0_b - x0_a, b - a> / |b - a|^2 (1: the word alone moves the estimate from a to b; 0: ignored).
    Guidance off, one forward pass each; the median over `count` pairs, per level."""
    from probe_word_use import pair
    rng, gen = np.random.default_rng(5), torch.Generator().manual_seed(5)
    out = {}
    for word in ("shape",) if SHAPE_ONLY else ("shape", "colour"):
        pairs = []
        while len(pairs) < count:
            p = pair(rng, word)
            if p is not None:
                pairs.append(scaled(list(p), k))
        a = torch.cat([pipe.encode(world.draw(x, 1, 64, 64)) for x, _ in pairs])
        b = torch.cat([pipe.encode(world.draw(y, 1, 64, 64)) for _, y in pairs])
        texts = [caption(x.objects[0], x.background) for x, _ in pairs] + \
                [caption(y.objects[0], y.background) for _, y in pairs]
        context = net.tokens.encode(texts) if net.tokens is not None else pipe.encode_text(texts).float()
        grid = net.dit.token_grid(*a.shape[2:])
        for s in (0.5, 0.7, 0.9):
            xt = (1 - s) * (a + b) / 2 + s * torch.randn(a.shape, generator=gen)
            xt2 = torch.cat([xt, xt])
            t = frame_timesteps_to_tokens(torch.full((2 * count, 1), s * 1000.0), grid)
            y = net.dit(xt2, t, context).float()
            x0 = xt2 - s * y if target == "v" else y
            out[f"{word}@{s}"] = along(x0[count:] - x0[:count], b - a)
    return out


def along(d: torch.Tensor, ab: torch.Tensor) -> float:
    """The median over samples of how far the moves d go along the moves ab: <d, ab> / |ab|^2."""
    d, ab = d.flatten(1), ab.flatten(1)
    return round(float(((d * ab).sum(1) / ab.pow(2).sum(1)).median()), 3)


def draw_batch(pipe: Pipeline, prompts: list[str], seeds: list[int], guidance: float = 4.0) -> list[np.ndarray]:
    """One 64x64 frame a prompt (20 steps, one pass), the jobs denoised as one batch (Pipeline.sample: each the
    latents it gets alone, up to rounding), then decoded one by one."""
    jobs = [pipe.resolve(p, height=64, width=64, num_frames=1, seed=s, passes=1, guidance_scale=guidance)
            for p, s in zip(prompts, seeds)]
    latents = pipe.sample(jobs)
    return [pipe.decode(latents[i:i + 1]) for i in range(len(jobs))]


def judge_heldout(pipe: Pipeline, k: float, count: int, guidance: float, split: str = "heldout") -> dict:
    hits: dict[str, list[bool]] = {"color": [], "shape": [], "background": []}
    shapes: dict[str, int] = {}
    scenes = scaled(still_scenes(split, count, 1 if split == "heldout" else 3), k)
    clips = draw_batch(pipe, [caption(s.objects[0], s.background) for s in scenes], list(range(count)), guidance)
    for scene, frames in zip(scenes, clips):
        found = judge.judge_clip(frames, world.FPS)
        verdict = judge.agreement(judge.scene_facts(scene), found)
        shapes[str(found.shape)] = shapes.get(str(found.shape), 0) + 1
        for key in hits:
            hits[key].append(verdict[key])
    by_word = {w: [ok for scene, ok in zip(scenes, hits["shape"]) if scene.objects[0].shape == w] for w in world.SHAPES}
    return {**{k_: round(float(np.mean(v)), 2) for k_, v in hits.items()}, "judged_shapes": shapes,
            "shape_by_word": {w: f"{sum(v)}/{len(v)}" for w, v in by_word.items()}}


def grid(pipe: Pipeline, path: Path, guidance: float) -> None:
    from PIL import Image
    colour, bg = GRID
    prompts = [f"a {colour} {s} on a {bg} background" for _ in range(3) for s in world.SHAPES]
    frames = [f[0] for f in draw_batch(pipe, prompts, [i // 5 for i in range(15)], guidance)]
    rows = [np.concatenate(frames[5 * r:5 * r + 5], 1) for r in range(3)]
    Image.fromarray(np.concatenate(rows, 0)).resize((5 * 128, 3 * 128), Image.NEAREST).save(path, optimize=True)


def write_record(record: dict, name: str, judged_since: float) -> None:
    """runs/NAME.json: a run's figures with its command and the judging's minutes; printed without the loss log."""
    script = Path(sys.argv[0]).name
    record |= dict(name=name, command=f"python research/tiny_redesign/{script} " + " ".join(sys.argv[1:]),
                   judge_minutes=round((time.time() - judged_since) / 60, 1), threads=torch.get_num_threads())
    (HERE / "runs" / f"{name}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "loss_log"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cond", choices=("text", "tokens"), default="text")
    parser.add_argument("--noise", choices=("shift3", "logitnormal", "band"), default="shift3")
    parser.add_argument("--target", choices=("x0", "v"), default="x0")
    parser.add_argument("--size-scale", type=float, default=1.0)
    parser.add_argument("--patch", type=int, choices=(1, 2, 4), default=4)
    parser.add_argument("--width", type=int, choices=(64, 128, 192, 256, 384), default=256,
                        help="the transformer's width (64-d attention heads, an FFN 4x as wide)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--place", choices=("random", "centre"), default="random")
    parser.add_argument("--shape-only", action="store_true")
    parser.add_argument("--blend", type=float, default=0.0)
    parser.add_argument("--blend-floor", type=float, default=BLEND_FLOOR,
                        help="the blended share's lowest noise level")
    parser.add_argument("--blend-with", choices=("mean", "other"), default="mean")
    parser.add_argument("--aux-shape", type=float, default=0.0)
    parser.add_argument("--outline", type=float, default=0.0)
    parser.add_argument("--text-lr", type=float, default=1.0)
    parser.add_argument("--shape-first", type=float, default=0.0)
    parser.add_argument("--shape-mix", type=float, default=0.0)
    parser.add_argument("--captions", choices=("template", "recipe"), default="template")
    parser.add_argument("--scenes", choices=("still", "recipe"), default="still")
    parser.add_argument("--buckets", choices=("none", "recipe"), default="none")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=STEPS_UNSET)
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--one-partner", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--schedule", choices=("constant", "recipe"), default="constant")
    parser.add_argument("--decay", type=float, default=0.0,
                        help="the learning rate falls linearly to 0 over that last share of the training minutes")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW's learning rate after the warm-up")
    parser.add_argument("--guidance", type=lambda v: [float(x) for x in v.split(",")], default=[4.0],
                        help="the judging guidance scale; further comma-separated ones judge the held-out set again")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--every", type=float, default=5.0, help="judge the EMA weights every so many minutes")
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--prepare", action="store_true", help="only encode and cache the training set")
    args = parser.parse_args()
    if args.schedule == "recipe" and args.steps == STEPS_UNSET:
        parser.error("--schedule recipe decays over --steps: give it")
    if args.threads:
        torch.set_num_threads(args.threads)
    global PLACE, SHAPE_ONLY, RECIPE_CAPTIONS, RECIPE_SCENES, BUCKETS
    PLACE, SHAPE_ONLY, RECIPE_CAPTIONS = args.place, args.shape_only, args.captions == "recipe"
    RECIPE_SCENES, BUCKETS = args.scenes == "recipe", args.buckets == "recipe"
    pipe = Pipeline.from_pretrained(None, device="cpu")
    if args.prepare:
        data(pipe, args.size_scale)
        blend_partners(pipe, args)
        return
    net, record = train(pipe, args)
    save_cache(net.state_dict(), CACHE / f"{args.name}.safetensors")  # the EMA weights, for a later look
    attach(pipe, net, args.target)
    t = time.time()
    with torch.inference_mode():
        record |= judge_heldout(pipe, args.size_scale, args.heldout, args.guidance[0])
        for g in args.guidance[1:]:  # the held-out shares again at each further guidance scale
            record[f"guidance_{g:g}"] = judge_heldout(pipe, args.size_scale, args.heldout, g)
        record["follow"] = follow(pipe, net, args.target, args.size_scale)
        record["train_split"] = judge_heldout(pipe, args.size_scale, args.heldout, args.guidance[0], "train")
        out = HERE / "runs"
        out.mkdir(exist_ok=True)
        grid(pipe, out / f"{args.name}.png", args.guidance[0])
    write_record(record, args.name, t)


if __name__ == "__main__":
    main()
