"""``xaikit evaluate``: explanation-quality figures of a heatmap method on a data set's test split.

Prints one table - deletion / insertion AUC, the pointing games when the data has ground-truth
masks, the randomization and class-contrast sanity checks - for the method(s) next to the
random and centred-Gaussian baselines, with direction arrows, and writes the same as JSON.

Under ``torchrun --nproc-per-node N -m xaikit evaluate ...`` every rank scores its chunks of
``--batch-size`` images and rank 0 prints and writes the figures of all of them: the same
figures as one process (:func:`xaikit.evaluate.suite.evaluate_methods`).
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from xaikit._names import DEFAULT_BASELINES, DEFAULT_STEPS, DELETION_BASELINES
from xaikit._version import __version__
from xaikit.cli._common import (
    SIZE_HELP,
    add_data_option_argument,
    add_device_argument,
    add_model_argument,
    canonical_methods,
    card_size,
    cli_device,
    data_options,
    load_cli_model,
)
from xaikit.errors import DataError, XaikitConfigError
from xaikit.io import atomic_write_json

if TYPE_CHECKING:
    import torch

# torch and xaikit.evaluate are imported inside the functions that use them: the parser's
# defaults come from xaikit._names, so `xaikit evaluate --help` needs neither.

NAME = "evaluate"
HELP = "explanation quality figures (deletion/insertion AUC, pointing game, sanity checks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, seed=False)  # --seed below seeds random weights too
    parser.add_argument(
        "--data", "-d", required=True, metavar="D", help="data set name, e.g. shapes (test split)"
    )
    parser.add_argument(
        "--method",
        default="gradcam",
        metavar="METHOD",
        help="heatmap method, or several separated by commas (default: gradcam)",
    )
    add_data_option_argument(parser)
    parser.add_argument(
        "--n",
        type=int,
        default=100,
        help="test images to use, class-balanced and drawn with --seed (default: 100)",
    )
    parser.add_argument("--size", type=int, metavar="PX", help=SIZE_HELP)
    parser.add_argument("--out", metavar="FILE.json", help="write the figures as JSON")
    parser.add_argument("--seed", type=int, default=0, help="data, baseline and randomization seed")
    parser.add_argument(
        "--target",
        choices=("predicted", "label"),
        default="predicted",
        help="class explained for deletion/insertion: the prediction (RISE) or the label",
    )
    parser.add_argument("--layer", default="auto", help="explained layer for CAM methods")
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="deletion/insertion increments"
    )
    parser.add_argument(
        "--deletion-baseline",
        choices=DELETION_BASELINES,
        default="zeros",
        help="what deleted pixels become (default: zeros, as in RISE)",
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=0,
        help="pointing-game tolerance in pixels (default 0; Zhang et al. allow 15 px at "
        "224x224, i.e. 4 px at 64x64); above 0 the 0 px game is printed beside it",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(DEFAULT_BASELINES),
        help="control maps to compare with: random,gaussian (default) or none",
    )
    parser.add_argument(
        "--no-sanity", action="store_true", help="skip the randomization and contrast checks"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass")
    parser.add_argument(
        "--metrics",
        metavar="A,B,...",
        help="compute only these metrics (e.g. pixel_flipping,max_sensitivity,mprt; "
        "'all' for every catalogue metric) and print a methods x metrics comparison with "
        "ranks; the JSON keeps per-sample values, means and bootstrap CIs; sanity checks "
        "are skipped",
    )
    parser.add_argument(
        "--metric-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option for every --metrics metric that takes it, e.g. nr_samples=20 (repeatable)",
    )
    parser.add_argument(
        "--memory-budget",
        metavar="BYTES",
        help="memory for the perturbed rows of one forward pass of --metrics (e.g. 2G; "
        "default $XAIKIT_MEMORY_BUDGET or 1G)",
    )
    add_device_argument(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _split_list(text: str, what: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise XaikitConfigError(f"--{what} is empty")
    return names


def _metric_names(text: str | None) -> list[str] | None:
    """``--metrics`` as a list (``all``: the whole catalogue); ``None`` when not given."""
    if text is None:
        return None
    names = _split_list(text, "metrics")
    if names == ["all"]:
        from xaikit.evaluate.catalogue import CATALOGUE

        return list(CATALOGUE)
    return names


def _metric_options(pairs: list[str]) -> dict[str, Any]:
    """``--metric-option KEY=VALUE`` pairs; values read as JSON (numbers, true/false, lists)
    when they parse, else kept as strings."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise XaikitConfigError(f"--metric-option must be KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _load_data(name: str, n: int, seed: int, size: int | None, pairs: list[str]):
    """The test split of ``--data``: a generated set drawn with ``n`` and ``seed``, images at
    ``size``, ``--data-option`` pairs on top."""
    from xaikit.data import load

    if n < 1:
        raise XaikitConfigError(f"--n must be at least 1, got {n}")
    options = data_options(name, pairs, size=size, defaults={"n": n, "seed": seed})
    return load(name, "test", **options), "n" in options


def _indices(dataset: Any, n: int, seed: int, generated: bool) -> list[int]:
    """The items scored: a generated data set's first ``n`` (a seeded draw already), else
    ``n`` class-balanced ones chosen with ``seed``."""
    from xaikit.data.sampling import balanced_indices, dataset_targets

    count = min(n, len(dataset))
    targets = None if generated else dataset_targets(dataset)
    if targets is None or len(targets) != len(dataset):
        return list(range(count))
    return balanced_indices(targets, count, seed)


def _batch(
    dataset: Any, indices: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(inputs (N, C, H, W), targets, masks (N, K, H, W) or None)`` of the items at
    ``indices``."""
    import torch

    items = [dataset[i] for i in indices]
    inputs = torch.stack([item[0] for item in items])
    targets = torch.stack([torch.as_tensor(item[1]) for item in items])
    masks = None
    if getattr(dataset, "has_ground_truth", False) and len(items[0]) > 2:
        first = items[0][2]
        if first.dim() == inputs.dim() - 1 and first.shape[-2:] == inputs.shape[-2:]:
            masks = torch.stack([item[2] for item in items])
    return inputs, targets, masks


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``null`` so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def run(args: argparse.Namespace) -> int:
    """Refuse an unusable ``--out`` (a folder, or under a file) before any work; then run."""
    from xaikit.io import check_out

    if args.out:
        check_out(args.out, file=True)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    from xaikit.distributed import current
    from xaikit.evaluate.suite import evaluate_methods

    methods = canonical_methods(_split_list(args.method, "method"))
    metrics = _metric_names(args.metrics)
    metric_options = _metric_options(args.metric_option)
    baselines = [] if args.baselines.strip() == "none" else _split_list(args.baselines, "baselines")
    model, card = load_cli_model(args, device=cli_device(args.device))
    dataset, generated = _load_data(
        args.data, args.n, args.seed, card_size(card, args.size), args.data_option
    )
    if getattr(dataset, "input_kind", "image") != "image":
        raise DataError(
            f"xaikit evaluate scores image heatmaps; data set {args.data!r} holds "
            f"{dataset.input_kind} inputs"
        )
    inputs, targets, masks = _batch(dataset, _indices(dataset, args.n, args.seed, generated))
    classes = card.get("num_classes") or card.get("config", {}).get("num_classes")
    if classes is not None and card.get("task") != "binary" and classes != dataset.num_classes:
        raise XaikitConfigError(
            f"model {args.model!r} has {classes} classes but data set {args.data!r} has "
            f"{dataset.num_classes}; evaluate a model on the data it was trained for"
        )
    labels = targets if targets.dim() == 1 else None
    if args.target == "label":
        if labels is None:
            raise XaikitConfigError(
                "--target label needs one label per image; this data set is multi-label"
            )
        target: Any = labels
    else:
        target = "predicted"
    normalization = card.get("normalization") or getattr(dataset, "normalization", None)
    report = evaluate_methods(
        model,
        inputs,
        methods,
        labels=labels,
        masks=masks,
        target=target,
        baselines=baselines,
        steps=args.steps,
        deletion_baseline=args.deletion_baseline,
        tolerance=args.tolerance,
        sanity=not args.no_sanity,
        layer=args.layer,
        seed=args.seed,
        batch_size=args.batch_size,
        normalization=normalization,
        class_names=getattr(dataset, "classes", None),
        quiet=args.quiet or None,
        **(
            {}
            if metrics is None
            else {
                "metrics": metrics,
                "metric_options": metric_options,
                "memory_budget": args.memory_budget,
            }
        ),
    )
    if not current().is_main:
        return 0  # under torchrun the merged figures are rank 0's to print and write
    print(
        f"xaikit evaluate: model {args.model}, data {args.data} (test, n={inputs.shape[0]}), "
        f"target {args.target}, seed {args.seed}"
    )
    if masks is None:
        print("(no ground-truth masks in this data set: pointing games skipped)")
    print(report.table() if metrics is None else report.comparison_table())
    if args.out:
        payload = {
            "model": args.model,
            "architecture": card.get("architecture"),
            "data": args.data,
            "split": "test",
            "target": args.target,
            "xaikit_version": __version__,
            "torch_version": torch.__version__,
            **report.to_dict(),
        }
        atomic_write_json(args.out, _json_safe(payload))
        print(f"wrote {args.out}")
    return 0
