"""Time :class:`xaikit.train.Trainer` epochs on one process and on ``N`` under torchrun.

Every run trains the same ``simple_cnn`` (no BatchNorm) on the same synthetic images with
the same **global** batch; under torchrun each rank takes ``batch / N`` items a step and
the gradients are averaged (DistributedDataParallel, gloo on CPU). Reported: the median
seconds of an epoch after the first (which pays for the warm-up), the items per second and
the speed-up over one process, and the largest weight difference from the one-process run
with the same global batches (its loader a ``DistributedSampler(num_replicas=1)``).

Run: ``python benchmarks/bench_distributed_train.py [--ranks 2] [--items 2048] [--size 32]
[--batch 64] [--epochs 4] [--threads 1]``. The script launches itself with
``python -m torch.distributed.run``; on a small shared machine the ranks compete for the
cores, so the speed-up measures the overhead of the collectives rather than a gain.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import xaikit
from xaikit.train import LambdaCallback, Trainer


def make_data(n: int, size: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    return TensorDataset(x, torch.randint(0, 10, (n,), generator=g))


def make_model(size: int) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return xaikit.create_model(
            "simple_cnn", num_classes=10, in_channels=3, widths=(16, 32), input_size=size,
            batchnorm=False,
        )  # fmt: skip


def train(args: argparse.Namespace, data: object) -> tuple[Trainer, list[float]]:
    """Fit for ``args.epochs``; the trainer and each epoch's seconds."""
    stamps: list[float] = []
    clock = LambdaCallback(
        on_epoch_start=lambda t, e: stamps.append(time.perf_counter()),
        on_epoch_end=lambda t, e, logs: stamps.append(time.perf_counter()),
    )
    trainer = Trainer(
        make_model(args.size), "sgd", lr=0.05, batch_size=args.batch, seed=0, quiet=True,
        train_metrics=False, callbacks=[clock], device="cpu",
    )  # fmt: skip
    trainer.fit(data, epochs=args.epochs)
    return trainer, [b - a for a, b in zip(stamps[::2], stamps[1::2])]


def worker(args: argparse.Namespace) -> None:
    """One rank (or the one process): train and write rank 0's weights and timings."""
    from xaikit import distributed

    torch.set_num_threads(args.threads)
    group = distributed.init_from_env()
    dataset = make_data(args.items, args.size)
    if not group.distributed:  # the same global batches, in one process
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, seed=0)
        data: object = DataLoader(dataset, batch_size=args.batch, sampler=sampler)
    else:
        data = dataset
    trainer, seconds = train(args, data)
    if group.is_main:
        out = Path(args.out)
        save_file(
            {k: v.contiguous() for k, v in trainer.model.state_dict().items()},
            str(out / f"weights{group.world}.safetensors"),
        )
        (out / f"seconds{group.world}.json").write_text(json.dumps(seconds))
    distributed.shutdown()


def launch(args: argparse.Namespace, ranks: int, out: str) -> None:
    me = [sys.executable, __file__, "--worker", "--out", out]
    me += [f"--{k}={getattr(args, k)}" for k in ("items", "size", "batch", "epochs", "threads")]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "CUDA_VISIBLE_DEVICES": ""}
    if ranks == 1:
        subprocess.run(me, env=env, check=True)
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runner = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}"]
    runner += ["--master-addr=127.0.0.1", f"--master-port={port}"]
    subprocess.run([*runner, *me[1:]], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as out:
        for ranks in (1, args.ranks):
            launch(args, ranks, out)
        one = load_file(str(Path(out) / "weights1.safetensors"))
        print(f"{'processes':>9}  {'s/epoch':>8}  {'items/s':>8}  {'speed-up':>8}  max |dw|")
        base = None
        for ranks in (1, args.ranks):
            seconds = json.loads((Path(out) / f"seconds{ranks}.json").read_text())
            median = statistics.median(seconds[1:] or seconds)
            base = base or median
            weights = load_file(str(Path(out) / f"weights{ranks}.safetensors"))
            worst = max(float((weights[k] - one[k]).abs().max()) for k in one)
            print(
                f"{ranks:>9}  {median:>8.3f}  {args.items / median:>8.0f}  {base / median:>8.2f}"
                f"  {worst:.2g}"
            )


if __name__ == "__main__":
    main()
