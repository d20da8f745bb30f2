"""Peak memory of one large explanation: it must not grow with the inputs or the IG steps.

Goal: each case stays under 2 GB above the model's own inference footprint. Every case runs
in a fresh subprocess; its figure is ``ru_maxrss`` at the end minus ``ru_maxrss`` after
building the model (random weights, seeded) and running one inference on one sample. The
inputs are created after that reference, so they count: 10,000 images of 3x64x64 float32 are
491 MB of the saliency / Grad-CAM figures (and their maps, 164 MB each of ``maps`` and
``raw`` for saliency), which the goal allows.

Cases: integrated gradients on 8 resnet50 images at 224 px; saliency and Grad-CAM on 10,000
64x64 images with resnet18, fed as one tensor. ``--before PATH`` also runs every case on
another checkout (e.g. ``git worktree add /tmp/xk-head HEAD``) through ``PYTHONPATH`` from an
empty working directory, and prints both. Each child gets an address-space limit
(``--limit-gb``) so a case that would need far more memory fails instead of swapping.

    python benchmarks/bench_peak_memory.py                         # after only
    python benchmarks/bench_peak_memory.py --before /tmp/xk-head --steps 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_MB = 2048.0
HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
CASES = ("ig-resnet50", "saliency-resnet18", "gradcam-resnet18")


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def child(case: str, steps: int, count: int, limit_gb: float) -> dict[str, object]:
    """Run one case in this process and return its figures."""
    import resource

    if limit_gb > 0:
        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch
    import torchvision

    import xaikit

    torch.manual_seed(0)
    if case == "ig-resnet50":
        model = torchvision.models.resnet50(weights=None).eval()
        shape, n = (3, 224, 224), 8
    else:
        model = torchvision.models.resnet18(weights=None).eval()
        shape, n = (3, 64, 64), count
    with torch.no_grad():
        model(torch.randn(1, *shape))
    base = max_rss_mb()
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    error = None
    try:
        if case == "ig-resnet50":
            out = xaikit.explain(model, x, method="ig", steps=steps)
        elif case == "saliency-resnet18":
            out = xaikit.explain(model, x, method="saliency")
        else:
            out = xaikit.explain(model, x, method="gradcam")
        shape_out = list(out.shape)
    except (MemoryError, RuntimeError) as err:  # the address-space limit was reached
        error, shape_out = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}", None
    return {
        "case": case,
        "xaikit": str(Path(xaikit.__file__).parent),
        "base_mb": base,
        "peak_mb": max_rss_mb(),
        "delta_mb": max_rss_mb() - base,
        "seconds": time.perf_counter() - start,
        "shape": shape_out,
        "error": error,
    }


def run_case(case: str, root: Path, args: argparse.Namespace) -> dict[str, object]:
    """One case in a fresh interpreter importing xaikit from ``root``, from an empty cwd."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, str(HERE), "--child", case, "--steps", str(args.steps)]
    cmd += ["--count", str(args.count), "--limit-gb", str(args.limit_gb)]
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"case": case, "error": f"exit {proc.returncode}: {tail[0][:120]}"}
    return json.loads(lines[-1])


def row(label: str, result: dict[str, object]) -> str:
    if result.get("delta_mb") is None or result.get("error"):
        return f"  {label:<8} {'-':>10} {'-':>8}  failed: {result.get('error')}"
    delta = float(result["delta_mb"])  # type: ignore[arg-type]
    verdict = "met" if delta < GOAL_MB else "NOT met"
    return (
        f"  {label:<8} {delta:>8.0f} MB {float(result['seconds']):>6.1f} s  "  # type: ignore[arg-type]
        f"goal < {GOAL_MB:.0f} MB: {verdict} (reference {float(result['base_mb']):.0f} MB; "  # type: ignore[arg-type]
        f"{result['xaikit']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="another checkout to compare against")
    parser.add_argument("--steps", type=int, default=32, help="IG steps (default 32)")
    parser.add_argument("--count", type=int, default=10_000, help="images for resnet18 cases")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit-gb", type=float, default=12.0, help="child address space")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.count, args.limit_gb)))
        return 0
    versions = [("after", ROOT)]
    if args.before is not None:
        versions.insert(0, ("before", args.before.resolve()))
    print(
        f"peak RSS above one inference (fresh process per case; IG steps={args.steps}, "
        f"{args.count} images for resnet18; inputs count, e.g. 491 MB for 10,000 64x64)"
    )
    met = True
    for case in args.cases:
        print(case)
        for label, root in versions:
            result = run_case(case, root, args)
            print(row(label, result), flush=True)
            if label == "after":
                met &= result.get("delta_mb") is not None and not result.get("error")
                met &= float(result.get("delta_mb") or 0) < GOAL_MB  # type: ignore[arg-type]
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
