"""Throughput of ``xaikit explain`` on one rank and on several (``torchrun``), and the cost of
rank 0's merge.

Each run is the command a user types, timed from launch to exit (process start-up and
torchrun's rendezvous included), on the same folder, one thread per rank (torchrun's default
with several ranks; the one-rank run gets ``OMP_NUM_THREADS=1`` too, so the ratio is the gain
of the ranks, not of threads). Goal on a 2-core machine: 2 ranks >= 1.7x the images/s of 1.
The merge (rank journals folded into ``results.jsonl``, then ``results.json``) is timed on its
own on the 2-rank run's outputs and given as a share of that run.

    python benchmarks/bench_distributed.py                       # 2 ranks vs 1, CPU
    python benchmarks/bench_distributed.py --quick               # a smaller folder
    python benchmarks/bench_distributed.py --device cuda --ranks 1,8   # images/s per GPU

Measured (this 2-core machine, see README "Distributed runs"): in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def launch(ranks: int, args: list[str]) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", XAIKIT_QUIET="1")
    head = [sys.executable, "-m", "xaikit"]
    if ranks > 1:
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks)]
        head += ["--standalone", "-m", "xaikit"]
    start = time.perf_counter()
    done = subprocess.run([*head, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run on {ranks} rank(s) failed:\n{done.stderr[-3000:]}")
    return elapsed


def merge_seconds(out: Path, batch_size: int, world: int) -> float:
    """Split the merged journal back into rank journals (as the ranks left them) and time
    rank 0's merge and ``results.json``."""
    from xaikit.explain import files

    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    header, records = lines[0], lines[1:]
    header_obj = json.loads(header)
    shards: list[list[str]] = [[] for _ in range(world)]
    for index, line in enumerate(records):
        shards[(index // batch_size) % world].append(line)
    (out / "results.jsonl").unlink()
    for rank, shard in enumerate(shards):
        (out / files.rank_journal_name(rank)).write_text(header + "".join(shard), "utf-8")
    sources = files.collect_images([out.parent / "imgs"], exclude=out)
    run = json.loads((out / "results.json").read_text())["run"]
    start = time.perf_counter()
    merged = files._merge_journals(out, header_obj, sources, batch_size, world)
    try:
        files._write_results(out / "results.json", merged, sources, run)
    finally:
        merged.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="96 images instead of 480")
    parser.add_argument("--ranks", default="1,2", help="rank counts to compare (default 1,2)")
    parser.add_argument("--model", default="shapes-multiclass")
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figures", action="store_true", help="also draw the titled figures")
    args = parser.parse_args()
    n = 96 if args.quick else 480
    counts = [int(v) for v in args.ranks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root / "imgs", n, args.size)
        common = ["explain", str(root / "imgs"), "--model", args.model, "--method", args.method]
        common += ["--batch-size", str(args.batch_size), "--device", args.device]
        if not args.figures:
            common.append("--no-figure")
        seconds: dict[int, float] = {}
        for ranks in counts:
            out = root / f"out{ranks}"
            seconds[ranks] = launch(ranks, [*common, "--out", str(out)])
        base = counts[0]
        print(
            f"explain {n} images of {args.size} px, {args.model} {args.method}, "
            f"batch {args.batch_size}, {args.device}, 1 thread per rank"
        )
        print(f"{'ranks':>5} {'seconds':>8} {'images/s':>9} {'per rank':>9} {'speed-up':>8}")
        for ranks in counts:
            rate = n / seconds[ranks]
            print(
                f"{ranks:>5} {seconds[ranks]:>8.2f} {rate:>9.1f} {rate / ranks:>9.1f} "
                f"{seconds[base] / seconds[ranks]:>7.2f}x"
            )
        top = max(counts)
        if top > 1:
            out = root / f"out{top}"
            for _trial in range(3):
                shutil.copy(out / "results.jsonl", root / "journal.copy")
                merge = merge_seconds(out, args.batch_size, top)
                shutil.copy(root / "journal.copy", out / "results.jsonl")
                for stale in out.glob("results.rank*.jsonl"):
                    stale.unlink()
            print(
                f"merge on rank 0 ({n} records, {top} rank journals): {merge * 1000:.0f} ms, "
                f"{100 * merge / seconds[top]:.1f} % of the {top}-rank run"
            )


if __name__ == "__main__":
    main()
