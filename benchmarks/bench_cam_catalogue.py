"""Speed of the rest of the CAM family: Ablation-CAM against pytorch-grad-cam's, and every
new method against Grad-CAM.

Every figure is a ratio measured in one run: the cases are interleaved round by round and
each ratio is the median over rounds of (case time / baseline time of the same round), so a
noisy, shared machine slows both sides alike. Median times are printed too.

    python benchmarks/bench_cam_catalogue.py              # resnet18, 224 px, CPU
    python benchmarks/bench_cam_catalogue.py --quick      # 112 px, fewer rounds

Goal (issue): xaikit's Ablation-CAM >= 2x faster than pytorch-grad-cam's ``AblationCAM`` on
resnet18 at ``layer4`` (224 px). pytorch-grad-cam runs the whole network on 32 copies of
the image per batch of ablated channels; xaikit runs the layers before the target once per
batch (one row) and only the rest of the network on the ablated copies (64 per pass).
SS-CAM and IS-CAM cost ``num_samples`` Score-CAMs (``C * num_samples`` masked forward
passes per image); they are timed with ``--samples`` noise samples (default 1), so their
ratio is per sample.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import xaikit
import xaikit.explain as X

warnings.simplefilter("ignore", X.ExplainWarning)
os.environ.setdefault("XAIKIT_QUIET", "1")


def interleaved(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Run every case once per round, in turn (rotating the order); return the seconds."""
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], case: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(times[case], times[base]))


def median_ms(times: dict[str, list[float]], case: str) -> float:
    return 1000 * statistics.median(times[case])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2, help="images per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1, help="SS-CAM / IS-CAM samples")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as is)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds = 112, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = model(x).argmax(1).tolist()
    print(
        f"resnet18 (random weights), layer4, {args.batch} x 3 x {args.size} x {args.size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds"
    )

    def explain(method: str, **options: object) -> Callable[[], object]:
        return lambda: xaikit.explain(
            model, x, method=method, target=target, layer="layer4", seed=0, **options
        )

    def pgc_ablation() -> object:
        with AblationCAM(model, [model.layer4]) as cam:
            return cam(x, [ClassifierOutputTarget(t) for t in target])

    # 1. Ablation-CAM against pytorch-grad-cam's (the goal: >= 2x).
    import contextlib
    import io

    quiet_pgc = lambda: contextlib.redirect_stderr(io.StringIO())  # noqa: E731 - its tqdm bar

    def pgc_quiet() -> object:
        with quiet_pgc():
            return pgc_ablation()

    times = interleaved(
        {"xaikit": explain("ablationcam"), "pytorch-grad-cam": pgc_quiet}, args.rounds
    )
    speedup = ratio(times, "pytorch-grad-cam", "xaikit")
    ours = xaikit.explain(model, x, method="ablationcam", target=target, layer="layer4")
    with quiet_pgc():
        theirs = torch.as_tensor(pgc_ablation())
    agreement = min(
        float(torch.corrcoef(torch.stack([ours[i].flatten(), theirs[i].flatten()]))[0, 1])
        for i in range(args.batch)
    )
    print(
        f"ablationcam: xaikit {median_ms(times, 'xaikit'):.0f} ms, pytorch-grad-cam "
        f"{median_ms(times, 'pytorch-grad-cam'):.0f} ms: {speedup:.2f}x faster "
        f"(goal >= 2x; min Pearson {agreement:.4f})"
    )

    # 2. Every new method / Grad-CAM.
    cases = {
        "gradcam": explain("gradcam"),
        "eigengradcam": explain("eigengradcam"),
        "gradcam-elementwise": explain("gradcam-elementwise"),
        "kpcacam": explain("kpcacam"),
        "shapleycam": explain("shapleycam"),
        "finercam": explain("finercam"),
        "smoothgradcam++": explain("smoothgradcam++"),
        "fullgrad": explain("fullgrad"),
        "ablationcam": explain("ablationcam"),
        "gradcam aug_smooth": explain("gradcam", aug_smooth=True),
        "gradcam eigen_smooth": explain("gradcam", eigen_smooth=True),
        "gradcam layer3+layer4": lambda: xaikit.explain(
            model, x, method="gradcam", target=target, layer=["layer3", "layer4"]
        ),
    }
    times = interleaved(cases, args.rounds)
    for name in cases:
        if name != "gradcam":
            print(
                f"{name:>22} / gradcam: {ratio(times, name, 'gradcam'):7.2f}  "
                f"({median_ms(times, name):.0f} ms vs {median_ms(times, 'gradcam'):.0f} ms)"
            )
    expensive = {
        "gradcam": explain("gradcam"),
        "scorecam": explain("scorecam"),
        "sscam": explain("sscam", num_samples=args.samples),
        "iscam": explain("iscam", num_samples=args.samples),
    }
    times = interleaved(expensive, max(1, args.rounds // 3))
    for name in expensive:
        if name != "gradcam":
            print(
                f"{name:>22} / gradcam: {ratio(times, name, 'gradcam'):7.1f}  "
                f"({median_ms(times, name):.0f} ms; num_samples={args.samples} for ss/is-cam)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
