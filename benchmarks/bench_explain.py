"""Speed of xaikit.explain against its floor (the forward pass) and against itself.

Every figure is a ratio measured in one run: the cases are interleaved round by round and
each ratio is the median over rounds of (case time / baseline time of the same round), so
a noisy, shared machine slows both sides of a ratio alike. Median times are printed too.
On the CPU the benchmark runs single-threaded by default (``--threads``), where the ratios
are the most stable on a shared machine.

    python benchmarks/bench_explain.py                  # CPU, full configuration
    python benchmarks/bench_explain.py --quick          # smaller, for a smoke run
    python benchmarks/bench_explain.py --device cuda --scorecam-size 224 --scorecam-n 8
    python benchmarks/bench_explain.py --default-malloc     # keep glibc's memory trimming

Goals (issue #4): Grad-CAM / forward <= 1.05; 6 targets / 1 target <= 1.3; five CAM
methods / Grad-CAM <= 1.3; Score-CAM / its bare masked forward passes <= 1.05; fast
Score-CAM >= 4x faster than exact with Spearman rank correlation >= 0.9. Zoo models are
also timed against a hand-written minimal Grad-CAM (:func:`minimal_gradcam`), the floor of
any eager implementation: for small forward passes it shows how much of the gap to the
goal is xaikit's and how much is PyTorch's fixed per-call cost. With
``pytorch-grad-cam`` installed (``pip install grad-cam``; not a dependency of xaikit) its
Grad-CAM is compared for agreement and speed.
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
import torch.nn.functional as F
import torchvision

import xaikit
import xaikit.explain as X

warnings.simplefilter("ignore", X.ExplainWarning)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    cases: dict[str, Callable[[], object]], rounds: int, device: torch.device
) -> dict[str, list[float]]:
    """Run every case once per round, in turn (rotating the order); return the seconds."""
    for fn in cases.values():  # warm-up: allocator, caches, the auto-layer trace
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        # Rotate the order each round so no case always runs right after the same other one.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = cases[name]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], case: str, base: str) -> float:
    """Median over rounds of ``case / base`` measured in the same round."""
    return statistics.median(a / b for a, b in zip(times[case], times[base]))


def median_ms(times: dict[str, list[float]], case: str) -> float:
    return 1000 * statistics.median(times[case])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation with average ranks for ties (maps have many zeros)."""

    def ranks(t: torch.Tensor) -> torch.Tensor:
        _values, inverse, counts = torch.unique(
            t.flatten().double(), return_inverse=True, return_counts=True
        )
        ends = counts.cumsum(0).double()
        average = ends - (counts.double() - 1) / 2  # 1-based average rank of each value
        return average[inverse]

    ra, rb = ranks(a), ranks(b)
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, value: float, goal: str, detail: str = "") -> None:
        ok = ""
        if goal:
            op, bound = goal.split()
            met = value <= float(bound) if op == "<=" else value >= float(bound)
            ok = "yes" if met else "NO"
        self.rows.append((what, f"{value:.3f}", f"{goal} {ok}".strip(), detail))

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [*self.rows, self.header()]) for i in range(4)]
        for row in [self.header(), *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())

    @staticmethod
    def header() -> tuple[str, str, str, str]:
        return ("figure", "value", "goal met", "detail")


def minimal_gradcam(
    model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor
) -> torch.Tensor:
    """The least a Grad-CAM of the predicted class can do, written by hand: one hook, the
    forward up to the layer without a graph, one ``autograd.grad`` to the layer, channel
    weights, ReLU, bilinear upsampling, min-max. No checks, no state restored, one method,
    one target: the floor a library's Grad-CAM is measured against. ``(N, H, W)``."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        torch.set_grad_enabled(True)  # the head builds a graph; the layers before it did not
        store["a"] = output.detach().requires_grad_()
        return store["a"]

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(x)
            (grads,) = torch.autograd.grad(logits.amax(dim=1).sum(), store["a"])
    finally:
        handle.remove()
    a = store["a"].detach()
    cam = (grads.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True).clamp_min(0)
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False).flatten(1)
    lo, hi = cam.amin(dim=1, keepdim=True), cam.amax(dim=1, keepdim=True)
    return ((cam - lo) / (hi - lo).clamp_min(1e-12)).reshape(x.shape[0], *x.shape[2:])


def bench_gradcam(
    name: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    rounds: int,
    table: Table,
    *,
    full: bool = True,
    layer: torch.nn.Module | None = None,
) -> None:
    """Grad-CAM against the forward pass; with ``full``, also 6 targets and 5 methods; with
    ``layer``, also the hand-written :func:`minimal_gradcam` of that layer."""
    device = x.device
    classes = 6

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    cases = {"forward": forward, "gradcam": lambda: X.explain(model, x)}
    if layer is not None:
        cases["minimal"] = lambda: minimal_gradcam(model, layer, x)
    if full:
        cases["gradcam-6"] = lambda: X.explain(model, x, target=[list(range(classes))] * x.shape[0])
        cases["five"] = lambda: X.explain(
            model, x, method=["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"]
        )
    times = interleaved(cases, rounds, device)
    shape = "x".join(map(str, x.shape))
    table.add(
        f"{name}: Grad-CAM / forward",
        ratio(times, "gradcam", "forward"),
        "<= 1.05",
        f"{shape}; {median_ms(times, 'gradcam'):.1f} ms vs {median_ms(times, 'forward'):.1f} ms",
    )
    if layer is not None:
        table.add(
            f"{name}: hand-written minimal Grad-CAM / forward",
            ratio(times, "minimal", "forward"),
            "",
            f"the floor; xaikit / minimal = {ratio(times, 'gradcam', 'minimal'):.3f}",
        )
    if not full:
        return
    table.add(
        f"{name}: 6 targets / 1 target",
        ratio(times, "gradcam-6", "gradcam"),
        "<= 1.3",
        f"{median_ms(times, 'gradcam-6'):.1f} ms",
    )
    table.add(
        f"{name}: 5 CAM methods / Grad-CAM",
        ratio(times, "five", "gradcam"),
        "<= 1.3",
        f"gradcam, ++, xgradcam, layercam, hirescam: {median_ms(times, 'five'):.1f} ms",
    )


def bench_scorecam(
    model: torch.nn.Module,
    x: torch.Tensor,
    batch_size: int,
    top_k: int | None,
    rounds: int,
    table: Table,
) -> None:
    device = x.device
    channels = model.layer4[-1].conv2.out_channels
    total = x.shape[0] * channels
    masked = torch.rand(min(batch_size, total), *x.shape[1:], device=device)

    def bare() -> None:
        with torch.no_grad():
            for start in range(0, total, batch_size):
                model(masked[: min(batch_size, total - start)])

    results: dict[str, X.Explanation] = {}

    def exact() -> None:
        results["exact"] = X.explain(
            model, x, method="scorecam", batch_size=batch_size, quiet=True, return_result=True
        )

    def fast() -> None:
        options = {} if top_k is None else {"top_k": top_k}
        results["fast"] = X.explain(
            model,
            x,
            method="scorecam-fast",
            batch_size=batch_size,
            quiet=True,
            return_result=True,
            **options,
        )

    times = interleaved({"bare": bare, "exact": exact, "fast": fast}, rounds, device)
    shape = "x".join(map(str, x.shape))
    table.add(
        "resnet18: Score-CAM / bare masked forwards",
        ratio(times, "exact", "bare"),
        "<= 1.05",
        f"{shape}, {total} masks in batches of {batch_size}: {median_ms(times, 'exact'):.0f} "
        f"ms vs {median_ms(times, 'bare'):.0f} ms",
    )
    k = top_k if top_k is not None else channels // 8
    table.add(
        "resnet18: fast Score-CAM speed-up",
        ratio(times, "exact", "fast"),
        ">= 4",
        f"top_k={k} of {channels} channels: {median_ms(times, 'fast'):.0f} ms",
    )
    e, f = results["exact"], results["fast"]
    per_image = [spearman(e.maps[n], f.maps[n]) for n in range(x.shape[0])]
    per_raw = [spearman(e.raw[n], f.raw[n]) for n in range(x.shape[0])]
    table.add(
        "resnet18: fast vs exact Score-CAM Spearman (min)",
        min(per_image),
        ">= 0.9",
        f"heatmaps per image, median {statistics.median(per_image):.3f}; layer-resolution "
        f"maps min {min(per_raw):.3f}",
    )


def bench_pytorch_grad_cam(
    model: torch.nn.Module, x: torch.Tensor, rounds: int, table: Table
) -> None:
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        print("(pytorch-grad-cam not installed: `pip install grad-cam` to compare)")
        return
    device = x.device
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    targets = [ClassifierOutputTarget(c) for c in predicted]
    theirs: dict[str, object] = {}

    def run_theirs(cls: type) -> Callable[[], None]:
        def run() -> None:
            with cls(model=model, target_layers=[model.layer4]) as cam:
                theirs[cls.__name__] = cam(input_tensor=x, targets=targets)

        return run

    ours: dict[str, torch.Tensor] = {}

    def run_ours() -> None:
        ours.update(X.explain(model, x, method=["gradcam", "gradcam++"], layer="layer4"))

    def forward() -> None:
        with torch.no_grad():
            model(x)

    cases = {
        "forward": forward,
        "xaikit": lambda: X.explain(model, x, layer="layer4"),
        "pgc": run_theirs(GradCAM),
    }
    times = interleaved(cases, rounds, device)
    run_ours()
    run_theirs(GradCAMPlusPlus)()
    agreement = []
    for method, cls in (("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus")):
        other = torch.as_tensor(theirs[cls])
        mine = ours[method].cpu()
        agreement.append(min(pearson(mine[n], other[n]) for n in range(x.shape[0])))
    table.add(
        "pytorch-grad-cam GradCAM time / xaikit",
        ratio(times, "pgc", "xaikit"),
        "",
        f"theirs {median_ms(times, 'pgc'):.1f} ms = {ratio(times, 'pgc', 'forward'):.2f} x forward",
    )
    table.add(
        "pytorch-grad-cam agreement (min Pearson)",
        min(agreement),
        "",
        f"Grad-CAM {agreement[0]:.4f}, Grad-CAM++ {agreement[1]:.4f} (they resize with OpenCV)",
    )


#: glibc malloc settings for the run: without them glibc returns freed activation memory to
#: the OS between calls and page-faults it back in on the next one, an allocator artifact
#: that lands on whichever case happens to trigger the trim (measured here: a bimodal
#: forward time, 63 vs 80 ms CPU for the zoo model at batch 32). PyTorch's CPU tuning guide
#: recommends jemalloc/tcmalloc for the same reason. ``--default-malloc`` keeps glibc's.
MALLOC_ENV = {
    "MALLOC_TRIM_THRESHOLD_": "4000000000",
    "MALLOC_MMAP_THRESHOLD_": "1000000000",
    "MALLOC_TOP_PAD_": "100000000",
}


def _reexec_with_stable_malloc(argv: list[str]) -> None:
    if sys.platform != "linux" or "--default-malloc" in argv:
        return
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    os.execve(sys.executable, [sys.executable, __file__, *argv], {**os.environ, **MALLOC_ENV})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _reexec_with_stable_malloc(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine single-threaded ratios are the "
        "most stable; 0 keeps torch's default)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--scorecam-n", type=int, default=1)
    parser.add_argument("--scorecam-size", type=int, default=112)
    parser.add_argument("--scorecam-batch", type=int, default=64)
    parser.add_argument("--scorecam-rounds", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--skip-scorecam", action="store_true")
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's malloc trimming"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.batch, args.size = 3, 2, 64
        args.scorecam_size, args.scorecam_rounds = 64, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", {torch.get_num_threads()} CPU threads, {args.rounds} interleaved rounds, "
        + ("glibc malloc defaults" if args.default_malloc else "malloc trimming off (MALLOC_ENV)")
    )
    table = Table()
    resnet = torchvision.models.resnet18().eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    bench_gradcam("resnet18", resnet, x, args.rounds, table)
    # Zoo models: the shipped shapes models' architecture at their 64x64 input, the default
    # simple_cnn at 64x64 (also at batch 32, a typical evaluation batch), and simple_cnn at
    # the 224x224. Random weights: speed does not depend on them.
    zoo_cases = [
        ("zoo shapes-cnn 64px", {"widths": (16, 32, 64, 64), "pools": 2}, 64, args.batch, True),
        ("zoo simple_cnn 64px", {}, 64, args.batch, True),
    ]
    if not args.quick:
        zoo_cases += [
            ("zoo simple_cnn 64px", {}, 64, 32, False),
            ("zoo simple_cnn 224px", {}, 224, args.batch, False),
        ]
    for name, options, size, batch, full in zoo_cases:
        zoo = xaikit.create_model(
            "simple_cnn", num_classes=6, task="multilabel", input_size=size, **options
        )
        xz = torch.randn(batch, 3, size, size, device=device)
        zoo = zoo.eval().to(device)
        bench_gradcam(name, zoo, xz, args.rounds, table, full=full, layer=zoo.features[-1])
    if not args.skip_scorecam:
        xs = torch.randn(args.scorecam_n, 3, args.scorecam_size, args.scorecam_size, device=device)
        bench_scorecam(resnet, xs, args.scorecam_batch, args.top_k, args.scorecam_rounds, table)
    bench_pytorch_grad_cam(resnet, x, args.rounds, table)
    print()
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
