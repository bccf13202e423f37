"""How long one proxy training step takes (forward, backward, AdamW) on this machine, by thread count, compilation
and precision, at proxy.py's shapes (batch 32 of 16x16x16 latents, three word tokens).

    python research/tiny_redesign/step_time.py [--patch 2] [--width 128] [--batch 32]
"""

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from proxy import Net, Tokens, transformer_config  # noqa: E402
from sora_cli.models.wan.transformer import WanTransformer  # noqa: E402


def step_ms(threads: int, compiled: bool, bf16: bool, patch: int, width: int, batch: int, steps: int = 30) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = Net(WanTransformer(transformer_config(patch, width)), Tokens()).train()
    forward = torch.compile(net.dit) if compiled else net.dit
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-4)
    x, sigma = torch.randn(batch, 16, 1, 16, 16), torch.rand(batch)
    ids, drop = torch.randint(0, 5, (batch, 3)), torch.zeros(batch, dtype=torch.bool)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (forward(x, sigma * 1000, net.tokens(ids, drop)).float() - x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):  # compilation and warm-up
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    for bf16, compiled, threads in itertools.product((True, False), (False, True), (1, 2)):
        ms = step_ms(threads, compiled, bf16, args.patch, args.width, args.batch)
        print(f"{'bf16' if bf16 else 'fp32'}, {'compiled' if compiled else 'eager'}, {threads} thread(s): {ms:.0f} ms",
              flush=True)


if __name__ == "__main__":
    main()
