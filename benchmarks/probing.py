"""What the transformer probes share: the model to probe, optionally with a `sora train dit` checkpoint's EMA
weights, so that a run can be looked into while it goes on."""

from __future__ import annotations

import argparse

from sora_cli import Pipeline
from sora_cli.train.common import ema_weights


def probe_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--checkpoint", default=None, help="a DiT training checkpoint to take the EMA weights from")
    return parser


def probed_pipeline(args: argparse.Namespace) -> Pipeline:
    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    if args.checkpoint:
        pipe.transformer.load_state_dict(ema_weights(args.checkpoint), strict=True)
    return pipe
