"""``xaikit train``: train a zoo architecture on a data set, from flags or a recipe.

What it prints is what a user needs to trust the numbers: the test figures with the number of
held-out samples they were measured on, which epoch the saved model is and why, and for an
image folder where the list of train / val / test files is (``split.json``).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaikit.cli._common import add_device_argument, cli_device
from xaikit.errors import XaikitConfigError

if TYPE_CHECKING:
    from xaikit.train.recipe import Recipe

# xaikit.train (torch) is imported inside the functions that use it, so that building the
# parser and `xaikit train --help` stay fast.

NAME = "train"
HELP = "train a model of the zoo and write its checkpoint, model card, history and curves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe", metavar="FILE.toml", help="a training recipe (flags override it)"
    )
    parser.add_argument(
        "--data",
        "-d",
        metavar="D",
        help="data set name (shapes, digits, ...; see xaikit.data) or imagefolder:DIR, a folder "
        "of class subfolders split per class 70/15/15 into train/val/test by --seed (change "
        "with --data-option fractions=0.8,0.1,0.1), or DIR/train, DIR/val, DIR/test as given",
    )
    parser.add_argument("--model", "-m", metavar="ARCH", help="architecture (see `xaikit zoo`)")
    parser.add_argument("--epochs", type=int, metavar="N", help="number of epochs")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--task", choices=["multiclass", "multilabel", "binary"])
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--momentum", type=float, help="SGD momentum")
    parser.add_argument("--scheduler", choices=["step", "cosine", "onecycle", "none"])
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int, help="seeds weights, shuffling and a folder's split")
    parser.add_argument(
        "--monitor",
        metavar="KEY",
        help="the logged value that picks the kept epoch, e.g. val_loss (default: val_accuracy "
        "for classifiers; ties go to the lower val_loss)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/last exactly where it stopped"
    )
    parser.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the data set, e.g. n=2000 or size=32 (repeatable)",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="S",
        help="image side the data is loaded at (the same as --data-option size=S)",
    )
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the architecture, e.g. widths=[16,32] (repeatable)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _parse_options(pairs: list[str], flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise XaikitConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key.strip()] = value
    return options


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe file (if any) with every flag the user gave laid over it."""
    from xaikit.train.recipe import Recipe

    if args.recipe:
        recipe = Recipe.from_toml(args.recipe)
    else:
        if not args.data or not args.model:
            raise XaikitConfigError("give --data and --model, or --recipe FILE.toml")
        recipe = Recipe(data=args.data, model=args.model)
    recipe.data = args.data or recipe.data
    recipe.model = args.model or recipe.model
    # `--epochs 0` must reach the check below, not fall back to the recipe's count.
    recipe.epochs = args.epochs if args.epochs is not None else recipe.epochs
    recipe.data_options.update(_parse_options(args.data_option, "--data-option"))
    if args.size is not None:
        if args.size < 1:
            raise XaikitConfigError(f"--size must be a positive integer, got {args.size}")
        recipe.data_options["size"] = args.size
    recipe.model_options.update(_parse_options(args.model_option, "--model-option"))
    if args.task:
        recipe.model_options["task"] = args.task
    flags = {
        "optimizer": args.optimizer,
        "lr": args.lr,
        "momentum": args.momentum,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "monitor": args.monitor,
    }
    recipe.train_options.update({k: v for k, v in flags.items() if v is not None})
    if args.scheduler:
        recipe.train_options["scheduler"] = None if args.scheduler == "none" else args.scheduler
    if recipe.epochs < 1:
        raise XaikitConfigError(f"--epochs must be at least 1, got {recipe.epochs}")
    return recipe


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _units(count: int, kind: str | None) -> str:
    noun = {"signal": "signal", "sequence": "sequence"}.get(str(kind), "image")
    return f"{count} held-out {noun}{'' if count == 1 else 's'}"


def kept_line(selection: dict[str, Any] | None) -> str:
    """``kept epoch 3 of 5 (best val_loss 0.4120)``: which epoch the saved model is and why."""
    if not selection:
        return "kept epoch ? (unknown)"
    head = f"kept epoch {selection['epoch']} of {selection['of']}"
    if selection.get("monitor") is None:
        return f"{head} (the last: no validation data to choose by)"
    why = f"best {selection['monitor']} {_fmt(float(selection['value']))}"
    tied = selection.get("tied_with") or []
    if tied and selection.get("tiebreak"):
        epochs = ", ".join(str(e) for e in tied)
        why += (
            f", tied with epoch{'s' if len(tied) > 1 else ''} {epochs}: kept for the lower "
            f"{selection['tiebreak']} {_fmt(float(selection['tiebreak_value']))}"
        )
    return f"{head} ({why})"


def run(args: argparse.Namespace) -> int:
    """Refuse an unusable ``--out`` and hold its lock, before any work; then run."""
    from xaikit.distributed import current
    from xaikit.io import check_out, lock_out

    group = current()
    if group.distributed:
        # Under torchrun a batch the processes cannot share fails every rank here, before
        # any of them touches --out (rank 0 alone probes and locks it). The one check of
        # it: the Trainer checks only batches of loaders it builds (library use).
        _check_shared_batch(recipe_from_args(args), group.world)
    if group.is_main:
        check_out(args.out)
    with lock_out(args.out, "train"):
        return _run(args)


def _check_shared_batch(recipe: Recipe, world: int) -> None:
    """Under torchrun the batch is the global one, shared evenly by the ``world`` processes:
    one that they cannot share is one line (other values are left to the recipe's checks)."""
    from xaikit.train.trainer import check_batch_size

    batch_size = recipe.train_options.get("batch_size", 64)
    if isinstance(batch_size, int):
        check_batch_size(batch_size, world)


def _run(args: argparse.Namespace) -> int:
    from xaikit.train.recipe import train_recipe

    recipe = recipe_from_args(args)
    cli_device(args.device)  # an unavailable device fails here, in one line, before any work
    out = Path(args.out)
    try:
        result = train_recipe(recipe, out, resume=args.resume, device=args.device, quiet=args.quiet)
    except KeyboardInterrupt:
        print(
            f"xaikit: interrupted; the last completed epoch is saved in {out}/last "
            f"(continue with --resume)"
        )
        return 130
    samples = result.metrics.get("test_samples")
    kind = result.input_kind
    for key, value in result.metrics.items():
        if isinstance(value, list) or key == "test_samples":
            continue
        line = f"{key:<22} {_fmt(value)}"
        if key.startswith("test_") and isinstance(samples, int):
            line += f" (on {_units(samples, kind)})"
        print(line)
    print(kept_line(result.selection))
    print(f"checkpoint: {result.checkpoint}")
    print(f"history:    {', '.join(str(p) for p in result.history_files.values())}")
    if result.split_file is not None:
        print(f"split:      {result.split_file} (the files of train, val and test)")
    return 0
