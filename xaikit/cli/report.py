"""``xaikit report``: one self-contained HTML page about a model (see :mod:`xaikit.viz.report`).

The page holds the model card, training curves, metrics and confusion matrix, a heatmap
gallery (several methods per test sample, one row per label for multi-label models), the
filter atlas of one layer, LSTM gates and temporal heatmaps for recurrent models, and the
explanation-quality figures with sanity-check badges. Images are inlined, nothing refers to
the network: the file opens anywhere, offline.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path
from typing import Any

from xaikit._names import REPORT_METHODS as DEFAULT_METHODS
from xaikit._names import REPORT_SEQUENCE_METHODS as SEQUENCE_METHODS
from xaikit.cli._common import (
    DATA_OPTION_HELP,
    SIZE_HELP,
    add_device_argument,
    add_model_argument,
    canonical_methods,
    cli_device,
    is_plain_checkpoint,
    load_cli_model,
)
from xaikit.errors import XaikitConfigError

NAME = "report"
HELP = "write one self-contained HTML report: card, curves, metrics, heatmaps, filters, quality"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Sections (stable ids): #model-card #training #metrics #gallery #filters #recurrent "
        "#evaluation. Example: xaikit report --model shapes-multilabel --data "
        "shapes-multilabel --out report.html --n 32"
    )
    add_model_argument(parser, seed=False)  # --seed below seeds random weights too
    parser.add_argument(
        "--data",
        "-d",
        metavar="D",
        help="data set whose test split is shown (default: the one in the model card); loaded "
        "with the model's training options (image size, sequence length)",
    )
    parser.add_argument(
        "--out", "-o", required=True, metavar="FILE.html", help="the HTML file to write"
    )
    parser.add_argument(
        "--n", type=int, default=24, help="test samples in the heatmap gallery (default: 24)"
    )
    parser.add_argument(
        "--method",
        metavar="M1,M2",
        help=f"heatmap methods, comma-separated (default: {','.join(DEFAULT_METHODS)}; "
        f"for recurrent models {','.join(SEQUENCE_METHODS)})",
    )
    # The old spelling, still accepted and not shown.
    parser.add_argument("--methods", dest="method", help=argparse.SUPPRESS)
    parser.add_argument(
        "--layer", "-l", default="auto", help="explained layer of CAM methods (default: auto)"
    )
    parser.add_argument(
        "--filter-layer",
        metavar="L",
        help="layer of the filter atlas (default: the first convolution)",
    )
    parser.add_argument(
        "--eval-n",
        type=int,
        help="samples scored by the evaluation (default: --n; the slowest part of the report)",
    )
    parser.add_argument(
        "--eval-steps", type=int, default=16, help="deletion/insertion increments (default: 16)"
    )
    parser.add_argument(
        "--no-evaluate", action="store_true", help="skip the explanation-quality section"
    )
    parser.add_argument(
        "--no-sanity", action="store_true", help="skip the randomization and contrast checks"
    )
    parser.add_argument(
        "--atlas-channels", type=int, default=8, help="channels in the filter atlas (default 8)"
    )
    parser.add_argument(
        "--atlas-steps",
        type=int,
        default=64,
        help="activation-maximization steps per channel (default 64)",
    )
    parser.add_argument(
        "--maco",
        action="store_true",
        help="also show MACO feature visualizations (with their transparency) of the atlas "
        "layer's most active channels, --atlas-steps steps each",
    )
    parser.add_argument(
        "--concepts",
        type=int,
        default=0,
        metavar="N",
        help="also show N DFF concepts of the atlas layer on the report's samples: exemplar "
        "crops and per-class importance (default 0: none)",
    )
    parser.add_argument(
        "--metrics",
        metavar="A,B",
        help="explanation-quality metrics for the evaluation section, comma-separated (as "
        "`xaikit evaluate --metrics`): a methods x metrics table with ranks",
    )
    parser.add_argument(
        "--sequences",
        type=int,
        default=3,
        help="sequences drawn with gates and temporal heatmaps (default 3)",
    )
    parser.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=DATA_OPTION_HELP,
    )
    parser.add_argument("--size", type=int, metavar="PX", help=SIZE_HELP)
    parser.add_argument("--title", help="page title (default: 'xaikit report: <model>')")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    add_device_argument(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _methods(text: str | None) -> list[str] | None:
    if text is None:
        return None
    methods = [part.strip() for part in text.split(",") if part.strip()]
    if not methods:
        raise XaikitConfigError("--method is empty; give names like gradcam,saliency")
    return canonical_methods(methods)


def _options(pairs: list[str]) -> dict[str, Any]:
    """``["seed=3", "layout=signal"]`` -> ``{"seed": 3, "layout": "signal"}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise XaikitConfigError(f"--data-option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key.strip()] = value
    return options


def run(args: argparse.Namespace) -> int:
    """Refuse an unusable ``--out`` (a folder, or under a file) before any work; then run."""
    from xaikit.io import check_out

    if args.out:
        check_out(args.out, file=True)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from xaikit.viz.report import build_report  # torch, matplotlib: only when a report is built

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise XaikitConfigError(f"--out must be an .html file, got {args.out!r}")
    device = cli_device(args.device)
    model: object = args.model
    card = None
    if not is_plain_checkpoint(args):  # a plain checkpoint: the report reads its curves too
        model, card = load_cli_model(args, device=device)
    options = _options(args.data_option)
    if args.size is not None:
        if args.size < 1:
            raise XaikitConfigError(f"--size must be a positive number of pixels, got {args.size}")
        options.setdefault("size", args.size)
    start = time.perf_counter()
    path = build_report(
        model,  # type: ignore[arg-type]
        args.data,
        out,
        card=card,
        n=args.n,
        methods=_methods(args.method),
        layer=args.layer,
        filter_layer=args.filter_layer,
        seed=args.seed,
        evaluate=not args.no_evaluate,
        eval_n=args.eval_n,
        eval_steps=args.eval_steps,
        sanity=not args.no_sanity,
        atlas_channels=args.atlas_channels,
        atlas_steps=args.atlas_steps,
        maco=args.maco,
        concepts=args.concepts,
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
        sequences=args.sequences,
        data_options=options,
        title=args.title,
        device=device,
        quiet=True if args.quiet else None,
    )
    size = Path(path).stat().st_size
    seconds = time.perf_counter() - start
    print(f"wrote {path} ({size / 1e6:.2f} MB, {seconds:.0f} s); open it in any browser, offline")
    return 0
