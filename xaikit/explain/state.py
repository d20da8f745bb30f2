"""Borrowing a model: put it in the state an explanation needs, always give it back.

After :func:`borrowed` exits, with or without an exception, every module has its previous
train/eval mode and every parameter its previous ``requires_grad`` flag. Parameters and
their ``.grad`` are never written: explanations take gradients with ``torch.autograd.grad``
with respect to activations or inputs only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def has_recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


@contextlib.contextmanager
def borrowed(
    model: nn.Module, *, eval_mode: bool = True, freeze: bool = True
) -> Iterator[nn.Module]:
    """Lend ``model`` in eval mode with frozen parameters; restore both on exit.

    Args:
        eval_mode: switch every module to eval (dropout off, BatchNorm uses its running
            statistics, so explaining never updates them).
        freeze: set ``requires_grad=False`` on every parameter, so no graph is built for
            them and backward passes stop at the tensors we ask gradients for.

    cuDNN's RNN kernels refuse a backward pass in eval mode; for models with recurrent
    layers cuDNN is switched off for the duration (the model stays in eval mode).
    """
    modules = list(model.modules())
    modes = [(module, module.training) for module in modules]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    recurrent = any(isinstance(module, nn.RNNBase) for module in modules)
    cudnn_off = (
        torch.backends.cudnn.flags(enabled=False)
        if recurrent and model_device(model).type == "cuda"
        else contextlib.nullcontext()
    )
    try:
        # Only touch what needs changing: explaining an eval-mode model in a loop then costs
        # a few microseconds, not a recursive train(False).
        if eval_mode and any(training for _, training in modes):
            model.eval()
        if freeze:
            for param, requires_grad in flags:
                if requires_grad:
                    param.requires_grad_(False)
        with cudnn_off, torch.enable_grad():
            yield model
    finally:
        for module, training in modes:
            if module.training != training:
                module.training = training
        for param, requires_grad in flags:
            if param.requires_grad != requires_grad:
                param.requires_grad_(requires_grad)
