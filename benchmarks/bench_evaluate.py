"""Time batched deletion curves against per-sample loops.

Three ways to compute the same deletion curves (``steps + 1`` points for each of ``n`` images):

- ``batched``: one :func:`xaikit.evaluate.deletion_curve` call, every (image, step) pair a row
  of ``--batch-size``-row forward passes;
- ``per-image``: a Python loop over images, one call each (the steps of an image batched);
- ``per-step``: a loop over images and steps, one forward pass per perturbed image
  (``batch_size=1``): how per-sample metric loops work.

Repeats are interleaved and medians compared; the curves of all three are checked to agree.
Reported: seconds per run and the ratios ``per-image / batched`` and ``per-step / batched``.

Run: ``python benchmarks/bench_evaluate.py [--n 64] [--size 64] [--steps 32] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from _timing import timed

import xaikit
from xaikit.evaluate import deletion_curve, random_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-per-step", action="store_true", help="skip the slowest variant")
    args = parser.parse_args()

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=6, input_size=args.size)
    model = model.to(device).eval()
    images = torch.rand(args.n, 3, args.size, args.size, generator=generator).to(device)
    maps = random_maps((args.n, args.size, args.size), seed=1, device=device)
    target = torch.arange(args.n, device=device) % 6
    common = {"steps": args.steps, "quiet": True}

    def batched() -> torch.Tensor:
        return deletion_curve(
            model, images, maps, target, batch_size=args.batch_size, **common
        ).curve

    def per_image() -> torch.Tensor:
        rows = [
            deletion_curve(
                model, images[i : i + 1], maps[i : i + 1], target[i : i + 1],
                batch_size=args.steps + 1, **common,
            ).curve
            for i in range(args.n)
        ]  # fmt: skip
        return torch.cat(rows)

    def per_step() -> torch.Tensor:
        rows = [
            deletion_curve(
                model, images[i : i + 1], maps[i : i + 1], target[i : i + 1], batch_size=1,
                **common,
            ).curve
            for i in range(args.n)
        ]  # fmt: skip
        return torch.cat(rows)

    variants = {"batched": batched, "per-image": per_image}
    if not args.skip_per_step:
        variants["per-step"] = per_step
    batched()  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {name: [] for name in variants}
    curves: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
        for name in order:
            seconds, curves[name] = timed(variants[name], device)
            times[name].append(seconds)
    for name, curve in curves.items():
        torch.testing.assert_close(curve, curves["batched"], atol=1e-4, rtol=1e-4, msg=name)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "n": args.n,
        "size": args.size,
        "steps": args.steps,
        "forward_rows": args.n * (args.steps + 1),
        "seconds": medians,
        "ratio_per_image_over_batched": medians["per-image"] / medians["batched"],
    }
    if "per-step" in medians:
        result["ratio_per_step_over_batched"] = medians["per-step"] / medians["batched"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
