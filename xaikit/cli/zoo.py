"""``xaikit zoo``: the architectures of the zoo and the shipped reference models."""

from __future__ import annotations

import argparse

NAME = "zoo"
HELP = "list the architectures and the shipped reference models"

# The metric a card's headline shows, in order of preference.
HEADLINE_METRICS = ("test_accuracy", "test_map", "test_f1_micro", "accuracy", "map")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-classes", type=int, default=10, help="classes used to count parameters"
    )


def _headline(metrics: dict) -> str:
    shown = [f"{k}={metrics[k]:.4g}" for k in HEADLINE_METRICS if isinstance(metrics.get(k), float)]
    return ", ".join(shown[:2]) or "-"


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: building the parser (and --help) must not import torch.
    from xaikit.zoo.checkpoint import list_shipped_models, read_card, shipped_models_dir
    from xaikit.zoo.registry import arch_info, create_model, list_models

    print("Architectures (xaikit.create_model(name, ...)):")
    print(f"  {'name':<14} {'input':<9} {'params':>9}  description")
    for name in list_models():
        info = arch_info(name)
        in_channels = info.example_input[-1] if info.input_kind == "sequence" else 3
        model = create_model(name, num_classes=args.num_classes, in_channels=in_channels)
        params = sum(p.numel() for p in model.parameters())
        print(f"  {name:<14} {info.input_kind:<9} {params:>9,}  {info.description}")
    print("  torchvision:<name>  any torchvision classifier, e.g. torchvision:resnet18")
    print("  timm:<name>         any timm model (pip install 'xaikit[timm]'), e.g. timm:deit_tiny")
    print()
    shipped = list_shipped_models()
    print(f"Reference models ({shipped_models_dir()}):")
    if not shipped:
        print("  none installed")
    for name in shipped:
        card = read_card(shipped_models_dir() / f"{name}.safetensors")
        metrics = card.get("metrics") or {}
        print(
            f"  {name:<20} {card['architecture']:<13} {card.get('task', ''):<11} "
            f"{_headline(metrics)}"
        )
    return 0
