"""One registry and one factory for every architecture (the shape of timm's ``create_model``).

``create_model("simple_cnn", num_classes=6, task="multilabel", in_channels=3)`` builds a zoo
model; ``create_model("torchvision:resnet18")`` builds any torchvision classifier and
``create_model("timm:vit_tiny_patch16_224")`` any timm model (timm is optional:
``pip install 'xaikit[timm]'``). Weights files and pretrained weights are
:func:`xaikit.load_model`'s job (:mod:`xaikit.zoo.sources`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.zoo.cnn import ResNetSmall, SimpleCNN, SimpleCNN1d, VGGSmall
from xaikit.zoo.limits import check_meta_limits, check_zoo_limits
from xaikit.zoo.rnn import RecurrentClassifier

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"


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
            f"unknown architecture {name!r}; choose one of {', '.join(_REGISTRY)}, "
            f"'torchvision:<name>' or 'timm:<name>'"
        ) from None


def create_model(
    name: str,
    num_classes: int = 10,
    task: str = "multiclass",
    in_channels: int = 3,
    **config: Any,
) -> nn.Module:
    """Build an architecture of the zoo, a torchvision classifier or a timm model.

    Args:
        name: a name from :func:`list_models`, ``"torchvision:<name>"`` or ``"timm:<name>"``.
        num_classes: number of classes (labels for ``multilabel``; 1 or 2 for ``binary``).
        task: ``"multiclass"``, ``"multilabel"`` or ``"binary"``.
        in_channels: input channels (features per step for recurrent models).
        **config: architecture options (widths, activation, batchnorm, input_size, ...);
            for torchvision, ``weights="DEFAULT"`` (or an enum name such as
            ``"IMAGENET1K_V1"``) asks for pretrained weights: taken from the torch hub cache
            or downloaded, and read without unpickling code (see :mod:`xaikit.zoo.sources`).
            For timm the options go to ``timm.create_model`` (random weights; for timm's
            pretrained weights use ``xaikit.load_model("timm:<name>", pretrained=True)``).

    Returns:
        The model, in train mode, with ``model.spec`` holding the arguments that rebuild it.
    """
    _check_limits(name, num_classes, task, in_channels, config)
    if name.startswith(TORCHVISION_PREFIX):
        model = _torchvision_model(
            name[len(TORCHVISION_PREFIX) :], num_classes, task, in_channels, config
        )
    elif name.startswith(TIMM_PREFIX):
        model = _timm_model(name[len(TIMM_PREFIX) :], num_classes, task, in_channels, config)
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


def _check_limits(
    name: str, num_classes: Any, task: str, in_channels: Any, config: dict[str, Any]
) -> None:
    """Refuse, before anything is allocated, options whose types are wrong or whose model
    is past the size limits of :mod:`xaikit.zoo.limits` (``XAIKIT_MAX_PARAMS``)."""
    if name.startswith(TORCHVISION_PREFIX):
        plain = {k: v for k, v in config.items() if k != "weights"}
        short = name[len(TORCHVISION_PREFIX) :]
        check_meta_limits(
            name,
            num_classes,
            config,
            lambda: _torchvision_model(short, num_classes, task, in_channels, plain),
        )
    elif name.startswith(TIMM_PREFIX):
        plain = {k: v for k, v in config.items() if k != "pretrained"}
        short = name[len(TIMM_PREFIX) :]
        check_meta_limits(
            name,
            num_classes,
            config,
            lambda: _timm_model(short, num_classes, task, in_channels, plain),
        )
    else:
        arch_info(name)
        check_zoo_limits(name, num_classes, task, in_channels, config)


def _torchvision_model(
    name: str, num_classes: int, task: str, in_channels: int, config: dict[str, Any]
) -> nn.Module:
    """A torchvision classifier. With ``config["weights"]`` the pretrained weights are
    loaded by :func:`xaikit.zoo.sources.pretrained_torchvision`, which adds to ``config`` the
    options those weights imply (so ``model.spec`` rebuilds the same network)."""
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
    if config.get("weights") is not None:
        # torchvision's own loader (weights.get_state_dict) runs the full unpickler in some
        # versions; ours reads the same file with torch.load(weights_only=True).
        from xaikit.zoo.sources import pretrained_torchvision  # sources imports this module

        return pretrained_torchvision(name, num_classes, config)
    options = {k: v for k, v in config.items() if k != "weights"}
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except TypeError as err:
        raise XaikitConfigError(f"torchvision:{name}: {err}") from None


def require_timm(name: str | None = None) -> ModuleType:
    """The ``timm`` module, or one clear line saying how to install it; with ``name``, also
    check that timm has that model (``"resnet18"`` or ``"resnet18.a1_in1k"``)."""
    try:
        import timm
    except ImportError:
        raise XaikitConfigError("timm is not installed; pip install 'xaikit[timm]'") from None
    if name is not None and not timm.is_model(name):
        hint = name.split(".")[0].split("_")[0]
        raise XaikitConfigError(
            f"timm has no model {name!r}; list them with timm.list_models('*{hint}*')"
        )
    return timm


def _timm_model(
    name: str, num_classes: int, task: str, in_channels: int, config: dict[str, Any]
) -> nn.Module:
    """A timm model with random weights (``timm.create_model(..., pretrained=False)``)."""
    timm = require_timm(name)
    if task != "multiclass":
        raise XaikitConfigError("timm classifiers are multi-class models")
    if config.get("pretrained"):
        # timm.create_model(pretrained=True) downloads and may torch.load a pickle itself.
        raise XaikitConfigError(
            f"for timm's pretrained weights use xaikit.load_model('timm:{name}', "
            "pretrained=True) (read from the Hugging Face cache, safetensors only)"
        )
    options = {k: v for k, v in config.items() if k != "pretrained"}
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options
        )
    except TypeError as err:
        raise XaikitConfigError(f"timm:{name}: {err}") from None
