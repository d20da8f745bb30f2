"""Per-channel time of activation maximization: batched and truncated vs one at a time.

Ways to render the same ``--channels`` channels of one layer, at equal steps and size:

- ``batched+stop``: xaikit's default, every channel a batch element of one optimization,
  the forward pass ending at the layer, parameters frozen, the gradient taken with respect
  to the image only;
- ``batched+asis``: ``batched+stop`` with the network as it is (``fuse=False``: no
  BatchNorm folding, channels-last weights or space-to-depth gradient of the stem, see
  :mod:`xaikit.filters.render_form`);
- ``batched+full``: xaikit batched, but the whole network runs every step;
- ``single+stop`` / ``single+full``: xaikit, one optimization per channel;
- ``lucent``: how a Lucent-style render loop works (``render_vis`` per channel): one
  channel at a time, the whole network every step, its parameters requiring gradients and
  ``loss.backward()`` (so the weight gradients are computed too), the same Fourier
  parametrization, transformations, random draws, redirected ReLU and Adam as xaikit;
- ``lucent-batched``: the same loop with the channels as one batch.

The cases are interleaved round by round; reported are median seconds per channel and the
median over rounds of each case's time relative to the first baseline case in the same
round (a noisy shared machine slows both sides of a ratio alike), the median speed-up of
``batched+stop`` over each case, and each case's largest pixel difference from
``batched+stop``. Goals: ``batched+stop`` at least 3x faster per channel than ``lucent``
(issue #5: against one-at-a-time renders) and at least 2x faster than ``lucent-batched``.

    python benchmarks/bench_maximize.py                       # resnet_small, 32 px, CPU
    python benchmarks/bench_maximize.py --arch torchvision:resnet18 --layer layer3 \
        --size 128 --steps 64 --channels 8 --repeats 2        # the issue's setting
    python benchmarks/bench_maximize.py --device cuda --size 128 --channels 32
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Callable

import torch
from _timing import timed
from torch import nn

import xaikit
from xaikit.explain.layers import resolve_layer
from xaikit.filters import maximize
from xaikit.filters._common import key_generator
from xaikit.filters._relu import RedirectedReLU
from xaikit.filters.param import FourierImage
from xaikit.filters.transforms import apply_transforms, n_random, standard_transforms

CASES = (
    "batched+stop",
    "batched+asis",
    "batched+full",
    "single+stop",
    "single+full",
    "lucent",
    "lucent-batched",
)


def lucent_render(
    model: nn.Module, layer: str, units: list[int], *, steps: int, size: int, seed: int = 0
) -> torch.Tensor:
    """A Lucent-style render of ``units`` (one batch element each): the whole network runs
    every step with its parameters requiring gradients and ``loss.backward()``; otherwise
    xaikit's defaults (Fourier image, standard transforms, redirected ReLU for 16 steps,
    Adam at 0.05), with xaikit's per-unit random draws so the images are comparable."""
    module = resolve_layer(model, layer)[1]
    model.eval().requires_grad_(True)
    generators = [key_generator(seed, "maximize", unit) for unit in units]
    image = FourierImage(generators, 3, size, size)
    transforms = standard_transforms(size)
    draws = torch.stack([torch.rand(steps, n_random(transforms), generator=g) for g in generators])
    captured = {}
    handle = module.register_forward_hook(lambda _m, _i, out: captured.update(out=out))
    index = torch.as_tensor(units)
    optimizer = torch.optim.Adam(image.parameters, lr=0.05)
    try:
        image()  # xaikit scores the start image here
        for step in range(steps):
            optimizer.zero_grad()
            redirect = RedirectedReLU() if step < 16 else contextlib.nullcontext()
            with redirect:
                model(apply_transforms(image(), transforms, draws[:, step]))
                acts = captured["out"][torch.arange(len(units)), index]
                loss = -acts.flatten(1).mean(dim=1).sum()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return image()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)


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
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated cases, the first is the reference ({','.join(CASES)})",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.arch.startswith("torchvision:"):
        import torchvision

        # seeded random weights (no download)
        model = getattr(torchvision.models, args.arch.split(":", 1)[1])(weights=None)
    else:
        model = xaikit.create_model(args.arch, num_classes=10, input_size=args.size)
    model = model.to(device).eval()
    units = list(range(args.channels))
    common = dict(steps=args.steps, size=args.size, seed=0, quiet=True)

    def batched(stop: bool, fuse: bool = True) -> Callable[[], torch.Tensor]:
        return lambda: maximize(model, args.layer, units, stop=stop, fuse=fuse, **common).images

    def single(stop: bool) -> Callable[[], torch.Tensor]:
        return lambda: torch.cat(
            [maximize(model, args.layer, [u], stop=stop, **common).images for u in units]
        )

    def lucent(batch: bool) -> Callable[[], torch.Tensor]:
        groups = [units] if batch else [[u] for u in units]
        return lambda: torch.cat(
            [lucent_render(model, args.layer, g, steps=args.steps, size=args.size) for g in groups]
        )

    every = {
        "batched+stop": batched(True),
        "batched+asis": batched(True, fuse=False),
        "batched+full": batched(False),
        "single+stop": single(True),
        "single+full": single(False),
        "lucent": lucent(False),
        "lucent-batched": lucent(True),
    }
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    cases = {
        name: every[name] for name in ["batched+stop", *[c for c in chosen if c != "batched+stop"]]
    }
    timed(cases["batched+stop"], device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    speedups: dict[str, list[float]] = {name: [] for name in cases}
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
            speedups[name].append(seconds / round_times["batched+stop"])

    where = f"{device}" + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
    print(
        f"{args.arch} {args.layer}: {args.channels} channels, {args.size}x{args.size}, "
        f"{args.steps} steps, {args.repeats} rounds, {where}"
    )
    print(f"{'case':<15} {'ms/channel':>11} {'batched+stop faster by':>23} {'max |diff|':>11}")
    for name in cases:
        per_channel = 1000 * statistics.median(times[name]) / args.channels
        speedup = statistics.median(speedups[name])
        print(f"{name:<15} {per_channel:>11.1f} {speedup:>22.2f}x {differences[name]:>11.1e}")
    print(
        "max |diff|: largest pixel difference from batched+stop. Stopping early changes no "
        "number; batching changes the convolutions' summation order (~1e-7), which the "
        "optimization can grow on an untrained network."
    )


if __name__ == "__main__":
    main()
