"""One registry and one factory for every architecture (the shape of timm's ``create_model``).

``create_model("simple_cnn", num_classes=6, task="multilabel", in_channels=3)`` builds a zoo
model; ``create_model("torchvision:resnet18")`` builds any torchvision classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from xaikit.errors import CheckpointError, XaikitConfigError
from xaikit.zoo.cnn import ResNetSmall, SimpleCNN, SimpleCNN1d, VGGSmall
from xaikit.zoo.rnn import RecurrentClassifier

TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class ArchInfo:
    """What ``xaikit zoo`` shows for an architecture."""

    name: str
    builder: Callable[..., nn.Module]
    input_kind: str  # "image", "signal" or "sequence"
    description: str
    example_input: tuple[int, ...]  # (C, H, W), (C, L) or (T, F) for a dry run


_REGISTRY: dict[str, ArchInfo] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    input_kind: str,
    description: str,
    example_input: tuple[int, ...],
) -> None:
    """Add an architecture to the zoo under ``name`` (which must be new)."""
    if name in _REGISTRY:
        raise XaikitConfigError(f"an architecture named {name!r} is already registered")
    _REGISTRY[name] = ArchInfo(name, builder, input_kind, description, example_input)


register_model(
    "simple_cnn",
    SimpleCNN,
    input_kind="image",
    example_input=(3, 32, 32),
    description="2-4 conv blocks (conv-BN-act-maxpool) + global average pooling",
)
register_model(
    "vgg_small",
    VGGSmall,
    input_kind="image",
    example_input=(3, 32, 32),
    description="VGG-style stages of 3x3 conv blocks + max-pool, global average pooling",
)
register_model(
    "resnet_small",
    ResNetSmall,
    input_kind="image",
    example_input=(3, 32, 32),
    description="ResNet-20 style residual network (3 stages of basic blocks)",
)
register_model(
    "simple_cnn1d",
    SimpleCNN1d,
    input_kind="signal",
    example_input=(1, 40),
    description="simple_cnn with 1-D convolutions, for signals (N, C, L)",
)
for _cell, _paper in (("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "plain tanh RNN")):
    register_model(
        _cell,
        partial(RecurrentClassifier, cell=_cell),
        input_kind="sequence",
        example_input=(40, 1),
        description=f"{_paper} sequence classifier (N, T, F), pooling over time",
    )


def list_models() -> list[str]:
    """Names of the zoo's architectures, in registration order."""
    return list(_REGISTRY)


def arch_info(name: str) -> ArchInfo:
    """The registry entry for ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise XaikitConfigError(
            f"unknown architecture {name!r}; choose one of {', '.join(_REGISTRY)} "
            f"or 'torchvision:<name>'"
        ) from None


def create_model(
    name: str,
    num_classes: int = 10,
    task: str = "multiclass",
    in_channels: int = 3,
    **config: Any,
) -> nn.Module:
    """Build an architecture of the zoo, or a torchvision classifier.

    Args:
        name: a name from :func:`list_models`, or ``"torchvision:<name>"``.
        num_classes: number of classes (labels for ``multilabel``; 1 or 2 for ``binary``).
        task: ``"multiclass"``, ``"multilabel"`` or ``"binary"``.
        in_channels: input channels (features per step for recurrent models).
        **config: architecture options (widths, activation, batchnorm, input_size, ...);
            for torchvision, ``weights="DEFAULT"`` asks for pretrained weights (downloaded).

    Returns:
        The model, in train mode, with ``model.spec`` holding the arguments that rebuild it.
    """
    if name.startswith(TORCHVISION_PREFIX):
        model = _torchvision_model(
            name[len(TORCHVISION_PREFIX) :], num_classes, task, in_channels, **config
        )
    else:
        info = arch_info(name)
        try:
            model = info.builder(
                num_classes=num_classes, task=task, in_channels=in_channels, **config
            )
        except TypeError as err:
            raise XaikitConfigError(f"{name}: {err}") from None
    model.spec = {
        "name": name,
        "num_classes": num_classes,
        "task": task,
        "in_channels": in_channels,
        **config,
    }
    return model


def _torchvision_model(
    name: str,
    num_classes: int,
    task: str,
    in_channels: int,
    weights: str | None = None,
    **config: Any,
) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise XaikitConfigError(
            f"torchvision has no classifier {name!r}; e.g. resnet18, vgg11, densenet121, "
            f"mobilenet_v3_small, efficientnet_b0"
        )
    if task != "multiclass":
        raise XaikitConfigError("torchvision classifiers are multi-class models")
    if in_channels != 3:
        raise XaikitConfigError("torchvision classifiers take 3 input channels")
    if weights is not None and num_classes != 1000:
        raise XaikitConfigError(
            "pretrained torchvision weights have 1000 ImageNet classes; pass num_classes=1000"
        )
    try:
        return torchvision.models.get_model(
            name, weights=weights, num_classes=num_classes, **config
        )
    except (OSError, RuntimeError) as err:
        # urllib's URLError is an OSError: there is no network or the server refused.
        raise CheckpointError(
            f"could not download pretrained weights for torchvision:{name} ({err}); "
            "xaikit needs a network connection for pretrained torchvision weights, "
            "or use random weights (omit weights=)"
        ) from None
