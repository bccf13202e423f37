"""How much of the caption reaches the embedded model's transformer, measured on its x0 estimates and attention.

    python research/probes/probe_caption_use.py [--model PATH] [--checkpoint WORK/dit.safetensors] [--scenes 24]

For training-split scenes with one still object, the clip is noised to a level and the transformer estimates
the clean clip twice: with the caption, and with the object's colour word swapped for another colour. The
figure per level is how far the decoded object colour moves, as a share of the distance between the two named
colours: 1 means the estimate repaints the object as asked, 0 that the colour word is ignored. It also reports
where each cross-attention layer looks: the padding rows past the prompt, the background's colour word and the
object's colour word. The judge-based figures (`eval_sora_tiny.py`) need a whole sample to be right; this
probe tells, from one forward pass, whether the network reads the object's colour from the caption at all.
`--checkpoint` probes the EMA weights of a `sora train dit` checkpoint while the run goes on.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from einops import rearrange

from sora_cli.models.wan.transformer import frame_timesteps_to_tokens
from sora_cli.tiny import captions, world

from probing import probe_parser, probed_pipeline

LEVELS = (0.5, 0.8, 0.95)


def attention_recorder(model) -> list:
    """Record each cross-attention layer's weights, (B, S) averaged over heads and image tokens."""
    records: list = []

    def hook(attn, args, kwargs, _out):
        q = rearrange(attn.norm_q(attn.to_q(args[0])), "b l (h d) -> b h l d", h=attn.heads)
        k = rearrange(attn.norm_k(attn.to_k(kwargs["context"])), "b s (h d) -> b h s d", h=attn.heads)
        records.append(torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1).mean((1, 2)))

    for block in model.blocks:
        block.attn2.register_forward_hook(hook, with_kwargs=True)
    return records


def rgb(color: str) -> np.ndarray:
    return np.array(world.COLORS[color], float) / 255


@torch.no_grad()
def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--scenes", type=int, default=24)
    args = parser.parse_args()
    pipe = probed_pipeline(args)
    model, tokenizer = pipe.transformer, pipe.text_encoder.tokenizer
    records = attention_recorder(model)
    follow: dict[float, list[float]] = {s: [] for s in LEVELS}
    share: dict[str, list[np.ndarray]] = {"padding": [], "background word": [], "object colour word": []}
    for i in range(args.scenes):
        rng = np.random.default_rng([77, i])
        scene = world.sample_scene(rng, "train", num_objects=1)
        obj = scene.objects[0]
        obj.motion = "still"
        text = captions.caption(scene, rng, "train")
        if not all(re.search(rf"\b{c}\b", text, re.IGNORECASE) for c in (obj.color, scene.background)):
            continue  # a synonym ("grey") or the colour inside another word: skip rather than guess
        others = [c for c in world.OBJECT_COLORS if c not in (obj.color, scene.background)
                  and world.legible(c, scene.background)]
        other = others[rng.integers(len(others))]
        swapped = re.sub(rf"\b{obj.color}\b", other, text, count=1, flags=re.IGNORECASE)
        frames = world.draw(scene, 5, 64, 64)
        on_object = np.abs(frames[0] / 255 - rgb(scene.background)).sum(-1) > 0.5
        if on_object.sum() < 10:
            continue  # too small to read a colour off
        x0, context = pipe.encode(frames), pipe.encode_text([text, swapped])
        ids = tokenizer.batch([text], context.shape[1])[0][0].tolist()
        length = int(context[0].ne(0).any(-1).sum())  # the prompt's rows; zeros follow
        positions = {name: ids.index(tokenizer.batch([word], 4)[0][0, 1].item())  # [CLS] word [SEP]
                     for name, word in (("background word", scene.background), ("object colour word", obj.color))}
        for s in LEVELS:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(i))
            xt = ((1 - s) * x0 + s * noise).expand(2, -1, -1, -1, -1)
            t = frame_timesteps_to_tokens(torch.full((2, x0.shape[2]), s * 1000.0), model.token_grid(*x0.shape[2:]))
            records.clear()
            estimate = model(xt, t, context)
            if pipe.sampler.prediction == "flow_prediction":  # a velocity noise - x0: take x0 from it
                estimate = xt - s * estimate
            colours = [pipe.decode(estimate[j:j + 1])[0][on_object].mean(0) / 255 for j in range(2)]
            follow[s].append(np.abs(colours[1] - colours[0]).sum() / np.abs(rgb(other) - rgb(obj.color)).sum())
            if s == 0.8:
                layers = torch.stack([r[0] for r in records])  # (layers, S): the caption's own row
                share["padding"].append(layers[:, length:].sum(-1).numpy())
                for name, pos in positions.items():
                    share[name].append(layers[:, pos].numpy())
    print(f"scenes {len(follow[LEVELS[0]])} (training split, one still object, colour words spelt plainly)")
    for s in LEVELS:
        print(f"noise {s:.2f}: the object's colour moves {np.mean(follow[s]):.0%} of the way to a swapped colour word")
    print("cross-attention share at noise 0.80, per layer:")
    for name, values in share.items():
        print(f"  {name:<20} " + " ".join(f"{v:6.1%}" for v in np.mean(values, axis=0)))


if __name__ == "__main__":
    main()
