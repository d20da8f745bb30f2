"""Time the generation of the ``shapes`` and ``shapes-multilabel`` data sets.

Goal: 10,000 64x64 images (with their masks) in at most 5 s on a 2-core CPU. Each repeat runs
in a fresh process, so nothing is cached or warmed up: the figure is what a user pays on the
first ``xaikit.data.load("shapes")`` (imports excluded). The generator runs on one intra-op
thread by design (see ``xaikit.data.shapes._one_thread``). The load average is printed beside
the figures, because a machine shared with other work slows every run down.

Run: ``python benchmarks/bench_shapes_generation.py [--n 10000] [--size 64] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
from xaikit.data.shapes import generate_shapes
n, size, multilabel = (int(a) for a in sys.argv[1:4])
start = time.perf_counter()
generate_shapes(n, size, multilabel=bool(multilabel), seed=0, split="train")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def time_once(n: int, size: int, multilabel: bool) -> float:
    """Seconds to generate the data set in a fresh Python process."""
    args = [str(n), str(size), str(int(multilabel))]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPUs: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}")
    for multilabel in (False, True):
        name = "shapes-multilabel" if multilabel else "shapes"
        seconds = [time_once(args.n, args.size, multilabel) for _ in range(args.repeats)]
        print(
            f"{name:18s} n={args.n} size={args.size}: median {statistics.median(seconds):.2f} s "
            f"(min {min(seconds):.2f}, max {max(seconds):.2f}; goal <= 5 s)"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
