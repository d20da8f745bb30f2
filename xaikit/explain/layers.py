"""Finding the layer to explain: by name, by module, or ``"auto"``.

``"auto"`` is the last module, in execution order, whose output still has a spatial extent
(``(N, C, H, W)`` with ``H, W > 1``; ``(N, C, L)`` with ``L > 1`` for 1-D models): inside
``features`` for zoo models and torchvision models that have one (vgg, densenet, mobilenet,
efficientnet), anywhere in the network otherwise (resnet's ``layer4``). A 1x1 convolution
with one output channel per class (a "logits conv") is skipped. Containers and their last
child produce the same tensor; the container wins, so the choice reads as a block name
(``features.block3``, ``layer4``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.state import borrowed, model_device


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``xaikit layers``: a module and what it output in a dry run."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int
    order: int  # position in execution order (-1: never ran)


_AUTO_CACHE: WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = WeakKeyDictionary()


def _shape(output: Any) -> tuple[int, ...] | None:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return tuple(output[0].shape)
    return None


def trace_layers(
    model: nn.Module,
    example: torch.Tensor,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> list[LayerInfo]:
    """Run one dry forward pass on ``example`` and describe every named module.

    Rows are in execution order (when each module's forward finished); modules that never
    ran come last with ``order=-1``. The model's state is borrowed and restored.
    ``forward(example)`` replaces ``model(example)`` for models that take more than one
    input (it must run ``model``).
    """
    return _trace(model, example, forward)[0]


def _trace(
    model: nn.Module,
    example: torch.Tensor,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> tuple[list[LayerInfo], tuple[int, ...] | None]:
    finished: dict[str, tuple[int, tuple[int, ...] | None]] = {}
    handles = []

    def recorder(name: str):
        def hook(_m: nn.Module, _i: Any, output: Any) -> None:
            finished[name] = (len(finished), _shape(output))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(recorder(name)))
        with borrowed(model), torch.no_grad():
            example = example.to(model_device(model))
            output_shape = _shape(model(example) if forward is None else forward(example))
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name, module in model.named_modules():
        if not name:
            continue
        order, shape = finished.get(name, (-1, None))
        params = sum(p.numel() for p in module.parameters())
        rows.append(LayerInfo(name, type(module).__name__, shape, params, order))
    ran = sorted((r for r in rows if r.order >= 0), key=lambda r: r.order)
    return ran + [r for r in rows if r.order < 0], output_shape


def _is_spatial(shape: tuple[int, ...] | None, input_dims: int) -> bool:
    if shape is None or len(shape) != input_dims:
        return False
    return all(s > 1 for s in shape[2:])


def _is_logits_conv(module: nn.Module, num_outputs: int | None) -> bool:
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d))
        and all(k == 1 for k in module.kernel_size)
        and num_outputs is not None
        and module.out_channels == num_outputs
    )


def auto_layer(
    model: nn.Module,
    example: torch.Tensor,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> str:
    """The name of the default target layer for inputs shaped like ``example``.

    The result is cached per model and input shape, so only the first call pays for the
    dry forward pass (on one sample). ``forward``: see :func:`trace_layers`.
    """
    key = tuple(example.shape[1:])
    cached = _AUTO_CACHE.setdefault(model, {})
    if key in cached:
        return cached[key]
    rows, output_shape = _trace(model, example[:1], forward)
    ran = [r for r in rows if r.order >= 0]
    modules = dict(model.named_modules())
    num_outputs = output_shape[-1] if output_shape else None
    scope = "features." if isinstance(getattr(model, "features", None), nn.Module) else ""
    candidates = [
        r
        for r in ran
        if r.name.startswith(scope)
        and _is_spatial(r.output_shape, example.dim())
        and not _is_logits_conv(modules[r.name], num_outputs)
    ]
    if not candidates:
        raise XaikitConfigError(
            f"no layer of this model outputs a spatial map for inputs of shape "
            f"{tuple(example.shape)}; pass layer=<name> (see `xaikit layers`)"
        )
    # The last to finish; a container finishes after its last child with the same output.
    best = candidates[-1]
    cached[key] = best.name
    return best.name


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(
    model: nn.Module,
    layer: str | nn.Module,
    example: torch.Tensor | None = None,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> tuple[str, nn.Module]:
    """Turn ``"auto"``, a dotted name or a module into ``(name, module)``.

    ``example`` (and ``forward`` for several-input models, see :func:`trace_layers`) are
    needed for ``"auto"`` only.

    Raises:
        XaikitConfigError: an unknown name (the message lists the closest valid names) or a
            module that is not part of ``model``.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise XaikitConfigError("the given layer module is not part of this model")
    if layer == "auto":
        if example is None:
            raise XaikitConfigError("layer='auto' needs an example input to trace the model")
        name = auto_layer(model, example, forward)
        return name, model.get_submodule(name)
    if isinstance(layer, str) and layer:
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            pass
    names = layer_names(model)
    close = difflib.get_close_matches(str(layer), names, n=5, cutoff=0.4)
    hint = (
        f"closest: {', '.join(close)}" if close else f"valid names include: {', '.join(names[-8:])}"
    )
    raise XaikitConfigError(
        f"model has no layer named {layer!r}; {hint} (`xaikit layers --model M` lists all)"
    )
