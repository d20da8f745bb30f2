"""Lucid's "redirected ReLU" gradient for the first steps of activation maximization.

A channel that is zero (a dead ReLU) on the grey starting image gets no gradient at all, so
plain gradient ascent leaves it grey. For the first few steps, where an element's ordinary
ReLU gradient is zero everywhere, the gradient is let through wherever it would push a
negative pre-activation *up* (towards firing), and blocked where it would push it further
down (Olah et al., 2017, "Feature Visualization"; Lucid's ``redirected_relu_grad``). The
decision is per batch element, so elements stay independent.

It is applied by a ``TorchFunctionMode`` while the forward pass runs: every ``relu`` the
model calls, as a module or a function, is swapped for the redirected one. The model and its
modules are not touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_RELUS = {torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class _RedirectedReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _redirected(grad, x)


class _RedirectedReLUInplace(torch.autograd.Function):
    """:class:`_RedirectedReLUFunction` for an in-place ReLU: the tensor is rectified in
    place, as the model asked (code that keeps using its tensor after ``x.relu_()`` sees the
    ReLU), and no new activation is allocated. The backward reads the output, which is
    ``<= 0`` exactly where the input was."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(min=0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return _redirected(grad, out)


def _redirected(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The redirected gradient at a ReLU whose input (or output) is ``x``."""
    relu_grad = torch.ops.aten.threshold_backward(grad, x, 0)  # ReLU's own backward
    rows = _rows(relu_grad)
    alive = (rows.amax(dim=1) != 0) | (rows.amin(dim=1) != 0)  # vectorized, unlike any()
    if bool(alive.all()):  # the common case: every element has an ordinary gradient
        return relu_grad
    dead = ~alive.reshape(-1, *([1] * (x.dim() - 1)))
    # grad is d(loss)/d(output) for a loss being minimized: at a negative input a negative
    # grad pushes the input up, towards firing; that part is let through.
    return torch.where(dead & (x <= 0) & (grad < 0), grad, relu_grad)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (N, -1), one row per batch element, in memory order: a view of a
    channels-last tensor too (``t.reshape(N, -1)`` would copy it: 6 ms of an (8, 64, 64, 64)
    gradient)."""
    order = sorted(range(1, t.dim()), key=lambda i: -t.stride(i))
    return t.permute(0, *order).reshape(t.shape[0], -1)


_INPLACE = {torch.relu_, F.relu_, torch.Tensor.relu_}


def _in_place(func, args, kwargs) -> bool:
    if func in _INPLACE:
        return True
    return func is F.relu and bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))


class RedirectedReLU(TorchFunctionMode):
    """Within this mode, ``relu`` on tensors that need a gradient uses the redirected
    gradient (forward values are unchanged)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            x = args[0] if args else kwargs["input"]
            if isinstance(x, torch.Tensor) and x.requires_grad and x.dim() > 1:
                if _in_place(func, args, kwargs) and not x.is_leaf:
                    return _RedirectedReLUInplace.apply(x)
                return _RedirectedReLUFunction.apply(x)
        return func(*args, **kwargs)
