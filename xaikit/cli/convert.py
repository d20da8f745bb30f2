"""``xaikit convert``: a weights file + its architecture -> an ordinary xaikit checkpoint.

``xaikit convert r18.pth --model torchvision:resnet18 --out conv --preset imagenet`` reads
the state dict safely (safetensors, or ``torch.load(weights_only=True)``), loads it into the
architecture strictly and writes ``conv/model.safetensors`` + ``conv/model.json`` (the model
card: architecture, class names, normalization, input shape, where the weights came from).
Every command then takes ``--model conv`` like any checkpoint, without ``--weights``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from xaikit.cli._common import input_shape, parse_options
from xaikit.errors import DataError, XaikitConfigError

# The data and zoo modules (torch, safetensors) are imported where they are used, so that
# building the parser and `xaikit convert --help` stay fast.

NAME = "convert"
HELP = "turn a weights file (.pth/.pt/.bin/.ckpt/.safetensors) into an xaikit checkpoint"
STEM = "model"  # DIR/model.safetensors + DIR/model.json: the name a folder is loaded by

EPILOG = """\
examples:
  xaikit convert r18.pth --model torchvision:resnet18 --out r18 --preset imagenet
  xaikit convert best.ckpt --model simple_cnn --model-option widths=[16,32] \\
      --class-names names.txt --normalization imagenet --input-shape 3,64,64 --out mine
  xaikit explain img.png --model r18 --out heatmaps

WEIGHTS is read without running code: safetensors, or a torch.save state dict through
torch.load(weights_only=True); a pickle that would run code is refused. The wrappings
{"state_dict": ...}, {"model": ...}, {"model_state_dict": ...}, {"ema": ...} and DDP's
"module." prefix are taken off. num_classes is read from the file's classifier unless
--model-option num_classes=N is given; every other option must match the file.

Card fields not given keep the architecture's defaults: torchvision and timm models get
their usual normalization and input size, zoo architectures none (pass them).

exit codes: 0 written; 2 bad input (one line on stderr, nothing written); 1 internal error.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("weights", metavar="WEIGHTS", help="the weights file to convert")
    parser.add_argument(
        "--model",
        "-m",
        required=True,
        metavar="ARCH",
        help="its architecture: a zoo name (see `xaikit zoo`), 'torchvision:<name>', "
        "'timm:<name>', or a checkpoint whose card to keep (its weights are replaced)",
    )
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an architecture option, e.g. num_classes=10 or widths=[16,32] (repeatable)",
    )
    names = parser.add_mutually_exclusive_group()
    names.add_argument(
        "--class-names",
        metavar="FILE",
        help="class names: a text file with one name per line, or a JSON list",
    )
    names.add_argument(
        "--preset", choices=("imagenet",), help="class names of a known data set (ImageNet-1k)"
    )
    parser.add_argument(
        "--normalization",
        choices=("imagenet",),
        help="the ImageNet mean and std (instead of --mean/--std)",
    )
    parser.add_argument("--mean", metavar="A,B,C", help="per-channel mean, e.g. 0.5,0.5,0.5")
    parser.add_argument("--std", metavar="A,B,C", help="per-channel std, e.g. 0.25,0.25,0.25")
    parser.add_argument(
        "--input-shape", metavar="C,H,W", help="the model's input shape, e.g. 3,224,224"
    )


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise XaikitConfigError(f"{flag} takes numbers like 0.5,0.5,0.5; got {text!r}") from None
    if not values:
        raise XaikitConfigError(f"{flag} is empty; give numbers like 0.5,0.5,0.5")
    return values


def read_class_names(path: str) -> list[str]:
    """Class names from a text file (one per line, blank lines skipped) or a JSON list."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: cannot read the class names ({err})") from None
    if file.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{file}: not valid JSON ({err})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{file}: expected a JSON list of strings")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def _normalization(args: argparse.Namespace, card: dict[str, Any]) -> dict[str, Any] | None:
    from xaikit.zoo.sources import IMAGENET_NORMALIZATION

    if args.normalization and (args.mean or args.std):
        raise XaikitConfigError("give --normalization or --mean/--std, not both")
    if args.normalization == "imagenet":
        return dict(IMAGENET_NORMALIZATION)
    if args.mean or args.std:
        if not (args.mean and args.std):
            raise XaikitConfigError("--mean and --std go together; give both")
        return {"mean": _floats(args.mean, "--mean"), "std": _floats(args.std, "--std")}
    return card.get("normalization")


def _class_names(args: argparse.Namespace, card: dict[str, Any]) -> list[str] | None:
    from xaikit.zoo.sources import imagenet_categories

    if args.preset == "imagenet":
        names = imagenet_categories()
    elif args.class_names:
        from xaikit.names import check_class_names  # at most 1,000 characters a name

        names = check_class_names(read_class_names(args.class_names)) or []
    else:
        return card.get("class_names")
    classes = card.get("num_classes")
    if classes is not None and len(names) != int(classes):
        raise XaikitConfigError(
            f"{len(names)} class names for a model with {classes} classes; give one per class"
        )
    return names


def run(args: argparse.Namespace) -> int:
    """Refuse an unusable ``--out`` and hold its lock, before any work; then run."""
    from xaikit.io import check_out, lock_out

    check_out(args.out)
    with lock_out(args.out, "convert"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from xaikit.data.normalization import check_normalization
    from xaikit.zoo.checkpoint import CARD_SUFFIX, load_model, save_model

    # Everything is checked before the model is built and before anything is written.
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise XaikitConfigError(f"--out {out} is a file; give a folder")
    options = parse_options(args.model_option)
    model, card = load_model(args.model, weights=args.weights, options=options or None)
    names = _class_names(args, card)
    normalization = _normalization(args, card)
    shape = list(input_shape(card, args.input_shape))
    if normalization is not None:
        try:
            check_normalization(normalization, shape[0] if len(shape) == 3 else None)
        except DataError as err:
            raise XaikitConfigError(str(err)) from None
    source = card.get("source") or {}
    weights = save_model(
        model,
        out / STEM,
        class_names=names,
        normalization=normalization,
        input_shape=shape,
        converted_from={
            "file": source.get("path", str(Path(args.weights).resolve())),
            "sha256": card.get("weights_sha256"),
            "model": args.model,
            "options": options,
        },
    )
    print(
        f"wrote {weights} and {weights.with_suffix(CARD_SUFFIX).name} "
        f"({card['architecture']}, {card.get('num_classes')} classes); "
        f"use it with --model {out}"
    )
    return 0
