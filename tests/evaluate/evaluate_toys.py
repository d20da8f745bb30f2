"""Toy models and data for the explanation-quality tests (hand-checkable on purpose)."""

from __future__ import annotations

import torch
from torch import nn

import xaikit


class SumModel(nn.Module):
    """Two logits ``[log(1 + S), 0]`` with ``S`` the sum of all inputs, so the softmax
    probability of class 0 is exactly ``(1 + S) / (2 + S)``: easy to compute by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(dim=1)
        return torch.stack([torch.log1p(s), torch.zeros_like(s)], dim=1)


class BrightPixelModel(nn.Module):
    """Class 0 evidence is the number of bright pixels (``relu(x - 0.5)`` summed), so only
    the object of :func:`object_images` matters and a blurred object does not count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(x - 0.5).flatten(1).sum(dim=1)
        return torch.stack([s - 2.0, torch.zeros_like(s)], dim=1)


def object_images(n: int, size: int = 12, side: int = 4, seed: int = 0):
    """``(images (n, 1, size, size), masks (n, size, size))``: a bright square (value 1) at a
    random place on dark noise in ``[0, 0.3)``."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g) * 0.3
    oy = torch.randint(0, size - side + 1, (n,), generator=g)
    ox = torch.randint(0, size - side + 1, (n,), generator=g)
    grid = torch.arange(size)
    rows = (grid[None] >= oy[:, None]) & (grid[None] < oy[:, None] + side)
    cols = (grid[None] >= ox[:, None]) & (grid[None] < ox[:, None] + side)
    masks = (rows[:, :, None] & cols[:, None, :]).float()
    images = torch.where(masks[:, None] > 0, torch.ones_like(images), images)
    return images, masks


# Four shape classes that a conv net with global pooling can tell apart anywhere in the image.
_BARS = [torch.ones(2, 8), torch.ones(8, 2), torch.ones(4, 4), torch.ones(6, 6)]
_BARS[3][1:-1, 1:-1] = 0


def bar_data(n: int, size: int = 16, seed: int = 0):
    """``(images (n, 3, 16, 16), labels (n,), masks (n, 16, 16))``: a horizontal bar, a
    vertical bar, a filled square or a hollow square, at a random place on dark noise."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 0.3
    labels = torch.arange(n) % len(_BARS)
    masks = torch.zeros(n, size, size)
    for k, shape in enumerate(_BARS):
        rows = (labels == k).nonzero().squeeze(1)
        h, w = shape.shape
        oy = torch.randint(0, size - h + 1, (len(rows),), generator=g)
        ox = torch.randint(0, size - w + 1, (len(rows),), generator=g)
        ys = oy[:, None, None] + torch.arange(h)[None, :, None]
        xs = ox[:, None, None] + torch.arange(w)[None, None, :]
        masks[rows[:, None, None], ys, xs] = shape
    images = torch.where(masks[:, None] > 0, torch.ones_like(images), images)
    return images, labels, masks


def train_bar_model() -> nn.Module:
    """A simple_cnn trained for a few seconds on :func:`bar_data` (100 % test accuracy)."""
    images, labels, _ = bar_data(512)
    generator = torch.Generator().manual_seed(1)
    state = torch.get_rng_state()
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=4, widths=(8, 16), input_size=16)
    torch.set_rng_state(state)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(6):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), 32):
                rows = order[start : start + 32]
                loss = model.head.loss(model(images[rows]), labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


class IgnoresInput(nn.Module):
    """A CNN whose logits are a learned constant: ``0 * features`` keeps the graph connected,
    so every gradient (and every gradient-based map) is exactly zero."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.bias = nn.Parameter(torch.linspace(1.0, -1.0, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return self.bias.expand(x.shape[0], -1) + 0.0 * features.mean(dim=(1, 2, 3))[:, None]


def input_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A minimal explainer written independently of xaikit.explain: ``|d logit / d x|`` summed
    over channels, ``(N, C, H, W) -> (N, H, W)``."""
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        score = logits.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad.abs().sum(dim=1)
