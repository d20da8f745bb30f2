"""Tiny networks with set weights, shared by the explanation tests."""

from __future__ import annotations

import torch
from torch import nn


class ConvFlatNet(nn.Module):
    """conv (fixed weights) -> ReLU -> flatten -> linear: gradients vary by position.

    ``(N, 1, 4, 4) -> (N, 3)``; the CAM layer is ``act`` (``(N, C, 4, 4)``).
    """

    def __init__(self, channels: int = 3, classes: int = 3, seed: int = 1) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(channels * 16, classes)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.rand(channels, generator=gen) * 0.5)
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=gen))
            self.fc.bias.copy_(torch.randn(classes, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def conv_by_hand(net: ConvFlatNet, image: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))`` for one ``(1, 4, 4)`` image by explicit sums: ``(C, 4, 4)``."""
    weight, bias = net.conv.weight.detach(), net.conv.bias.detach()
    channels = weight.shape[0]
    padded = torch.zeros(6, 6)
    padded[1:5, 1:5] = image[0]
    out = torch.zeros(channels, 4, 4)
    for c in range(channels):
        for i in range(4):
            for j in range(4):
                total = float(bias[c])
                for a in range(3):
                    for b in range(3):
                        total += float(weight[c, 0, a, b]) * float(padded[i + a, j + b])
                out[c, i, j] = max(total, 0.0)
    return out
