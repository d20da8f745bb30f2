"""Model-independent control maps, so a table can say "below random and below a centred
Gaussian": a uniform random map (every pixel an independent draw) and a centred Gaussian blob
(the "objects are in the middle" prior).

Both know nothing of the model, so they also make good negative controls for the sanity
checks: they must fail the randomization check and the class-contrast check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xaikit.errors import XaikitConfigError


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise XaikitConfigError(f"a map shape must be (N, H, W)-like positive sizes, got {shape}")
    return shape


def random_maps(
    shape: Sequence[int], *, seed: int = 0, device: str | torch.device | None = None
) -> torch.Tensor:
    """Uniform random maps in ``[0, 1)``: ``shape`` ``(N, H, W)`` (any ``(..., H, W)``).

    Drawn from a private CPU generator seeded with ``seed`` (the global RNG is untouched, and
    the maps are the same on every device), then moved to ``device``.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.rand(_check_shape(shape), generator=generator).to(device)


def gaussian_maps(
    shape: Sequence[int], *, sigma: float = 0.25, device: str | torch.device | None = None
) -> torch.Tensor:
    """A centred Gaussian blob, the same for every map: ``shape`` ``(..., H, W)``, max 1.

    ``exp(-((y - cy)^2 / (2 (sigma H)^2) + (x - cx)^2 / (2 (sigma W)^2)))`` with the centre
    ``(cy, cx) = ((H - 1) / 2, (W - 1) / 2)`` in pixel indices; ``sigma`` is a fraction of the
    side. For 1-D maps ``(..., L)`` pass a shape whose last axis is the length and ``H = 1``.
    """
    shape = _check_shape(shape)
    if sigma <= 0:
        raise XaikitConfigError(f"sigma must be positive, got {sigma}")
    h, w = shape[-2], shape[-1]
    y = torch.arange(h, dtype=torch.float64, device=device) - (h - 1) / 2
    x = torch.arange(w, dtype=torch.float64, device=device) - (w - 1) / 2
    gy = torch.exp(-(y * y) / (2 * (sigma * h) ** 2))
    gx = torch.exp(-(x * x) / (2 * (sigma * w) ** 2))
    blob = (gy[:, None] * gx[None, :]).float()
    return blob.expand(shape).clone()


def random_explainer(seed: int = 0):
    """An explainer ``(model, inputs, target) -> (N, *S)`` of :func:`random_maps`.

    It ignores the model and the target; the same inputs shape and seed give the same maps.
    """

    def random(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return random_maps((inputs.shape[0], *inputs.shape[2:]), seed=seed, device=inputs.device)

    return random


def gaussian_explainer(sigma: float = 0.25):
    """An explainer ``(model, inputs, target) -> (N, *S)`` of :func:`gaussian_maps`."""

    def gaussian(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        spatial = tuple(inputs.shape[2:])
        plane = spatial if len(spatial) == 2 else (1, *spatial)  # a signal is a 1 x L plane
        maps = gaussian_maps((inputs.shape[0], *plane), sigma=sigma, device=inputs.device)
        return maps.reshape(inputs.shape[0], *spatial)

    return gaussian


#: name -> explainer factory (keyword options: ``seed`` for random, ``sigma`` for gaussian).
BASELINES = {"random": random_explainer, "gaussian": gaussian_explainer}
