"""Small data sets and models for the filter tests, all generated from fixed seeds."""

from __future__ import annotations

import torch
from torch import nn

import xaikit

SIZE = 16


def striped_images(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-contrast stripes around grey, three classes (horizontal, vertical, diagonal):
    ``(n, 3, 16, 16)`` in [0, 1] and ``(n,)`` labels. The contrast is far below what [0, 1]
    allows, so an optimized image can beat every data set image."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    phase = torch.randint(0, 8, (n, 1, 1), generator=gen)
    waves = torch.stack([(yy + phase) % 8 < 4, (xx + phase) % 8 < 4, (xx + yy + phase) % 8 < 4], 1)
    pattern = waves[torch.arange(n), labels].float() * 2 - 1
    amplitude = 0.03 + 0.03 * torch.rand(n, 3, 1, 1, generator=gen)
    noise = 0.01 * torch.randn(n, 3, SIZE, SIZE, generator=gen)
    return (0.5 + pattern[:, None] * amplitude + noise).clamp(0, 1), labels


def normalization_of(images: torch.Tensor) -> dict[str, list[float]]:
    return {
        "mean": images.mean(dim=(0, 2, 3)).tolist(),
        "std": images.std(dim=(0, 2, 3)).tolist(),
    }


def trained_striped_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    """A simple_cnn (8, 16 channels) trained to 100 % on :func:`striped_images`, with the
    data's normalization; returns ``(model, images, labels, normalization)``."""
    images, labels = striped_images()
    norm = normalization_of(images)
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    inputs = (images - mean) / std
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = xaikit.create_model("simple_cnn", num_classes=3, input_size=SIZE, widths=(8, 16))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(5):
            for batch in torch.randperm(len(images)).split(48):
                loss = model.head.loss(model(inputs[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        accuracy = (model(inputs).argmax(1) == labels).float().mean()
    assert accuracy > 0.95, f"the toy model did not learn ({accuracy:.2f})"
    return model, images, labels, norm


CROSS = torch.tensor(
    [
        [-1, -1, 1, -1, -1],
        [-1, -1, 1, -1, -1],
        [1, 1, 1, 1, 1],
        [-1, -1, 1, -1, -1],
        [-1, -1, 1, -1, -1],
    ],
    dtype=torch.float32,
)


def planted_crosses(
    n: int = 120, planted: int = 8, size: int = 20, seed: int = 0
) -> tuple[torch.Tensor, list[int], list[tuple[int, int]]]:
    """Grey noise images ``(n, 1, size, size)`` with a bright 5x5 cross planted in
    ``planted`` of them; returns (images, planted indices, top-left corner of each cross)."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.5 + 0.1 * torch.randn(n, 1, size, size, generator=gen)
    where = torch.randperm(n, generator=gen)[:planted].sort().values.tolist()
    corners = []
    for index in where:
        y, x = torch.randint(0, size - 5, (2,), generator=gen).tolist()
        images[index, 0, y : y + 5, x : x + 5] = 0.5 + 0.45 * CROSS
        corners.append((y, x))
    return images.clamp(0, 1), where, corners


def cross_detector() -> nn.Module:
    """simple_cnn on 1-channel 20x20 inputs whose first-block channel 0 is a matched filter
    for :data:`CROSS` and whose second-block channel 1 passes block-1 channel 0 through its
    centre tap: both fire most on the planted crosses."""
    model = xaikit.create_model(
        "simple_cnn", num_classes=2, in_channels=1, input_size=20, widths=(4, 4), kernel_size=5
    ).eval()
    with torch.no_grad():
        conv1, conv2 = model.features.block1.conv, model.features.block2.conv
        conv1.weight.zero_()
        conv1.weight[0, 0] = CROSS / CROSS.abs().sum()
        conv2.weight.zero_()
        conv2.weight[1, 0, 2, 2] = 1.0
    return model
