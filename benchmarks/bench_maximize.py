"""Per-channel time of activation maximization: batched and truncated vs one at a time.

Four ways to render the same ``--channels`` channels of one layer, at equal steps and size:

- ``batched+stop``: xaikit's default, every channel a batch element of one optimization,
  the forward pass ending at the layer;
- ``batched+full``: batched, but the whole network runs every step;
- ``single+stop``: one optimization per channel, forward ending at the layer;
- ``single+full``: one optimization per channel, whole network: how a Lucent-style render
  loop works (``render_vis`` per channel; it always runs the full model).

The cases are interleaved round by round; reported are median seconds per channel and the
median over rounds of each case's time relative to ``single+full`` in the same round (a
noisy shared machine slows both sides of a ratio alike), and each case's largest pixel
difference from ``batched+stop``. Goal (issue #5): ``batched+stop`` at least 3x faster per
channel than ``single+full``.

    python benchmarks/bench_maximize.py                       # resnet_small, 32 px, CPU
    python benchmarks/bench_maximize.py --device cuda --size 128 --channels 32
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from _timing import timed

import xaikit
from xaikit.filters import maximize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet_small", help="zoo architecture")
    parser.add_argument("--layer", default="features.stage1", help="layer to maximize")
    parser.add_argument("--channels", type=int, default=16, help="channels rendered")
    parser.add_argument("--size", type=int, default=32, help="image side (the zoo default)")
    parser.add_argument("--steps", type=int, default=32, help="optimization steps")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = xaikit.create_model(args.arch, num_classes=10, input_size=args.size)
    model = model.to(device).eval()
    units = list(range(args.channels))
    common = dict(steps=args.steps, size=args.size, seed=0, quiet=True)

    def batched(stop: bool) -> Callable[[], torch.Tensor]:
        return lambda: maximize(model, args.layer, units, stop=stop, **common).images

    def single(stop: bool) -> Callable[[], torch.Tensor]:
        return lambda: torch.cat(
            [maximize(model, args.layer, [u], stop=stop, **common).images for u in units]
        )

    cases = {
        "batched+stop": batched(True),
        "batched+full": batched(False),
        "single+stop": single(True),
        "single+full": single(False),
    }
    timed(cases["batched+stop"], device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    differences: dict[str, float] = dict.fromkeys(cases, 0.0)
    reference = None
    for _ in range(args.repeats):
        round_times = {}
        for name, fn in cases.items():
            seconds, images = timed(fn, device)
            round_times[name] = seconds
            if reference is None:
                reference = images
            difference = float((images - reference).abs().max())
            differences[name] = max(differences[name], difference)
        for name, seconds in round_times.items():
            times[name].append(seconds)
            ratios[name].append(round_times["single+full"] / seconds)

    where = f"{device}" + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
    print(
        f"{args.arch} {args.layer}: {args.channels} channels, {args.size}x{args.size}, "
        f"{args.steps} steps, {args.repeats} rounds, {where}"
    )
    print(f"{'case':<14} {'ms/channel':>11} {'speed-up vs single+full':>24} {'max |diff|':>11}")
    for name in cases:
        per_channel = 1000 * statistics.median(times[name]) / args.channels
        speedup = statistics.median(ratios[name])
        print(f"{name:<14} {per_channel:>11.1f} {speedup:>23.2f}x {differences[name]:>11.1e}")
    print(
        "max |diff|: largest pixel difference from batched+stop. Stopping early changes no "
        "number; batching changes the convolutions' summation order (~1e-7), which the "
        "optimization can grow on an untrained network."
    )


if __name__ == "__main__":
    main()
