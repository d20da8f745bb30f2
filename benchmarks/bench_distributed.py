"""Throughput of ``xaikit explain`` on one rank and on several (``torchrun``), and the cost of
rank 0's merge.

Each run is the command a user types, timed from launch to exit (process start-up and
torchrun's rendezvous included), on the same folder, one thread per rank (torchrun's default
with several ranks; the one-rank run gets ``OMP_NUM_THREADS=1`` too, so the ratio is the gain
of the ranks, not of threads). Goal on a 2-core machine: 2 ranks >= 1.7x the images/s of 1.
The merge (rank journals folded into ``results.jsonl``, then ``results.json``) is timed on its
own on the 2-rank run's outputs and given as a share of that run.

    python benchmarks/bench_distributed.py                       # 2 ranks vs 1, CPU
    python benchmarks/bench_distributed.py --quick               # smaller folders
    python benchmarks/bench_distributed.py --device cuda --ranks 1,8   # images/s per GPU

Measured (this 2-core machine, see README "Distributed runs"): in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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


def merge_seconds(out: Path, batch_size: int, world: int, images: Path) -> float:
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
    sources = files.collect_images([images], exclude=out)
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
    parser.add_argument("--quick", action="store_true", help="48 and 144 images")
    parser.add_argument("--ranks", default="1,2", help="rank counts to compare (default 1,2)")
    parser.add_argument("--model", default="shapes-multiclass")
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-figure", action="store_true", help="skip the titled figures")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians)")
    args = parser.parse_args()
    small, large = (48, 144) if args.quick else (96, 480)
    counts = [int(v) for v in args.ranks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in (small, large):
            make_images(root / f"imgs{n}", n, args.size)
        runs: dict[tuple[int, int], list[float]] = {}
        for _repeat in range(args.repeats):  # interleaved: the machine's load hits every case
            for n in (small, large):
                for ranks in counts:
                    common = ["explain", str(root / f"imgs{n}"), "--model", args.model]
                    common += ["--method", args.method, "--batch-size", str(args.batch_size)]
                    common += ["--device", args.device, "--yes"]
                    if args.no_figure:
                        common.append("--no-figure")
                    out = root / f"out{n}-{ranks}"
                    shutil.rmtree(out, ignore_errors=True)
                    runs.setdefault((n, ranks), []).append(
                        launch(ranks, [*common, "--out", str(out)])
                    )
        seconds = {case: statistics.median(times) for case, times in runs.items()}
        base = counts[0]
        figures = "no figures" if args.no_figure else "with figures"
        print(
            f"explain, {args.model} {args.method}, {args.size} px images, batch "
            f"{args.batch_size}, {figures}, {args.device}, 1 thread per rank, median of "
            f"{args.repeats}"
        )
        print(
            "end to end (launch to exit, start-up included) on the larger folder; steady "
            f"throughput = ({large} - {small}) images / the difference of the two runs' times"
        )
        print(
            f"{'ranks':>5} {f'{large} images s':>15} {'images/s':>9} {'steady images/s':>16} "
            f"{'per rank':>9} {'speed-up':>9} {'steady speed-up':>16}"
        )

        def steady(ranks: int) -> float:
            return (large - small) / (seconds[large, ranks] - seconds[small, ranks])

        for ranks in counts:
            total = seconds[large, ranks]
            print(
                f"{ranks:>5} {total:>15.2f} {large / total:>9.1f} {steady(ranks):>16.1f} "
                f"{steady(ranks) / ranks:>9.1f} {seconds[large, base] / total:>8.2f}x "
                f"{steady(ranks) / steady(base):>15.2f}x"
            )
        top = max(counts)
        if top > 1:
            out = root / f"out{large}-{top}"
            times = []
            for _trial in range(3):
                shutil.copy(out / "results.jsonl", root / "journal.copy")
                times.append(merge_seconds(out, args.batch_size, top, root / f"imgs{large}"))
                shutil.copy(root / "journal.copy", out / "results.jsonl")
                for stale in out.glob("results.rank*.jsonl"):
                    stale.unlink()
            merge = sorted(times)[1]
            print(
                f"merge on rank 0 ({large} records, {top} rank journals, median of 3): "
                f"{merge * 1000:.0f} ms, {100 * merge / seconds[large, top]:.1f} % of the "
                f"{top}-rank run"
            )


if __name__ == "__main__":
    main()
