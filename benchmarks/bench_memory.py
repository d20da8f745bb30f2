"""Memory over many explanations: 1,000 consecutive calls must not grow RSS by 50 MB.

Each call explains a small batch on a small zoo model with a rotating mix of what users do
in a loop: a fresh explainer object per call, several methods at once, many targets, a
model in train mode inside ``torch.no_grad()``. Resident memory is read after a warm-up and
at the end (and every 100 calls, to show the trend); hooks on the model are counted too.

    python benchmarks/bench_memory.py            # 1,000 calls
    python benchmarks/bench_memory.py --calls 200 --device cuda
    python benchmarks/bench_memory.py --peak     # peak memory by input count and IG steps

``--peak`` runs ``bench_peak_memory.py`` (the memory-budget figures: IG on 8 resnet50
images at 224 px, saliency and Grad-CAM on 10,000 64x64 images); the remaining arguments
go to it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings

import torch

import xaikit
import xaikit.explain as X
from xaikit.explain.hooks import hook_count

warnings.simplefilter("ignore", X.ExplainWarning)
GOAL_MB = 50.0


def rss_mb() -> float:
    """Resident set size of this process, in MB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_call(i: int, model: torch.nn.Module, x: torch.Tensor) -> None:
    kind = i % 4
    if kind == 0:
        with X.GradCAM(model) as cam:
            cam(x, target="positive")
    elif kind == 1:
        X.explain(model, x, method=["gradcam", "gradcam++", "layercam", "eigencam"], target="all")
    elif kind == 2:
        model.train()
        with torch.no_grad():
            X.explain(model, x, method="hirescam", target=[0, 1, 2, 3], return_result=True)
        model.eval()
    else:
        X.explain(model, x, method="scorecam-fast", top_k=4, quiet=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--peak" in argv:
        import bench_peak_memory  # beside this file

        return bench_peak_memory.main([a for a in argv if a != "--peak"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = (
        xaikit.create_model(
            "simple_cnn",
            num_classes=6,
            task="multilabel",
            in_channels=3,
            widths=(16, 32),
            input_size=32,
        )
        .eval()
        .to(device)
    )
    x = torch.randn(4, 3, 32, 32, device=device)
    for i in range(args.warmup):
        one_call(i, model, x)
    gc.collect()
    start_rss = rss_mb()
    start_cuda = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = time.perf_counter()
    print(f"after {args.warmup} warm-up calls: RSS {start_rss:.1f} MB")
    for i in range(args.calls):
        one_call(i, model, x)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1:5d} calls: RSS {rss_mb():.1f} MB (+{rss_mb() - start_rss:.1f})")
    elapsed = time.perf_counter() - start
    gc.collect()
    growth = rss_mb() - start_rss
    print(
        f"{args.calls} calls in {elapsed:.1f} s: RSS grew {growth:+.1f} MB (goal < {GOAL_MB:.0f} "
        f"MB: {'met' if growth < GOAL_MB else 'NOT met'}); hooks left on the model: "
        f"{hook_count(model)}"
    )
    if device.type == "cuda":
        grown = (torch.cuda.memory_allocated(device) - start_cuda) / 2**20
        print(f"CUDA memory allocated grew {grown:+.1f} MB")
    return 0 if growth < GOAL_MB and hook_count(model) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
