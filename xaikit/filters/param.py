"""Image parametrizations for activation maximization: what the optimizer actually changes.

A parametrization holds a batch of free tensors and maps them to images in ``[0, 1]``
``(B, C, H, W)`` (signals are images of height 1). Each batch element's initial values are
drawn from its own generator, so an element starts the same whether it is optimized alone
or with others.

* :class:`FourierImage` (Mordvintsev et al., 2018, "Differentiable Image
  Parameterizations", Distill; Olah et al., 2017, "Feature Visualization", Distill): the
  image is the inverse real FFT of a spectrum scaled by ``1 / f``, so gradient steps change
  low frequencies as readily as high ones and the result is not high-frequency noise; for
  3-channel images the colours are decorrelated with the square root of an ImageNet colour
  covariance (Lucid's matrix), then a sigmoid maps to ``[0, 1]``.
* :class:`PixelImage`: one free value per pixel, through a sigmoid (the naive baseline).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# sqrt of the colour covariance of ImageNet (Lucid, optvis/param/color.py), columns = R, G, B.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_DECORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
# Lucid divides the image by this before the sigmoid; larger values desaturate the start.
_FOURIER_DAMPING = 4.0


def _draw(generators: Sequence[torch.Generator], shape: tuple[int, ...], sd: float) -> torch.Tensor:
    """``(B, *shape)`` normal noise, element ``b`` from ``generators[b]`` (CPU, then moved)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]) * sd


def _decorrelate(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)``: map decorrelated colour coordinates to RGB."""
    matrix = COLOR_DECORRELATION.to(device=image.device, dtype=image.dtype)
    # (3, 3) @ (B, 3, H*W): the same sums as einsum("bchw,dc->bdhw"), bit for bit, in a
    # quarter of the time (einsum permutes to one (B*H*W, 3) x (3, 3) product)
    return torch.matmul(matrix, image.flatten(2)).view_as(image)


def fft_frequencies(height: int, width: int) -> torch.Tensor:
    """``(H, W // 2 + 1)``: the spatial frequency magnitude of each ``rfft2`` coefficient."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return (fx * fx + fy * fy).sqrt()


class FourierImage:
    """Images ``(B, C, H, W)`` in ``[0, 1]`` from a ``1/f``-scaled spectrum
    ``(B, C, H, W // 2 + 1, 2)`` (real and imaginary parts).

    Args:
        generators: one per batch element (its initial spectrum).
        channels, height, width: the image shape.
        sd: standard deviation of the initial spectrum.
        decay_power: the spectrum is scaled by ``1 / max(f, 1 / max(H, W)) ** decay_power``.
        decorrelate: decorrelate colours (only for ``channels == 3``).
        device, dtype: where the spectrum lives and its precision.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        channels: int,
        height: int,
        width: int,
        *,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.height, self.width = height, width
        self.decorrelate = decorrelate and channels == 3
        freqs = fft_frequencies(height, width)
        scale = 1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay_power
        self.scale = scale[..., None].to(device=device, dtype=dtype)
        shape = (channels, *freqs.shape, 2)
        self.spectrum = _draw(generators, shape, sd).to(device=device, dtype=dtype)
        self.spectrum.requires_grad_(True)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def __call__(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum * self.scale)
        image = torch.fft.irfftn(spectrum, s=(self.height, self.width), norm="ortho")
        image = image / _FOURIER_DAMPING
        if self.decorrelate:
            image = _decorrelate(image)
        return torch.sigmoid(image)


class PixelImage:
    """Images ``(B, C, H, W)`` in ``[0, 1]`` as ``sigmoid`` of free pixels (colour
    decorrelation for ``channels == 3`` when ``decorrelate``)."""

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        channels: int,
        height: int,
        width: int,
        *,
        sd: float = 0.01,
        decorrelate: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.decorrelate = decorrelate and channels == 3
        self.pixels = _draw(generators, (channels, height, width), sd).to(device, dtype)
        self.pixels.requires_grad_(True)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def __call__(self) -> torch.Tensor:
        image = _decorrelate(self.pixels) if self.decorrelate else self.pixels
        return torch.sigmoid(image)


PARAMETRIZATIONS = {"fourier": FourierImage, "pixel": PixelImage}
