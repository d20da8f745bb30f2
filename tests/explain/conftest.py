"""Tiny networks with set weights for the explanation tests."""

from __future__ import annotations

import pytest
import torch
from explain_nets import ConvFlatNet
from torch import nn

import xaikit


@pytest.fixture
def conv_flat_net() -> ConvFlatNet:
    return ConvFlatNet().eval()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(3, 1, 4, 4, generator=gen)


@pytest.fixture
def zoo_multiclass() -> nn.Module:
    torch.manual_seed(0)
    return xaikit.create_model(
        "simple_cnn", num_classes=5, task="multiclass", in_channels=3, widths=(8, 16)
    ).eval()


@pytest.fixture
def zoo_multilabel() -> nn.Module:
    torch.manual_seed(0)
    model = xaikit.create_model(
        "simple_cnn", num_classes=6, task="multilabel", in_channels=3, widths=(8, 16)
    ).eval()
    with torch.no_grad():
        model.head.fc.bias.copy_(torch.tensor([2.0, -2.0, 0.3, -0.3, 0.0, 1.0]))
    return model


@pytest.fixture
def images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(4, 3, 16, 16, generator=gen)
