"""Cascading model-parameter randomization (Adebayo et al., 2018, "Sanity Checks for Saliency
Maps"): re-initialize layers from the top (the head) down, one at a time.

Only ever applied to a deep copy: :func:`cascade_layers` lists the layers,
:func:`randomize_layer` re-draws one layer's parameters in place from a private generator.

Re-initialization (the distributions of PyTorch's default initialization, so activations keep
a sensible scale):

* convolution and linear layers: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in));
* recurrent layers (``nn.RNN``/``nn.LSTM``/``nn.GRU``): every parameter ~
  U(-1/sqrt(hidden_size), 1/sqrt(hidden_size));
* normalization layers (BatchNorm, GroupNorm, LayerNorm, InstanceNorm): affine weight and bias
  ~ U(-1, 1), and BatchNorm's running statistics reset to mean 0, variance 1 (they were
  learned from data too).

Values are drawn on the CPU, so a seed gives the same randomized model on every device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.layers import trace_layers

_NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)
RANDOMIZABLE = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase, *_NORMS)


def cascade_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the parameterized layers in reverse execution order (head first).

    A layer is a convolution, linear, recurrent or normalization module with parameters of its
    own; the order comes from one dry forward pass on ``example`` (``(1, C, H, W)`` suffices),
    so layers the forward pass never calls are left out.

    Raises:
        XaikitConfigError: the model has no such layer.
    """
    modules = dict(model.named_modules())
    rows = trace_layers(model, example[:1])
    names = [
        row.name
        for row in rows
        if row.order >= 0
        and isinstance(modules[row.name], RANDOMIZABLE)
        and any(True for _ in modules[row.name].parameters(recurse=False))
    ]
    if not names:
        raise XaikitConfigError(
            "the model has no convolution, linear, recurrent or normalization layer with "
            "parameters to randomize"
        )
    return names[::-1]


def _uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator) -> None:
    values = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
    tensor.copy_((values * 2.0 - 1.0) * bound)


@torch.no_grad()
def randomize_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw ``module``'s own parameters in place (see the module docstring)."""
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        fan_in = module.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        for param in module.parameters(recurse=False):
            _uniform_(param, bound, generator)
    elif isinstance(module, nn.RNNBase):
        bound = 1.0 / math.sqrt(module.hidden_size)
        for param in module.parameters(recurse=False):
            _uniform_(param, bound, generator)
    elif isinstance(module, _NORMS):
        for param in module.parameters(recurse=False):
            _uniform_(param, 1.0, generator)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
    else:
        raise XaikitConfigError(
            f"cannot randomize a {type(module).__name__}; supported: convolution, linear, "
            "recurrent and normalization layers"
        )
