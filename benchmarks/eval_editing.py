"""The editing targets of issue 4, measured on the embedded model from the frames alone.

    python benchmarks/eval_editing.py [--scenes 4] [--model PATH] [--steps N] [--no-memory] [--out results.json]

Inputs are clips of the synthetic world (one object moving in a straight line, training combinations), so the
object can be tracked with `sora_cli.tiny.judge.centroids`. "Change" between two frames is their mean absolute pixel
difference. Targets:
- extension (forwards and backwards): the centroid velocity over the 8 frames after the join is within 25% of
  the velocity over the 8 frames before it (|v_after - v_before| <= 0.25 |v_before|), and the change across the
  join is at most 1.5x the median change between consecutive frames of the result. Printed beside them, the
  same figures for a model that made exactly the world's own frames (the clip's true continuation or past,
  encoded and decoded by the VAE, next to the input's frames as read): the best the VAE lets any model score;
- loop (`sora loop` and `generate --loop`): the change from the last frame back to the first is at most 1.5x the
  median change (the largest change inside the transition is printed too);
- image-to-video: the first frame of the written MP4 matches the image (PSNR >= 28 dB); also printed: the
  VAE's own reconstruction of the image and the change from the first frame to the second;
- memory: a 60 s video peaks at no more than a 4 s video's memory + 20% (separate processes, loading included);
  also printed for the 60 s video: its largest change between frames over the median (a visible join between
  windows shows here) and the drift of its mean colour from the first 2 s to the last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sora_cli import Pipeline, editing
from sora_cli.clips import Clip
from sora_cli.mp4 import write_mp4
from sora_cli.tiny import captions, judge, world
from sora_cli.video import read_video

WINDOW = 8  # frames over which a velocity is measured on each side of a join


def straight_scene(rng: np.random.Generator) -> world.Scene:
    while True:
        scene = world.sample_scene(rng, "train", num_objects=1)
        if scene.objects[0].motion in world.DIRECTIONS:
            return scene


def changes(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between each pair of consecutive frames, (T - 1,)."""
    f = frames.astype(np.float32)
    return np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))


def velocity(frames: np.ndarray, fps: float) -> np.ndarray:
    """Centroid velocity (units / s) fitted over the frames where the object shows; NaN when it never does."""
    track = judge.centroids(frames)
    seen = ~np.isnan(track[:, 0])
    if seen.sum() < 2:
        return np.full(2, np.nan)
    return np.polyfit(np.arange(len(frames))[seen] / fps, track[seen], 1)[0]


def join_figures(frames: np.ndarray, join: int, fps: float) -> dict:
    """Figures for a join between frames join-1 and join."""
    before = velocity(frames[max(0, join - WINDOW):join], fps)
    after = velocity(frames[join:join + WINDOW], fps)
    c = changes(frames)
    median = float(np.median(np.delete(c, join - 1)))
    error = float(np.linalg.norm(after - before) / max(np.linalg.norm(before), 1e-9))
    if np.isnan(error):  # the object is gone after the join: the worst outcome, not a missing figure
        error = float("inf")
    return dict(velocity_error=error, join_ratio=float(c[join - 1] / max(median, 1e-9)))


def seam_figures(period: np.ndarray, transition_start: int | None = None) -> dict:
    c = changes(np.concatenate([period, period[:1]]))  # the last entry is the seam
    median = float(np.median(c[:-1]))
    out = dict(seam_ratio=float(c[-1] / max(median, 1e-9)))
    if transition_start is not None:
        out["transition_max_ratio"] = float(c[transition_start - 1:-1].max() / max(median, 1e-9))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def through_mp4(frames: np.ndarray, fps: float) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        return read_video(write_mp4(frames, Path(tmp) / "x.mp4", fps))[0]


def peak_memory_mb(model: str | None, seconds: float, steps: int | None, out: Path) -> float:
    """Peak resident memory of one `sora generate` process, loading included."""
    args = ["generate", "a red circle moving right on a black background", "--seconds", str(seconds), "--seed", "0",
            "--quiet", "--out", str(out)]
    args += (["--model", model] if model else []) + (["--steps", str(steps)] if steps else [])
    code = ("import resource, sys\nfrom sora_cli.cli import main\nsys.argv = ['sora'] + sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def long_figures(frames: np.ndarray, fps: float) -> dict:
    """Joins and drift of a long video: the largest change between frames over the median, and how far the mean
    colour of its last 2 s is from that of its first 2 s (levels, 0..255)."""
    c = changes(frames)
    span = int(2 * fps)
    drift = np.abs(frames[-span:].mean(axis=(0, 1, 2)) - frames[:span].mean(axis=(0, 1, 2))).max()
    return dict(max_change_ratio=float(c.max() / max(np.median(c), 1e-9)), colour_drift=float(drift))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the 60 s vs 4 s memory runs")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    pipe = Pipeline.from_pretrained(args.model)
    fps, size = pipe.defaults.fps, (pipe.defaults.width, pipe.defaults.height)
    settings = dict(num_steps=args.steps)
    rows: dict[str, list[dict]] = {k: [] for k in ("extend", "extend_backward", "loop", "generate_loop", "image",
                                                    "extend_true", "extend_backward_true")}
    for i in range(args.scenes):
        rng = np.random.default_rng([args.seed, i])
        scene = straight_scene(rng)
        text = captions.caption(scene, rng, "train")
        full = world.draw(scene, 33, size[1], size[0], fps)
        seed = args.seed * 1000 + i
        kw = dict(settings, seed=seed)

        clip = Clip(full[:17], fps, "clip")
        out = np.concatenate(list(editing.extend(pipe, clip, 2.0, text, **kw).chunks))
        rows["extend"].append(join_figures(out, 17, fps))
        clip_late = Clip(full[16:], fps, "clip")  # its past is frames 0..15 of the same motion
        out = np.concatenate(list(editing.extend(pipe, clip_late, 2.0, text, backward=True, **kw).chunks))
        rows["extend_backward"].append(join_figures(out, len(out) - 17, fps))
        true = pipe.decode(pipe.encode(full))  # the true frames through the VAE: what a perfect model would give
        rows["extend_true"].append(join_figures(np.concatenate([full[:17], true[17:]]), 17, fps))
        rows["extend_backward_true"].append(join_figures(np.concatenate([true[:16], full[16:]]), 16, fps))

        render = editing.loop(pipe, clip, prompt=text, **kw)
        period = np.concatenate(list(render.chunks))
        rows["loop"].append(seam_figures(period, 17))
        period = np.concatenate(list(editing.generate(pipe, text, loop=True, **kw).chunks))
        rows["generate_loop"].append(seam_figures(period))

        image = full[0]
        made = np.concatenate(list(editing.generate(pipe, text, image=Clip(image[None], None, "image"), **kw).chunks))
        c = changes(made)
        rows["image"].append(dict(psnr_written=psnr(through_mp4(made[:2], fps)[0], image),
                                  psnr_vae=psnr(pipe.decode(pipe.encode(image[None]))[0], image),
                                  first_change_ratio=float(c[0] / max(np.median(c[1:]), 1e-9))))
        print(f"scene {i}: {text!r} " + " ".join(f"{k}={v[-1]}" for k, v in rows.items()), flush=True)

    figures = {k: {m: float(np.median([r[m] for r in v])) for m in v[0]} for k, v in rows.items()}
    checks = [
        ("extension: velocity after the join within 25% of before", figures["extend"]["velocity_error"], 0.25),
        ("extension: join change / median change", figures["extend"]["join_ratio"], 1.5),
        ("backward extension: velocity within 25%", figures["extend_backward"]["velocity_error"], 0.25),
        ("backward extension: join change / median change", figures["extend_backward"]["join_ratio"], 1.5),
        ("loop: seam change / median change", figures["loop"]["seam_ratio"], 1.5),
        ("generate --loop: seam change / median change", figures["generate_loop"]["seam_ratio"], 1.5),
        ("image-to-video: first frame PSNR (dB), at least", -figures["image"]["psnr_written"], -28.0),
    ]
    if not args.no_memory:
        with tempfile.TemporaryDirectory() as tmp:
            short = peak_memory_mb(args.model, 4, args.steps, Path(tmp) / "4s.mp4")
            long = peak_memory_mb(args.model, 60, args.steps, Path(tmp) / "60s.mp4")
            figures["long_video"] = long_figures(read_video(Path(tmp) / "60s.mp4")[0], fps)
        figures["memory"] = dict(peak_4s_mb=short, peak_60s_mb=long, ratio=long / short)
        checks.append(("memory: 60 s peak / 4 s peak", long / short, 1.2))

    print(f"\nmedians over {args.scenes} scenes ({pipe.name}, {args.steps or pipe.defaults.num_steps} steps)")
    for key, values in figures.items():
        print(f"  {key:<16}" + "  ".join(f"{m} {v:.3g}" for m, v in values.items()))
    print()
    for name, value, limit in checks:
        shown, bound = (-value, -limit) if limit < 0 else (value, limit)
        print(f"  {'PASS' if value <= limit else 'FAIL'}  {name}: {shown:.3g} (target {bound:g})")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(figures=figures, scenes=rows), indent=2))


if __name__ == "__main__":
    main()
