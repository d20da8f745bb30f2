"""Receptive fields computed analytically from the convolutions and poolings before a layer.

Per spatial dimension a layer's output position ``q`` sees the input pixels
``[start + q * jump, start + q * jump + size)``. Starting from the input
(``size=1, jump=1, start=0``), each convolution or pooling with kernel ``k``, stride ``s``,
left padding ``p`` and dilation ``d`` maps ``(size, jump, start)`` to

    size + (d (k - 1)) jump,    jump s,    start - p jump

(Araujo, Norris & Sim, 2019, "Computing Receptive Fields of Convolutional Neural Networks",
Distill). Operations that join tensors of the same spatial shape (residual additions,
concatenation, BatchNorm, activations) take the union of their inputs' fields, so branching
networks (ResNets) are handled: the field is followed through the actual functions the
forward pass calls (a ``TorchFunctionMode``), not through a guessed chain of modules.
Operations that keep the spatial shape are taken to be pointwise in space; anything that
changes it otherwise (interpolation, flattening, global pooling) ends the trace.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from xaikit.errors import XaikitConfigError
from xaikit.explain.hooks import Capture
from xaikit.explain.layers import resolve_layer
from xaikit.explain.state import borrowed, model_device

_CONVS = {"conv1d", "conv2d", "conv3d"}
_MAX_POOLS = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
}
_AVG_POOLS = {"avg_pool1d", "avg_pool2d", "avg_pool3d"}


@dataclass(frozen=True)
class ReceptiveField:
    """The input region each output position of a layer sees, per spatial dimension.

    Attributes:
        size: how many input pixels one output position sees.
        jump: input pixels between neighbouring output positions (the product of strides).
        start: input coordinate of the first pixel seen by output position 0 (negative where
            padding reaches outside the input).
    """

    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.size)

    def boxes(self, positions: torch.Tensor) -> torch.Tensor:
        """``(..., dims)`` output positions -> ``(..., dims, 2)`` input ``[lo, hi)`` per
        dimension, unclipped."""
        jump = torch.as_tensor(self.jump, device=positions.device)
        start = torch.as_tensor(self.start, device=positions.device)
        size = torch.as_tensor(self.size, device=positions.device)
        lo = start + positions * jump
        return torch.stack([lo, lo + size], dim=-1)

    def crop_boxes(self, positions: torch.Tensor, input_shape: Iterable[int]) -> torch.Tensor:
        """``(..., dims)`` positions -> ``(..., dims, 2)`` crop windows ``[lo, hi)`` that lie
        inside an input of spatial shape ``input_shape``.

        Each window is ``min(size, L)`` long (so crops stack) and contains the receptive
        field clipped to the input; it equals the field wherever the field fits.
        """
        length = torch.as_tensor(list(input_shape), device=positions.device)
        window = torch.minimum(torch.as_tensor(self.size, device=positions.device), length)
        box = self.boxes(positions)
        lo = torch.minimum(box[..., 0].clamp(min=0), length - window)
        return torch.stack([lo, lo + window], dim=-1)


def _tuple(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    values = tuple(int(v) for v in value)
    return values * dims if len(values) == 1 else values


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


class _Tracer(TorchFunctionMode):
    """Follows ``ReceptiveField``s from the root input through every torch function call."""

    def __init__(self, root: torch.Tensor) -> None:
        super().__init__()
        self.dims = root.dim() - 2
        self._fields: dict[int, tuple[weakref.ref, ReceptiveField]] = {}
        one = (1,) * self.dims
        self._set(root, ReceptiveField(one, one, (0,) * self.dims))

    def _set(self, tensor: torch.Tensor, field: ReceptiveField) -> None:
        self._fields[id(tensor)] = (weakref.ref(tensor), field)

    def field(self, tensor: torch.Tensor) -> ReceptiveField | None:
        entry = self._fields.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._propagate(getattr(func, "__name__", ""), args, kwargs, out)
        return out

    def _propagate(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        first = args[0] if args else kwargs.get("input")
        source = self.field(first) if isinstance(first, torch.Tensor) else None
        result = out[0] if isinstance(out, (tuple, list)) and out else out
        if not isinstance(result, torch.Tensor) or result.dim() != self.dims + 2:
            return
        if source is not None and name in _CONVS | _MAX_POOLS | _AVG_POOLS | {"pad"}:
            self._set(result, self._geometric(name, args, kwargs, source))
            return
        self._pointwise(args, kwargs, out)

    def _geometric(
        self, name: str, args: tuple, kwargs: dict, source: ReceptiveField
    ) -> ReceptiveField:
        dims = self.dims
        if name == "pad":
            pad = list(_arg(args, kwargs, 1, "pad", ()))
            # F.pad lists (left, right) pairs from the last dimension backwards.
            left = [
                pad[2 * (dims - 1 - i)] if 2 * (dims - 1 - i) < len(pad) else 0 for i in range(dims)
            ]
            start = tuple(s - p * j for s, p, j in zip(source.start, left, source.jump))
            return ReceptiveField(source.size, source.jump, start)
        if name in _CONVS:
            weight = _arg(args, kwargs, 1, "weight", None)
            kernel = tuple(weight.shape[2:])
            stride = _tuple(_arg(args, kwargs, 3, "stride", 1), dims)
            padding = _arg(args, kwargs, 4, "padding", 0)
            dilation = _tuple(_arg(args, kwargs, 5, "dilation", 1), dims)
            if isinstance(padding, str):
                same = padding == "same"
                padding = tuple((d * (k - 1)) // 2 if same else 0 for k, d in zip(kernel, dilation))
            padding = _tuple(padding, dims)
        else:
            kernel = _tuple(_arg(args, kwargs, 1, "kernel_size", 1), dims)
            stride = _arg(args, kwargs, 2, "stride", None)
            stride = (
                kernel if stride is None or stride == [] or stride == () else _tuple(stride, dims)
            )
            padding = _tuple(_arg(args, kwargs, 3, "padding", 0), dims)
            dilation = (
                _tuple(_arg(args, kwargs, 4, "dilation", 1), dims)
                if name in _MAX_POOLS
                else (1,) * dims
            )
        size, jump, start = [], [], []
        for i in range(dims):
            j = source.jump[i]
            size.append(source.size[i] + dilation[i] * (kernel[i] - 1) * j)
            start.append(source.start[i] - padding[i] * j)
            jump.append(j * stride[i])
        return ReceptiveField(tuple(size), tuple(jump), tuple(start))

    def _pointwise(self, args: tuple, kwargs: dict, out: Any) -> None:
        tracked = [
            (t, f)
            for t in _tensors(args, kwargs)
            if (f := self.field(t)) is not None and t.dim() == self.dims + 2
        ]
        if not tracked:
            return
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        for result in outputs:
            if not isinstance(result, torch.Tensor) or result.dim() != self.dims + 2:
                continue
            same = [f for t, f in tracked if t.shape[2:] == result.shape[2:]]
            if same and all(f.jump == same[0].jump for f in same):
                self._set(result, _union(same))


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def _union(fields: list[ReceptiveField]) -> ReceptiveField:
    start = tuple(min(f.start[i] for f in fields) for i in range(fields[0].dims))
    end = tuple(max(f.start[i] + f.size[i] for f in fields) for i in range(fields[0].dims))
    size = tuple(e - s for s, e in zip(start, end))
    return ReceptiveField(size, fields[0].jump, start)


def trace_receptive_field(
    model: nn.Module, layer: str | nn.Module, example: torch.Tensor
) -> tuple[str, ReceptiveField | None, tuple[int, ...]]:
    """Run one forward pass of ``example[:1]`` up to ``layer`` and follow the field.

    Returns ``(layer name, field or None when untraceable, layer output shape)``.
    """
    name, module = resolve_layer(model, layer, example[:1])
    x = example[:1].to(model_device(model))
    with borrowed(model), torch.no_grad(), Capture(model, {name: module}, stop=True) as cap:
        tracer = _Tracer(x)
        with tracer:
            cap.run(x)
        output = cap.activations[name]
        field = tracer.field(output)
    return name, field, tuple(output.shape)


def receptive_field(
    model: nn.Module, layer: str | nn.Module, example: torch.Tensor
) -> ReceptiveField:
    """The receptive field of ``layer``'s output positions in the input.

    Args:
        model: any network of convolutions, poolings and pointwise operations.
        layer: a name or module whose output is ``(N, C, *spatial)``.
        example: an input ``(N, C_in, *spatial)`` (only the first sample is run).

    Raises:
        XaikitConfigError: the layer's output has no spatial dimensions, or an operation
            before it changes the spatial shape in a way this analysis does not model.
    """
    name, field, shape = trace_receptive_field(model, layer, example)
    if field is None:
        raise XaikitConfigError(
            f"cannot trace the receptive field of {name!r} (output {shape}): it has no "
            "spatial dimensions, or an operation before it (interpolation, flattening, "
            "pooling to a fixed size) changes the spatial shape in a way not modelled"
        )
    return field
