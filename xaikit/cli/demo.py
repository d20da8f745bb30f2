"""``xaikit demo --out DIR``: the main job on built-in defaults, offline (see :mod:`xaikit.demo`).

Heatmaps (several methods on shapes test images, one map per label on multi-label shapes,
temporal heatmaps on recall sequences), filter images (first-layer kernels, activation
maximization, dataset exemplars, atlas), explanation-quality figures (JSON and PNG) and the
self-contained ``report.html``, from the shipped reference models; prints where they are.
"""

from __future__ import annotations

import argparse
import os

from xaikit._names import DEMO_MODELS
from xaikit.cli._common import add_device_argument, cli_device

NAME = "demo"
HELP = "the main job offline: heatmaps, filters, quality figures and an HTML report in DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        f"Needs the reference models {', '.join(DEMO_MODELS)} (see `xaikit zoo`); "
        "everything else is generated. Example: xaikit demo --out demo && open "
        "demo/report.html"
    )
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--fast",
        action="store_true",
        default=os.environ.get("XAIKIT_FAST") == "1",
        help="fewer images, steps and methods (for CI; also $XAIKIT_FAST=1); same files",
    )
    parser.add_argument(
        "--models-dir",
        metavar="DIR",
        help=(
            "folder holding the reference models (default: $XAIKIT_MODELS_DIR, else the ones "
            "shipped inside the package; `xaikit zoo` shows where)"
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    add_device_argument(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the small reference models run fastest on one)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Refuse an unusable ``--out`` and hold its lock, before any work; then run."""
    from xaikit.io import check_out, lock_out

    check_out(args.out)
    with lock_out(args.out, "demo"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from xaikit.demo import run_demo  # torch and the whole pipeline: only when the demo runs

    result = run_demo(
        args.out,
        fast=args.fast,
        models_dir=args.models_dir,
        seed=args.seed,
        device=cli_device(args.device),
        threads=args.threads,
        quiet=True if args.quiet else None,
    )
    print(result.summary())
    return 0
