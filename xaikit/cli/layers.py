"""``xaikit layers``: every module with its output shape, the default target layer marked."""

from __future__ import annotations

import argparse

from xaikit.cli._common import add_model_argument, input_shape, load_cli_model

NAME = "layers"
HELP = (
    "list a model's layers with their output shapes and layouts (nchw, nhwc, tokens); "
    "the default target layer is marked"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument(
        "--input-shape", metavar="C,H,W", help="per-sample input shape (default: the card's)"
    )
    parser.add_argument(
        "--all", action="store_true", help="also list modules that never ran in the forward pass"
    )
    parser.add_argument(
        "--why",
        action="store_true",
        help="say why layer='auto' passes over each map-shaped output (attention internals, "
        "off the score path, runs twice, ...)",
    )


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "-"


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: building the parser (and --help) must not import torch.
    import torch

    from xaikit.explain.layers import choose_layer, explain_choices, trace

    model, card = load_cli_model(args)
    shape = input_shape(card, args.input_shape)
    # Seeded noise, not zeros: on a blank input ReLUs are dead and every gradient is 0.
    example = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    rows, output_shape = trace(model, example)
    default = choose_layer(rows, output_shape, model)
    num_outputs = output_shape[-1] if output_shape else None
    marked = explain_choices(rows, model, num_outputs)
    width = max(len(r.name) for r in rows)
    print(f"{'layer':<{width}}  {'type':<22} {'output':<18} {'layout':<16} {'params':>9}")
    for row in marked:
        if row.order < 0 and not args.all:
            continue
        layout = row.layout.describe() if row.layout is not None else "-"
        if row.name == default:
            note = "  <- default (layer='auto')"
        elif row.layout is not None and row.excluded and args.why:
            note = f"  ({row.excluded})"
        else:
            note = ""
        print(
            f"{row.name:<{width}}  {row.type:<22} {_fmt_shape(row.output_shape):<18} "
            f"{layout:<16} {row.parameters:>9,}{note}"
        )
    if default is None:
        print("(no layer with a spatial output: CAM methods do not apply; use gradient methods)")
    return 0
