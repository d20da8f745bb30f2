"""Feature accentuation: what in a real image a unit responds to.

Hamblin, Fel, Saha, Konkle & Alvarez, 2024, "Feature Accentuation: Revealing 'What'
Features Respond to in Natural Images". Instead of starting from noise, the optimization
starts from a real image and moves it towards a channel / class while a penalty keeps it
close to the start, so the result shows *which* features of *this* image drive the unit.

Use it as ``maximize(model, layer, channels, start=images)``
(:func:`xaikit.filters.maximize`), which follows the reference implementation (``horama``
0.3.0, ``feature_accentuation.py``):

* parametrization (:class:`AccentuationImage`): the image's own Fourier spectrum, found by
  inverting the preconditioner (``rfft2`` of the colour-decorrelated ``logit`` of the
  start, ``eps = 1e-3``); the image is ``sigmoid(recorrelate(irfft2(spectrum)))``. The
  forward pass is exactly that; the *gradient* of the spectrum is scaled by
  ``sqrt(H W) / max(f, 1 / max(H, W)) ** decay_power`` (``decay_power = 1.5``), horama's
  ``SpectrumBackwardScaler``, so low frequencies move first;
* regularizer: ``penalty * mean((x - x0) ** 2)`` between the current image and the start
  re-rendered through the parametrization, both in the model's normalized input space
  (horama works in that space, value range ``(-2.5, 2.5)``), ``penalty = 1``;
* NAdam with learning rate 1, as horama. Horama min-max stretches the seed image before
  inverting it; here the start is already a ``[0, 1]`` image and is used as it is.

The result (:class:`~xaikit.filters.maximize.Maximization`) carries ``start`` and the RMS
pixel ``distance`` from it, and its figure shows each original beside its accentuation.
"""

from __future__ import annotations

import torch

from xaikit.filters.param import COLOR_DECORRELATION, _decorrelate, fft_frequencies

_EPS = 1e-3


def fft_scale(height: int, width: int, decay_power: float = 1.5) -> torch.Tensor:
    """``(H, W // 2 + 1)``: horama's ``get_fft_scale``:
    ``sqrt(H W) / max(f, 1 / max(H, W)) ** decay_power``."""
    freqs = fft_frequencies(height, width)
    scale = 1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay_power
    return scale * (height * width) ** 0.5


def inverse_spectrum(images: torch.Tensor, *, decorrelate: bool = True) -> torch.Tensor:
    """``(B, C, H, W)`` in ``[0, 1]`` -> the complex spectrum ``(B, C, H, W // 2 + 1)``
    that :class:`AccentuationImage` renders back to (nearly) the same images."""
    x = images.double()
    logits = torch.log((x + _EPS) / (1.0 - x + _EPS))
    if decorrelate and images.shape[1] == 3:
        inverse = torch.linalg.inv(COLOR_DECORRELATION.double())
        logits = torch.einsum("bchw,dc->bdhw", logits, inverse)
    return torch.fft.rfft2(logits)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` backward (horama's
    ``SpectrumBackwardFunction``; exact, unlike ``x * s + (x - x * s).detach()``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        return grad * scale, None


class AccentuationImage:
    """Images ``(B, C, H, W)`` in ``[0, 1]`` from a spectrum initialized at ``start``, with
    gradients scaled by :func:`fft_scale` (forward unchanged).

    Args:
        start: ``(B, C, H, W)`` images in ``[0, 1]``.
        decay_power: the gradient scaling's power.
        decorrelate: colour decorrelation (only for ``C == 3``).
    """

    def __init__(
        self,
        start: torch.Tensor,
        *,
        decay_power: float = 1.5,
        decorrelate: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.height, self.width = start.shape[-2:]
        self.decorrelate = decorrelate and start.shape[1] == 3
        spectrum = torch.view_as_real(inverse_spectrum(start, decorrelate=self.decorrelate))
        self.spectrum = spectrum.to(device=device, dtype=dtype).requires_grad_(True)
        scale = fft_scale(self.height, self.width, decay_power)
        self.scale = scale[..., None].to(device=device, dtype=dtype)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def __call__(self) -> torch.Tensor:
        # forward: the spectrum itself; backward: its gradient times the scale
        spectrum = _ScaleGradient.apply(self.spectrum, self.scale)
        image = torch.fft.irfft2(torch.view_as_complex(spectrum), s=(self.height, self.width))
        if self.decorrelate:
            image = _decorrelate(image)
        return torch.sigmoid(image)
