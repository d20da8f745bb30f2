"""``xaikit methods``: every heatmap method, its family and the paper it implements."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list every explanation method with its family and paper"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--family",
        help="only this family (cam, cam-free, cam-perturbation, gradient, perturbation, "
        "relevance, attention)",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: building the parser (and --help) must not import torch.
    import dataclasses
    import textwrap

    from xaikit.errors import XaikitConfigError
    from xaikit.explain.catalogue import FAMILIES, method_catalogue
    from xaikit.io import dumps_json

    rows = method_catalogue()
    if args.family is not None:
        if args.family not in FAMILIES:
            raise XaikitConfigError(
                f"unknown --family {args.family!r}; choose from {', '.join(FAMILIES)}"
            )
        rows = [row for row in rows if row.family == args.family]
    if args.json:
        print(dumps_json([dataclasses.asdict(row) for row in rows], indent=2))
        return 0
    width = max(len(row.name) for row in rows) + 2
    family = None
    for row in rows:
        if row.family != family:
            family = row.family
            print(f"{family}: {FAMILIES[family]}")
        layer = " [layer]" if row.uses_layer else ""
        lines = textwrap.wrap(row.paper + layer, width=96 - width - 2) or [""]
        print(f"  {row.name:<{width}}{lines[0]}")
        for line in lines[1:]:
            print(f"  {'':<{width}}{line}")
    print("[layer]: a map at a layer (`layer=`, `--layer`; `xaikit layers` lists them)")
    return 0
