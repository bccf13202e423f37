"""Wall time and peak memory of the README's quick-start generation with the embedded model.

    python benchmarks/bench_tiny.py [--runs 3]

Each run is a fresh `sora generate` process, so model loading (and Python start-up) is included, as a user sees
it. Peak memory is the largest resident set of those processes.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red circle moving right on a black background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more options for sora generate")
    args = parser.parse_args()

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.mp4"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sora_cli", "generate", PROMPT, "--seed", str(i), "--out",
                            str(out), "--quiet", *args.extra], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"runs        {args.runs} x sora generate {PROMPT!r} {' '.join(args.extra)}")
    print(f"wall time   median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}), "
          f"model loading included")
    print(f"peak memory {peak_mb:.0f} MB (largest resident set of one run)")


if __name__ == "__main__":
    main()
