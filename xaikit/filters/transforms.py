"""Random transformations applied to the image before each step of activation maximization.

Small random shifts, zooms and rotations make the optimized image work under all of them,
which removes the high-frequency patterns a single fixed view would exploit (Olah et al.,
2017, "Feature Visualization", "transformation robustness"; Mordvintsev et al., 2015,
"Inceptionism"). All transformations of one step are composed into one affine matrix per
batch element and applied with one ``affine_grid`` / ``grid_sample``; pixels that come from
outside the image are mid-grey (0.5).

Randomness is passed in, not drawn: each transformation reads ``n_random`` uniform numbers
per element and step, which the caller draws from that element's own generator, so one
element's transformations do not depend on the others in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

FILL = 0.5


class Transform:
    """One random geometric transformation: ``n_random`` uniforms in ``[0, 1)`` per element
    -> an affine matrix ``(B, 3, 3)`` in normalized coordinates (``[-1, 1]``, the
    ``affine_grid`` convention: output coordinates to input coordinates)."""

    n_random: int = 0

    def matrix(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        raise NotImplementedError


def _eye(batch: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, dtype=like.dtype, device=like.device).repeat(batch, 1, 1)


class Jitter(Transform):
    """Shift by a whole number of pixels drawn uniformly from ``[-pixels, pixels]`` per axis
    (only along the width for images of height 1)."""

    n_random = 2

    def __init__(self, pixels: int) -> None:
        self.pixels = int(pixels)

    def matrix(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        shift = torch.floor(u * (2 * self.pixels + 1)) - self.pixels
        m = _eye(u.shape[0], u)
        m[:, 0, 2] = 2 * shift[:, 0] / width
        m[:, 1, 2] = 2 * shift[:, 1] / height if height > 1 else 0.0
        return m

    def __repr__(self) -> str:
        return f"Jitter({self.pixels})"


class Scale(Transform):
    """Zoom by a factor drawn uniformly from ``[low, high]`` (about the centre)."""

    n_random = 1

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = float(low), float(high)

    def matrix(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        factor = self.low + (self.high - self.low) * u[:, 0]
        m = _eye(u.shape[0], u)
        m[:, 0, 0] = 1 / factor
        m[:, 1, 1] = 1 / factor if height > 1 else 1.0
        return m

    def __repr__(self) -> str:
        return f"Scale({self.low}, {self.high})"


class Rotate(Transform):
    """Rotate by an angle drawn uniformly from ``[-degrees, degrees]`` (none for height 1)."""

    n_random = 1

    def __init__(self, degrees: float) -> None:
        self.degrees = float(degrees)

    def matrix(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        m = _eye(u.shape[0], u)
        if height == 1:
            return m
        angle = (2 * u[:, 0] - 1) * math.radians(self.degrees)
        cos, sin = angle.cos(), angle.sin()
        # Rotate in pixel units, then rescale so non-square images are not sheared.
        m[:, 0, 0], m[:, 0, 1] = cos, -sin * height / width
        m[:, 1, 0], m[:, 1, 1] = sin * width / height, cos
        return m

    def __repr__(self) -> str:
        return f"Rotate({self.degrees})"


def standard_transforms(size: int) -> list[Transform]:
    """The default for a ``size``-pixel image: jitter of ``size / 16`` pixels, zoom
    0.9-1.1, rotation up to 10 degrees, then a second jitter of ``size / 32`` pixels
    (Lucid's ``standard_transforms``, scaled to the image)."""
    return [
        Jitter(max(1, round(size / 16))),
        Scale(0.9, 1.1),
        Rotate(10.0),
        Jitter(max(1, round(size / 32))),
    ]


def n_random(transforms: Sequence[Transform]) -> int:
    """Uniform numbers per element and step the sequence needs."""
    return sum(t.n_random for t in transforms)


def _affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=False)`` by broadcasting (half
    its time: affine_grid multiplies an ``(H*W, 3)`` grid by each ``(3, 2)`` matrix);
    equal to it to float rounding (4.8e-7 at most)."""
    options = dict(device=theta.device, dtype=theta.dtype)
    xs = (torch.arange(width, **options) * 2 + 1) / width - 1  # pixel centres in [-1, 1]
    ys = ((torch.arange(height, **options) * 2 + 1) / height - 1)[:, None]
    t = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    return (t[:, :, 0] * xs + t[:, :, 1] * ys + t[:, :, 2]).permute(0, 2, 3, 1)


def apply_transforms(
    images: torch.Tensor, transforms: Sequence[Transform], u: torch.Tensor
) -> torch.Tensor:
    """``(B, C, H, W)`` images and ``(B, n_random)`` uniforms -> transformed ``(B, C, H, W)``.

    The first transformation in the list acts on the image first.
    """
    if not transforms:
        return images
    batch, _, height, width = images.shape
    total = _eye(batch, images)
    offset = 0
    for transform in transforms:
        part = u[:, offset : offset + transform.n_random]
        offset += transform.n_random
        # Applying A then B samples the input at A(B(x)): compose on the right.
        total = total @ transform.matrix(part, height, width)
    grid = _affine_grid(total[:, :2], height, width)
    moved = F.grid_sample(images - FILL, grid, mode="bilinear", align_corners=False)
    return moved + FILL
