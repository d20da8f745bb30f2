"""``xaikit layers``: every module with its output shape, the default target layer marked."""

from __future__ import annotations

import argparse

import torch

from xaikit.cli._common import add_model_argument, input_shape, load_cli_model
from xaikit.explain.layers import auto_layer, trace_layers

NAME = "layers"
HELP = "list a model's layers with their output shapes; the default target layer is marked"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument(
        "--input-shape", metavar="C,H,W", help="per-sample input shape (default: the card's)"
    )
    parser.add_argument(
        "--all", action="store_true", help="also list modules that never ran in the forward pass"
    )


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "-"


def run(args: argparse.Namespace) -> int:
    model, card = load_cli_model(args.model)
    shape = input_shape(card, args.input_shape)
    example = torch.zeros(1, *shape)
    rows = trace_layers(model, example)
    try:
        default = auto_layer(model, example)
    except Exception:  # a sequence model has no spatial layer; nothing to mark
        default = None
    width = max(len(r.name) for r in rows)
    print(f"{'layer':<{width}}  {'type':<22} {'output':<18} {'params':>9}")
    for row in rows:
        if row.order < 0 and not args.all:
            continue
        mark = "  <- default (layer='auto')" if row.name == default else ""
        print(
            f"{row.name:<{width}}  {row.type:<22} {_fmt_shape(row.output_shape):<18} "
            f"{row.parameters:>9,}{mark}"
        )
    if default is None:
        print("(no layer with a spatial output: CAM methods do not apply; use gradient methods)")
    return 0
