"""Helpers shared by the CLI commands: loading a model from what the user typed."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.zoo.checkpoint import list_shipped_models, load_model
from xaikit.zoo.registry import TORCHVISION_PREFIX, arch_info, create_model, list_models

MODEL_HELP = (
    "a reference model name (see `xaikit zoo`), a checkpoint path (.safetensors), "
    "'torchvision:<name>', or an architecture name (random weights)"
)


def add_model_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--model", "-m", required=required, metavar="M", help=MODEL_HELP)


def load_cli_model(spec: str, *, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load ``spec`` as a reference model or checkpoint, else build an architecture of the
    zoo with random weights (handy for ``xaikit layers --model resnet_small``)."""
    if spec in list_models() and spec not in list_shipped_models():
        info = arch_info(spec)
        channels = info.example_input[-1] if info.input_kind == "sequence" else None
        in_channels = channels if channels is not None else info.example_input[0]
        model = create_model(spec, in_channels=in_channels).to(device).eval()
        card = {
            "architecture": spec,
            "config": model.spec,
            "task": "multiclass",
            "input_shape": list(info.example_input),
            "weights": "random",
        }
        return model, card
    return load_model(spec, device=device)


def input_shape(card: dict[str, Any], override: str | None = None) -> tuple[int, ...]:
    """The per-sample input shape: ``--input-shape C,H,W`` or the model card's."""
    if override:
        try:
            shape = tuple(int(v) for v in override.replace("x", ",").split(","))
        except ValueError:
            raise XaikitConfigError(
                f"--input-shape must be integers like 3,64,64; got {override!r}"
            ) from None
        if not shape or min(shape) < 1:
            raise XaikitConfigError(f"--input-shape must be positive integers; got {override!r}")
        return shape
    shape = card.get("input_shape")
    if shape:
        return tuple(int(v) for v in shape)
    if str(card.get("architecture", "")).startswith(TORCHVISION_PREFIX):
        return (3, 224, 224)
    raise XaikitConfigError("the model card has no input_shape; pass --input-shape C,H,W")
