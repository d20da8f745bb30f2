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

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# The closed-form checks live in a torch-free module (the CLI runs them before torch loads).
from xaikit._model_limits import (  # noqa: F401 - re-exported
    DEFAULT_MAX_PARAMS,
    MAX_ACTIVATION_BYTES,
    MAX_CLASSES,
    MAX_DEPTH,
    MAX_INPUT_ELEMENTS,
    MAX_INPUT_SIDE,
    MAX_KERNEL_SIZE,
    MAX_PARAMS_ENV,
    ZOO_FORMULAS,
    _is_int,
    _refuse_params,
    check_input_shape,
    check_int,
    check_widths,
    check_zoo_limits,
    estimate_zoo,
    max_params,
    precheck_checkpoint,
)
from xaikit.errors import XaikitConfigError


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
