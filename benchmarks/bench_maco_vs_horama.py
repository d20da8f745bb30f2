"""MACO in xaikit against horama's MACO (the reference implementation) on the same model.

For each channel of ``--layer`` and each seed, both optimize the phase of the same fixed
magnitude (xaikit's default spectrum, written where horama reads its
``spectrum_decorrelated.npy``, so nothing is downloaded) on a ``canvas`` x ``canvas`` image
seen through ``crops`` random crops per step resized to the model's input, with the same
steps, learning rate (1, NAdam), noise (0.05) and value range: horama's
``values_range=(lo, hi)`` is xaikit's sigmoid image normalized with ``mean = -lo / (hi -
lo)``, ``std = 1 / (hi - lo)``. horama draws from the global RNG (seeded with
``torch.manual_seed(seed)``), xaikit from its per-unit generators (``seed=seed``).

Both final canvases are then scored the same way: the channel's mean activation averaged
over ``--eval-crops`` fixed random crops (xaikit's crop sampler, seeded, no noise) plus the
centre crop. Reported per channel: horama's and xaikit's score and their ratio; the goal
(issue, MACO) is xaikit's within 10 % of horama's or better: median ratio >= 0.9.

    python benchmarks/bench_maco_vs_horama.py                   # both models, CPU
    python benchmarks/bench_maco_vs_horama.py --models zoo --steps 32
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from torch import nn

import xaikit
from xaikit.explain.layers import resolve_layer
from xaikit.filters import maximize
from xaikit.filters.maco import MacoCrops
from xaikit.filters.spectrum import default_spectrum


def channel_score(
    model: nn.Module,
    layer: str,
    canvases: torch.Tensor,
    channels: list[int],
    size: int,
    stats: tuple[float, float],
    count: int = 16,
) -> torch.Tensor:
    """``(B,)``: channel ``channels[b]``'s mean activation on canvas ``b`` (in [0, 1]),
    averaged over ``count`` seeded random crops and the centre crop."""
    module = resolve_layer(model, layer)[1]
    crops = MacoCrops(size, count=count, noise=0.0)
    u = torch.rand(canvases.shape[0], crops.n_random, generator=torch.Generator().manual_seed(7))
    views = torch.cat(
        [crops(canvases, u).unflatten(0, (-1, count)), crops(canvases, None)[:, None]], dim=1
    )  # (B, count + 1, C, S, S)
    mean, std = stats
    captured = {}
    handle = module.register_forward_hook(lambda _m, _i, out: captured.update(out=out))
    try:
        scores = []
        with torch.no_grad():
            for b, c in enumerate(channels):
                model((views[b] - mean) / std)
                scores.append(captured["out"][:, c].flatten(1).mean(dim=1).mean())
    finally:
        handle.remove()
    return torch.stack(scores)


def horama_maco(
    model: nn.Module,
    layer: str,
    channel: int,
    *,
    steps: int,
    size: int,
    canvas: int,
    crops: int,
    values_range: tuple[float, float],
    seed: int,
    spectrum_file: str,
) -> torch.Tensor:
    """horama's ``maco`` on ``channel`` (mean activation over the crops); the canvas in
    [0, 1]."""
    from horama import maco_fv

    module = resolve_layer(model, layer)[1]
    captured = {}
    handle = module.register_forward_hook(lambda _m, _i, out: captured.update(out=out))

    def objective(images: torch.Tensor) -> torch.Tensor:
        model(images)
        return captured["out"][:, channel].mean()

    here = os.getcwd()
    try:
        os.chdir(os.path.dirname(spectrum_file))
        torch.manual_seed(seed)
        with contextlib.redirect_stderr(io.StringIO()):
            image, _ = maco_fv.maco(
                objective,
                total_steps=steps,
                learning_rate=1.0,
                image_size=canvas,
                model_input_size=size,
                noise=0.05,
                values_range=values_range,
                crops_per_iteration=crops,
                device="cpu",
            )
    finally:
        os.chdir(here)
        handle.remove()
    lo, hi = values_range
    return ((image.detach() - lo) / (hi - lo)).clamp(0, 1)


def compare(
    name: str,
    model: nn.Module,
    layer: str,
    channels: list[int],
    *,
    size: int,
    canvas: int,
    steps: int,
    seeds: list[int],
    crops: int,
    values_range: tuple[float, float],
    eval_crops: int,
) -> list[float]:
    lo, hi = values_range
    stats = (-lo / (hi - lo), 1 / (hi - lo))
    normalization = {"mean": [stats[0]] * 3, "std": [stats[1]] * 3}
    model.eval().requires_grad_(False)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        spectrum_file = os.path.join(tmp, "spectrum_decorrelated.npy")
        np.save(spectrum_file, default_spectrum(canvas).numpy())
        print(f"{name} {layer}: input {size} px, canvas {canvas}, {steps} steps, {crops} crops")
        print(f"{'channel':>7} {'seed':>4} {'horama':>9} {'xaikit':>9} {'ratio':>6}")
        for seed in seeds:
            start = time.perf_counter()
            ours = maximize(
                model,
                layer,
                channels,
                param="maco",
                steps=steps,
                size=size,
                canvas=canvas,
                crops=crops,
                seed=seed,
                normalization=normalization,
                quiet=True,
            ).images
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            theirs = torch.stack(
                [
                    horama_maco(
                        model,
                        layer,
                        c,
                        steps=steps,
                        size=size,
                        canvas=canvas,
                        crops=crops,
                        values_range=values_range,
                        seed=seed,
                        spectrum_file=spectrum_file,
                    )
                    for c in channels
                ]
            )
            theirs_s = time.perf_counter() - start
            a = channel_score(model, layer, theirs, channels, size, stats, eval_crops)
            b = channel_score(model, layer, ours, channels, size, stats, eval_crops)
            for c, x, y in zip(channels, a.tolist(), b.tolist()):
                ratio = y / x if x > 0 else float("nan")
                ratios.append(ratio)
                print(f"{c:>7} {seed:>4} {x:>9.4f} {y:>9.4f} {ratio:>6.2f}")
            print(f"  seed {seed}: xaikit {ours_s:.1f} s (batched), horama {theirs_s:.1f} s")
    finite = [r for r in ratios if r == r]
    print(
        f"{name}: xaikit / horama activation, median {statistics.median(finite):.3f}, "
        f"min {min(finite):.3f}, mean {statistics.fmean(finite):.3f} over {len(finite)} "
        "runs (goal: >= 0.9)"
    )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,zoo", help="resnet18, zoo or both")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..n-1")
    parser.add_argument("--channels", type=int, default=4, help="channels 0..n-1")
    parser.add_argument("--crops", type=int, default=6)
    parser.add_argument("--eval-crops", type=int, default=16)
    parser.add_argument("--resnet-size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    channels = list(range(args.channels))
    wanted = args.models.split(",")
    if "resnet18" in wanted:
        import torchvision

        torch.manual_seed(0)
        resnet = torchvision.models.resnet18(weights=None)
        compare(
            "torchvision resnet18 (seeded random weights)",
            resnet,
            "layer3",
            channels,
            size=args.resnet_size,
            canvas=4 * args.resnet_size,
            steps=args.steps,
            seeds=seeds,
            crops=args.crops,
            values_range=(-2.5, 2.5),
            eval_crops=args.eval_crops,
        )
    if "zoo" in wanted:
        model, _ = xaikit.load_model("shapes-multiclass")  # trained on [0, 1] pixels
        compare(
            "shapes-multiclass",
            model,
            "features.block4",
            channels,
            size=64,
            canvas=256,
            steps=args.steps,
            seeds=seeds,
            crops=args.crops,
            values_range=(0.0, 1.0),
            eval_crops=args.eval_crops,
        )


if __name__ == "__main__":
    main()
