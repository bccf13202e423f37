"""Print the results of research/tiny_redesign/runs/*.json as markdown tables."""

import json
from pathlib import Path

runs = [json.loads(p.read_text()) for p in sorted((Path(__file__).parent / "runs").glob("*.json"),
                                                 key=lambda p: p.stat().st_mtime)]
print("| run | command (`python research/tiny_redesign/proxy.py ...`) | steps (s/step) | final loss | colour | shape "
      "| background | shape, train-split combos | shape at each check / end |")
print("|---|---|---|---|---|---|---|---|---|")
for r in runs:
    trend = " / ".join(f"{t['shape']:.0%}" for t in r["trend"]) + f" / {r['shape']:.0%}"
    train = f"{r['train_split']['shape']:.0%}" if "train_split" in r else "-"
    args = r["command"].replace("python research/tiny_redesign/proxy.py ", "")
    print(f"| {r['name']} | `{args}` | {r['steps']} ({r['s_per_step']}) | {r['final_loss']} | {r['color']:.0%} | "
          f"{r['shape']:.0%} | {r['background']:.0%} | {train} | {trend} |")
print()
print("| run | follow: shape at noise 0.5 / 0.7 / 0.9 | colour at 0.5 / 0.7 / 0.9 | judged shapes (held-out) |")
print("|---|---|---|---|")
for r in runs:
    f = r.get("follow")
    sh = " / ".join(str(f[f"shape@{s}"]) for s in (0.5, 0.7, 0.9)) if f else "-"
    co = " / ".join(str(f[f"colour@{s}"]) for s in (0.5, 0.7, 0.9)) if f and "colour@0.5" in f else "-"
    print(f"| {r['name']} | {sh} | {co} | {r['judged_shapes']} |")
