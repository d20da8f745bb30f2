"""Size limits checked before a model is built, so a small model card, a recipe or a
``--model-option`` cannot make xaikit allocate gigabytes before anything else is checked.

* Zoo architectures: the parameter count comes from closed-form formulas per block type
  (:func:`estimate_zoo`, exact: it equals ``sum(p.numel())`` of the built model), and
  the activation memory of one input at ``input_size`` is estimated the same way.
* torchvision and timm models are built on the ``meta`` device (no storage is allocated) and
  their parameters counted (:func:`count_meta_params`).
* Option types are checked first: widths a list of positive ints, ``num_classes`` a positive
  int up to :data:`MAX_CLASSES`, ``kernel_size`` a small positive int, ...
* A card's ``input_shape`` must be 2 to 4 positive ints, each side at most
  :data:`MAX_INPUT_SIDE`, at most :data:`MAX_INPUT_ELEMENTS` in all.

Every refusal is one :class:`~xaikit.errors.XaikitConfigError` line naming the field and the
estimate. The parameter limit (default :data:`DEFAULT_MAX_PARAMS`) can be raised with the
environment variable ``XAIKIT_MAX_PARAMS`` (e.g. ``XAIKIT_MAX_PARAMS=2000000000``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from xaikit.errors import XaikitConfigError

DEFAULT_MAX_PARAMS = 500_000_000
MAX_PARAMS_ENV = "XAIKIT_MAX_PARAMS"
MAX_ACTIVATION_BYTES = 4 * 2**30  # float32 activations of one input
MAX_CLASSES = 1_000_000
MAX_KERNEL_SIZE = 63
MAX_DEPTH = 1_000  # blocks_per_stage, convs_per_stage, num_layers
MAX_INPUT_SIDE = 4096
MAX_INPUT_ELEMENTS = 64 * 2**20
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def max_params() -> int:
    """The parameter limit: ``XAIKIT_MAX_PARAMS`` when set, else :data:`DEFAULT_MAX_PARAMS`."""
    raw = os.environ.get(MAX_PARAMS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PARAMS
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise XaikitConfigError(f"{MAX_PARAMS_ENV} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise XaikitConfigError(f"{MAX_PARAMS_ENV} must be positive, got {raw!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(field: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or one line naming ``field`` and the type."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        upper = f" <= {high:,}" if high is not None else ""
        raise XaikitConfigError(f"{field} must be an int >= {low}{upper}, got {value!r}")
    return int(value)


def check_widths(value: Any) -> tuple[int, ...]:
    """``widths`` as a tuple of positive ints (a list or tuple; a string is refused)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise XaikitConfigError(f"widths must be a list of positive ints, got {value!r}")
    if not value or not all(_is_int(w) and w >= 1 for w in value):
        raise XaikitConfigError(f"widths must be a list of positive ints, got {list(value)!r}")
    return tuple(value)


def check_input_shape(value: Any, field: str = "input_shape") -> list[int] | None:
    """A card's ``input_shape``: ``None`` or 2 to 4 positive ints, each side at most
    :data:`MAX_INPUT_SIDE` and :data:`MAX_INPUT_ELEMENTS` elements in all."""
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not 2 <= len(value) <= 4
        or not all(_is_int(v) and v >= 1 for v in value)
    ):
        raise XaikitConfigError(f"{field} must be a list of 2 to 4 positive ints, got {value!r}")
    if max(value) > MAX_INPUT_SIDE:
        raise XaikitConfigError(
            f"{field} {list(value)} has a side of {max(value):,}, past the limit of "
            f"{MAX_INPUT_SIDE} per side"
        )
    elements = math.prod(value)
    if elements > MAX_INPUT_ELEMENTS:
        raise XaikitConfigError(
            f"{field} {list(value)} has {elements:,} elements, past the limit of "
            f"{MAX_INPUT_ELEMENTS:,}"
        )
    return list(value)


# -- closed-form counts ----------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, dims: int, bias: bool) -> int:
    return cout * cin * k**dims + (cout if bias else 0)


def _outputs(num_classes: int, task: str) -> int:
    return 1 if task == "binary" else num_classes


def _simple_cnn(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any], dims: int):
    widths = cfg.get("widths", (32, 64, 128))
    k = cfg.get("kernel_size", 5 if dims == 1 else 3)
    size = cfg.get("input_size", 40 if dims == 1 else 32)
    bn = bool(cfg.get("batchnorm", True))
    pools = cfg.get("pools")
    pools = len(widths) - 1 if pools is None or not _is_int(pools) else pools
    params, acts, channels = 0, 0, in_channels
    for i, width in enumerate(widths, start=1):
        params += _conv(channels, width, k, dims, not bn) + (2 * width if bn else 0)
        acts += 3 * width * size**dims
        if i <= pools and size >= 4:
            size //= 2
        channels = width
    return params + channels * _outputs(num_classes, task) + _outputs(num_classes, task), acts


def _vgg_small(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any]):
    widths = cfg.get("widths", (32, 64, 128))
    convs = cfg.get("convs_per_stage", 2)
    size = cfg.get("input_size", 32)
    bn = bool(cfg.get("batchnorm", True))
    params, acts, channels = 0, 0, in_channels
    for s, width in enumerate(widths, start=1):
        for _ in range(convs):
            params += _conv(channels, width, 3, 2, not bn) + (2 * width if bn else 0)
            acts += 3 * width * size**2
            channels = width
        if s < len(widths) and size >= 4:
            size //= 2
    return params + channels * _outputs(num_classes, task) + _outputs(num_classes, task), acts


def _resnet_small(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any]):
    widths = cfg.get("widths", (16, 32, 64))
    blocks = cfg.get("blocks_per_stage", 3)
    size = cfg.get("input_size", 32)
    bn = bool(cfg.get("batchnorm", True))
    norm = 2 if bn else 0
    large = size >= 128
    params = _conv(in_channels, widths[0], 3, 2, not bn) + norm * widths[0]
    size = size // 4 if large else size
    acts = 3 * widths[0] * size**2
    channels = widths[0]
    for s, width in enumerate(widths, start=1):
        for b in range(blocks):
            stride = 2 if (s > 1 and b == 0 and size >= 4) else 1
            params += _conv(channels, width, 3, 2, not bn) + norm * width
            params += _conv(width, width, 3, 2, not bn) + norm * width
            if stride != 1 or channels != width:
                params += _conv(channels, width, 1, 2, False) + norm * width
            size //= stride
            acts += 7 * width * size**2
            channels = width
    return params + channels * _outputs(num_classes, task) + _outputs(num_classes, task), acts


def _recurrent(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any], cell: str):
    hidden = cfg.get("hidden_size", 64)
    layers = cfg.get("num_layers", 1)
    dirs = 2 if cfg.get("bidirectional", False) else 1
    gates = _GATES.get(cell, 4)
    params, features = 0, in_channels
    for _ in range(layers):
        params += dirs * gates * hidden * (features + hidden + 2)
        features = hidden * dirs
    return params + features * _outputs(num_classes, task) + _outputs(num_classes, task), 0


def _check_zoo_types(num_classes: Any, in_channels: Any, config: dict[str, Any]) -> None:
    check_int("num_classes", num_classes, 1, MAX_CLASSES)
    check_int("in_channels", in_channels, 1, 100_000)
    if "widths" in config:
        check_widths(config["widths"])
    if "kernel_size" in config:
        check_int("kernel_size", config["kernel_size"], 1, MAX_KERNEL_SIZE)
    if "input_size" in config:
        check_int("input_size", config["input_size"], 1, MAX_INPUT_SIDE)
    for field in ("blocks_per_stage", "convs_per_stage", "num_layers"):
        if field in config:
            check_int(field, config[field], 1, MAX_DEPTH)
    if "hidden_size" in config:
        check_int("hidden_size", config["hidden_size"], 1, 1_000_000)


def estimate_zoo(
    name: str, num_classes: int, task: str, in_channels: int, config: dict[str, Any]
) -> tuple[int, int] | None:
    """``(parameters, activation elements of one input)`` of a zoo architecture from its
    options alone (after checking their types); ``None`` for an architecture without a
    formula (a user's registered model)."""
    _check_zoo_types(num_classes, in_channels, config)
    if name in ("simple_cnn", "simple_cnn1d"):
        return _simple_cnn(num_classes, task, in_channels, config, 1 if name[-2:] == "1d" else 2)
    if name == "vgg_small":
        return _vgg_small(num_classes, task, in_channels, config)
    if name == "resnet_small":
        return _resnet_small(num_classes, task, in_channels, config)
    if name in _GATES:
        return _recurrent(num_classes, task, in_channels, config, name)
    return None


def _refuse_params(name: str, params: int, field: str) -> None:
    limit = max_params()
    if params > limit:
        raise XaikitConfigError(
            f"{name}: {field} give about {params:,} parameters ({params * 4 / 2**30:.1f} GiB), "
            f"past the limit of {limit:,} (raise it with {MAX_PARAMS_ENV})"
        )


def check_zoo_limits(
    name: str, num_classes: Any, task: str, in_channels: Any, config: dict[str, Any]
) -> None:
    """Refuse a zoo configuration whose parameters or activations are past the limits."""
    estimate = estimate_zoo(name, num_classes, task, in_channels, config)
    if estimate is None:
        return
    params, acts = estimate
    fields = [f for f in ("widths", "kernel_size", "blocks_per_stage", "convs_per_stage",
                          "hidden_size", "num_layers") if f in config]  # fmt: skip
    _refuse_params(name, params, "/".join(["num_classes", *fields]))
    if acts * 4 > MAX_ACTIVATION_BYTES:
        raise XaikitConfigError(
            f"{name}: widths/input_size give about {acts * 4 / 2**30:.1f} GiB of activations "
            f"for one input, past the limit of {MAX_ACTIVATION_BYTES / 2**30:.0f} GiB"
        )


def count_meta_params(build: Callable[[], nn.Module]) -> int | None:
    """Parameters of the model ``build()`` makes on the ``meta`` device (nothing allocated);
    ``None`` when the model cannot be built there (the real build then reports why)."""
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # an unknown name, a bad option, a model that needs real storage
        return None
    return sum(p.numel() for p in model.parameters())


def check_meta_limits(
    name: str, num_classes: Any, config: dict[str, Any], build: Callable[[], nn.Module]
) -> None:
    """Refuse a torchvision/timm model whose meta-device parameter count is past the limit
    (or whose ``image_size``/``img_size``/``input_size`` option is past :data:`MAX_INPUT_SIDE`)."""
    check_int("num_classes", num_classes, 1, MAX_CLASSES)
    for field in ("image_size", "img_size", "input_size"):
        value = config.get(field)
        if _is_int(value) and value > MAX_INPUT_SIDE:
            raise XaikitConfigError(
                f"{name}: {field} {value:,} is past the limit of {MAX_INPUT_SIDE} per side"
            )
    params = count_meta_params(build)
    if params is not None:
        _refuse_params(name, params, "the options")
