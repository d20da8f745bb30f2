"""LIME and Kernel SHAP for several targets of one input: xaikit vs captum, one call per target.

xaikit seeds every target of an input alike, so their perturbations are the same and their
forward passes run once (:mod:`xaikit.explain.replay`); captum's ``Lime`` / ``KernelShap``
run them again for each target. Reported: median seconds of interleaved rounds, the median
per-round ratio captum / xaikit, and the largest difference between the two maps (the same
seeds: 0 expected).

    python benchmarks/bench_perturbation_targets.py                  # resnet18, 128 px, K=3
    python benchmarks/bench_perturbation_targets.py --targets 5 --samples 100
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
import torchvision
from _timing import timed
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr import KernelShap, Lime

from xaikit.explain.captum_methods import grid_segments, kernelshap, lime
from xaikit.explain.gradients import noise_seed


def captum_per_target(make, model, x, targets, mask, samples, seed, batch):
    maps = []
    for target in targets[0].tolist():
        s = noise_seed(seed, 0)
        torch.manual_seed(s)
        np.random.seed(s % (1 << 32))
        maps.append(
            make(model).attribute(
                x,
                baselines=torch.zeros_like(x),
                target=target,
                feature_mask=mask,
                n_samples=samples,
                perturbations_per_eval=batch,
            )
        )
    return torch.cat(maps).mean(1, keepdim=True).transpose(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--targets", type=int, default=3)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--segments", type=int, default=49)
    parser.add_argument("--batch", type=int, default=16, help="perturbed copies per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()  # seeded random weights
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(args.targets)[None]
    mask = grid_segments((args.size, args.size), args.segments)[None, None]
    device = torch.device("cpu")
    print(
        f"resnet18, {args.size} px, {args.targets} targets, {args.samples} samples, "
        f"{args.segments} segments, {torch.get_num_threads()} threads"
    )
    print(
        f"{'method':<11} {'xaikit s':>9} {'captum s':>9} {'captum / xaikit':>16} {'max |diff|':>11}"
    )
    for name, ours_fn, make in (
        ("lime", lime, lambda m: Lime(m, interpretable_model=SkLearnLinearRegression())),
        ("kernelshap", kernelshap, KernelShap),
    ):
        options = dict(
            seed=0, segments=mask[0, 0], n_samples=args.samples, internal_batch_size=args.batch
        )
        ours_s, theirs_s, ratios, diff = [], [], [], 0.0
        for _ in range(args.repeats):
            a, ours = timed(lambda f=ours_fn, o=options: f(model, x, targets, **o), device)
            b, theirs = timed(
                lambda m=make: captum_per_target(
                    m, model, x, targets, mask, args.samples, 0, args.batch
                ),
                device,
            )
            ours_s.append(a)
            theirs_s.append(b)
            ratios.append(b / a)
            diff = max(diff, float((ours - theirs).abs().max()))
        print(
            f"{name:<11} {statistics.median(ours_s):>9.2f} {statistics.median(theirs_s):>9.2f} "
            f"{statistics.median(ratios):>15.2f}x {diff:>11.1e}"
        )


if __name__ == "__main__":
    main()
