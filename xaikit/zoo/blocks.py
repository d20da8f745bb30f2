"""Building blocks of the model zoo: ``ConvBlock`` = conv -> BatchNorm -> activation -> pool.

One block class serves 1-D signals and 2-D images (``dims=1`` or ``dims=2``), so every
architecture in the zoo is written once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from xaikit.errors import XaikitConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_POOL = {
    ("max", 1): nn.MaxPool1d,
    ("max", 2): nn.MaxPool2d,
    ("avg", 1): nn.AvgPool1d,
    ("avg", 2): nn.AvgPool2d,
}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise XaikitConfigError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def _check_dims(dims: int) -> None:
    if dims not in _CONV:
        raise XaikitConfigError(f"dims must be 1 or 2, got {dims}")


class ConvBlock(nn.Sequential):
    """conv -> BatchNorm (optional) -> activation -> pooling (optional).

    Shapes: ``(N, C_in, H, W) -> (N, C_out, H', W')`` for ``dims=2`` and
    ``(N, C_in, L) -> (N, C_out, L')`` for ``dims=1``, where the spatial size is kept by the
    convolution ('same' padding, stride 1) and divided by ``pool_size`` when pooling.

    Children are named ``conv``, ``bn``, ``act`` and ``pool`` so layer names read well in
    ``xaikit layers`` (``features.block2.act``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        dims: int = 2,
        batchnorm: bool = True,
        activation: str = "relu",
        pool: str | None = None,
        pool_size: int = 2,
        stride: int = 1,
    ) -> None:
        _check_dims(dims)
        layers: dict[str, nn.Module] = {
            "conv": _CONV[dims](
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=not batchnorm,
            )
        }
        if batchnorm:
            layers["bn"] = _BATCHNORM[dims](out_channels)
        layers["act"] = make_activation(activation)
        if pool is not None:
            if (pool, dims) not in _POOL:
                raise XaikitConfigError(f"pool must be 'max', 'avg' or None, got {pool!r}")
            layers["pool"] = _POOL[(pool, dims)](pool_size)
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)


class ResidualBlock(nn.Module):
    """The basic residual block of ResNet-20 (He et al., 2016, "Deep Residual Learning").

    ``(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)``: two 3x3 conv-BN layers with a
    shortcut that is the identity, or a 1x1 conv-BN projection when the shape changes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        activation: str = "relu",
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else lambda _c: nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=not batchnorm)
        self.bn1 = norm(out_channels)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=not batchnorm)
        self.bn2 = norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                norm(out_channels),
            )
        # A separate output activation module so a hook on the block's output sees the
        # post-activation map, the one CAM methods expect.
        self.act2 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))
