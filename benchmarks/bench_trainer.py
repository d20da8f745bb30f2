"""Time one training epoch of :class:`xaikit.train.Trainer` against a hand-written loop.

Both train the same architecture on the same data with the same optimizer (SGD with
momentum) and batch size; repeats are interleaved (the order alternates) and the medians
compared. Goal: ``trainer / hand-written <= 1.05``.

The trainer's time includes everything a user pays per ``fit(epochs=1)``: building the
trainer, the progress bar (silenced or drawn into a buffer), the on-device running
accuracy, the end-of-epoch loss and accuracy. Three trainer variants are timed:

- ``loader``: the trainer is given the very DataLoader the hand loop iterates;
- ``dataset``: the trainer is given the Dataset and builds its own loader;
- ``progress``: as ``loader``, with the progress bar drawn (into a buffer).

Run: ``python benchmarks/bench_trainer.py [--device cpu|cuda] [--repeats 15] [--threads 1]``.
On a machine shared with other jobs use ``--threads 1``: with more torch threads than free
cores the threads spin against each other and the timings are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import xaikit
from xaikit.train import Trainer


def make_data(n: int, size: int, classes: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)
    )


def make_model(size: int, classes: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = xaikit.create_model(
        "simple_cnn", num_classes=classes, in_channels=3, widths=(16, 32, 64), input_size=size
    )
    return model.to(device)


def hand_epoch(
    model: torch.nn.Module, loader: DataLoader, lr: float, device: torch.device
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def run() -> None:
        model.train()
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def trainer_epoch(
    model: torch.nn.Module,
    data: DataLoader | TensorDataset,
    lr: float,
    batch_size: int,
    device: torch.device,
    quiet: bool = True,
) -> Callable[[], None]:
    def run() -> None:
        trainer = Trainer(
            model, "sgd", lr=lr, momentum=0.9, batch_size=batch_size, device=device, quiet=quiet
        )
        with contextlib.redirect_stderr(io.StringIO()):
            trainer.fit(data, epochs=1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    classes, lr = 10, 0.01
    dataset = make_data(args.samples, args.size, classes)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
    runs = {
        "hand-written": hand_epoch(make_model(args.size, classes, device), loader, lr, device),
        "trainer (loader)": trainer_epoch(
            make_model(args.size, classes, device), loader, lr, args.batch_size, device
        ),
        "trainer (dataset)": trainer_epoch(
            make_model(args.size, classes, device), dataset, lr, args.batch_size, device
        ),
        "trainer (progress)": trainer_epoch(
            make_model(args.size, classes, device), loader, lr, args.batch_size, device, False
        ),
    }
    for run in runs.values():  # warm up kernels and allocators
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times["hand-written"])
    steps = len(loader)
    print(
        f"one epoch: {args.samples} samples of 3x{args.size}x{args.size}, batch "
        f"{args.batch_size} ({steps} steps), simple_cnn (16, 32, 64), SGD momentum, "
        f"device {device}, torch threads {torch.get_num_threads()}, "
        f"median of {args.repeats} interleaved repeats"
    )
    for name in names:
        median = statistics.median(times[name])
        print(
            f"  {name:20s} {median * 1e3:8.1f} ms  ({median / steps * 1e3:6.2f} ms/step)  "
            f"ratio {median / base:5.3f}"
        )


if __name__ == "__main__":
    main()
