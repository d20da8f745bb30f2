"""MACO: feature visualization by optimizing only the phase of a fixed Fourier magnitude.

Fel, Boissin, Boutin, Picard, Novello, Colin, Linsley, Rousseau, Cadène, Goetschalckx,
Gardes & Serre, 2023, "Unlocking Feature Visualization for Deeper Networks with MAgnitude
Constrained Optimization" (NeurIPS). The image is ``irfft2(magnitude * exp(i * phase))``
with the magnitude spectrum of natural images held fixed
(:func:`xaikit.filters.spectrum_from`) and only the phase optimized, so the result keeps
natural-image statistics even for deep networks where plain Fourier parametrizations
collapse into high-frequency noise.

This module follows the reference implementation (``horama`` 0.3.0, ``maco_fv.py`` and
``common.py``) and re-implements it batched:

* :class:`MacoImage`: phase ``(B, C, H, W // 2 + 1)`` drawn ``N(0, 1)``; the image is
  ``sigmoid(recorrelate(standardize(irfft2(|M| cos(p'), |M| sin(p')))))`` with
  ``p' = standardize(phase)`` (zero mean, unit unbiased std over each element,
  ``+ 1e-4`` in the denominator, as horama). Horama maps the sigmoid to a value range
  ``(-2.5, 2.5)`` in the model's input space; here the sigmoid gives pixels in ``[0, 1]``
  that :func:`~xaikit.filters.maximize` then normalizes with the model card's statistics,
  so the value range is the one real images have (horama's ``values_range=(0, 1)`` is
  the same function: ``tests/filters/test_maco.py`` checks it to ``1e-5``).
* :class:`MacoCrops`: each step scores ``count`` random crops of the (larger) canvas,
  resized to the model's input: centres ``0.5 + 0.15 N(0, 1)`` of the side, sides uniform
  in ``box`` (default ``(0.25, 0.30)``: the range horama's ``box_size=(0.20, 0.25)``
  actually draws, its ``delta = U * (hi - lo) + hi``), sampled at twice the input size and
  reduced with antialiased bicubic interpolation, then Gaussian and uniform noise of
  ``noise`` (in the normalized input space, as horama) is added. The objective is averaged
  over the crops of each element. Each element's draws come from its own generator.
* The transparency map: the absolute gradient of the objective with respect to the canvas,
  summed over the steps (horama's ``transparency_accumulator``), ``(B, C, H, W)``;
  :func:`maco_rgba` draws the image with it as alpha, as horama's ``plot_maco``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.filters.param import _decorrelate
from xaikit.filters.transforms import FILL

# horama: standardize(t) = (t - mean) / (std + 1e-4)
_STD_EPS = 1e-4


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per batch element: ``(x - mean) / (std + 1e-4)`` over all its other dimensions
    (unbiased std, as ``torch.std``)."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - mean.reshape(shape)) / (std.reshape(shape) + _STD_EPS)


def maco_spectrum(magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """The parametrized spectrum ``|M| exp(i standardize(phase))`` (complex,
    ``(B, C, H, W // 2 + 1)``): its modulus is the magnitude whatever the phase."""
    p = standardize(phase)
    return torch.complex(torch.cos(p) * magnitude, torch.sin(p) * magnitude)


def maco_image(
    magnitude: torch.Tensor,
    phase: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    decorrelate: bool = True,
) -> torch.Tensor:
    """The MACO preconditioner: magnitude ``(C, H, W // 2 + 1)`` and phase
    ``(B, C, H, W // 2 + 1)`` -> images ``(B, C, H, W)`` in ``[0, 1]``. ``size``:
    ``(H, W)``, default ``(H, 2 * (W // 2))`` as horama's ``irfft2`` (give it for odd W)."""
    height, width = size or (magnitude.shape[-2], 2 * (magnitude.shape[-1] - 1))
    image = torch.fft.irfft2(maco_spectrum(magnitude, phase), s=(height, width))
    image = standardize(image)
    if decorrelate and image.shape[1] == 3:
        image = _decorrelate(image)
    return torch.sigmoid(image)


class MacoImage:
    """Images ``(B, C, H, W)`` in ``[0, 1]`` from a fixed magnitude and an optimized phase.

    Args:
        generators: one per batch element (its initial phase, ``N(0, sd)``).
        channels, height, width: the canvas shape.
        magnitude: ``(C, H, W // 2 + 1)`` (see :func:`xaikit.filters.spectrum.fit_spectrum`).
        sd: standard deviation of the initial phase (horama: 1).
        decorrelate: recorrelate colours (only for ``channels == 3``).
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        channels: int,
        height: int,
        width: int,
        *,
        magnitude: torch.Tensor,
        sd: float = 1.0,
        decorrelate: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (channels, height, width // 2 + 1)
        if tuple(magnitude.shape) != shape:
            raise ValueError(f"magnitude must have shape {shape}, got {tuple(magnitude.shape)}")
        self.height, self.width = height, width
        self.decorrelate = decorrelate and channels == 3
        self.magnitude = magnitude.to(device=device, dtype=dtype)
        phase = torch.stack([torch.randn(shape, generator=g) for g in generators]) * sd
        self.phase = phase.to(device=device, dtype=dtype).requires_grad_(True)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def spectrum(self) -> torch.Tensor:
        """The current parametrized spectrum (:func:`maco_spectrum`)."""
        return maco_spectrum(self.magnitude, self.phase)

    def __call__(self) -> torch.Tensor:
        return maco_image(
            self.magnitude,
            self.phase,
            size=(self.height, self.width),
            decorrelate=self.decorrelate,
        )


def _normal(u: torch.Tensor) -> torch.Tensor:
    """Uniforms in ``[0, 1)`` -> standard normals (inverse CDF)."""
    return math.sqrt(2.0) * torch.erfinv(2 * u.clamp(1e-6, 1 - 1e-6) - 1)


class MacoCrops:
    """MACO's augmentation: ``count`` random crops of the canvas per element and step,
    resized to ``size``, plus noise (added by the caller after normalization).

    ``n_random`` uniforms per element and step: ``3 * count`` (centre x, centre y, side).
    """

    def __init__(
        self,
        size: int,
        *,
        count: int = 6,
        box: tuple[float, float] = (0.25, 0.30),
        noise: float = 0.05,
        centre_sd: float = 0.15,
    ) -> None:
        if count < 1 or not 0 < box[0] <= box[1]:
            raise ValueError("MacoCrops needs count >= 1 and 0 < box[0] <= box[1]")
        self.size, self.count = int(size), int(count)
        self.box = (float(box[0]), float(box[1]))
        self.noise, self.centre_sd = float(noise), float(centre_sd)

    @property
    def n_random(self) -> int:
        return 3 * self.count

    def __repr__(self) -> str:
        return f"MacoCrops({self.size}, count={self.count}, box={self.box}, noise={self.noise})"

    def boxes(self, u: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
        """``(B * count, 3)``: centre x, centre y and side (fractions of the canvas side);
        ``u=None``: one centred crop per element with the middle side (for scoring)."""
        if u is None:
            side = like.new_full((batch, 1), sum(self.box) / 2)
            return torch.cat([like.new_full((batch, 2), 0.5), side], dim=1)
        u = u.reshape(batch, self.count, 3).to(like)
        centre = 0.5 + self.centre_sd * _normal(u[..., :2])
        side = self.box[0] + (self.box[1] - self.box[0]) * u[..., 2:]
        return torch.cat([centre, side], dim=-1).reshape(-1, 3)

    def __call__(self, images: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, H, W)`` canvas -> ``(B * count, C, size, size)`` crops (``u=None``:
        ``(B, C, size, size)``, the centre crop)."""
        batch, channels = images.shape[:2]
        boxes = self.boxes(u, batch, images)
        per = boxes.shape[0] // batch
        theta = images.new_zeros(boxes.shape[0], 2, 3)
        theta[:, 0, 0] = boxes[:, 2]
        theta[:, 1, 1] = boxes[:, 2]
        theta[:, 0, 2] = 2 * boxes[:, 0] - 1
        theta[:, 1, 2] = 2 * boxes[:, 1] - 1
        fine = 2 * self.size
        grid = F.affine_grid(theta, [boxes.shape[0], channels, fine, fine], align_corners=False)
        source = (images - FILL).repeat_interleave(per, dim=0)
        crops = F.grid_sample(source, grid, mode="bilinear", align_corners=False) + FILL
        return F.interpolate(
            crops, size=(self.size, self.size), mode="bicubic", align_corners=True, antialias=True
        )

    def draw_noise(
        self, generators: Sequence[torch.Generator], channels: int, like: torch.Tensor
    ) -> torch.Tensor | None:
        """``(B * count, C, size, size)``: ``noise * (N(0, 1) + U(-0.5, 0.5))`` (horama adds
        both), element ``b``'s from ``generators[b]``."""
        if self.noise == 0:
            return None
        shape = (self.count, channels, self.size, self.size)
        parts = [
            torch.randn(shape, generator=g) + torch.rand(shape, generator=g) - 0.5
            for g in generators
        ]
        return (torch.cat(parts) * self.noise).to(like)


def maco_rgba(
    image: torch.Tensor | np.ndarray,
    transparency: torch.Tensor | np.ndarray,
    *,
    percentile_image: float = 1.0,
    percentile_alpha: float = 80.0,
) -> np.ndarray:
    """``(C, H, W)`` image and transparency -> ``(H, W, 4)`` RGBA in ``[0, 1]``, drawn as
    horama's ``plot_maco``: the image clipped to its ``[p, 100 - p]`` percentiles and
    min-max normalized; alpha the channel mean of the transparency, clipped at its
    ``percentile_alpha`` percentile and divided by its max."""
    img = np.asarray(image.detach().float().cpu() if isinstance(image, torch.Tensor) else image)
    alpha = np.asarray(
        transparency.detach().float().cpu()
        if isinstance(transparency, torch.Tensor)
        else transparency
    )
    img = np.moveaxis(img, 0, -1).astype(np.float32)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    elif img.shape[-1] != 3:
        img = np.repeat(img.mean(-1, keepdims=True), 3, axis=-1)
    img = np.clip(
        img, np.percentile(img, percentile_image), np.percentile(img, 100 - percentile_image)
    )
    img = img - img.min()
    img = img / max(float(img.max()), 1e-12)
    a = np.moveaxis(alpha, 0, -1).astype(np.float32).mean(-1, keepdims=True)
    a = np.clip(a, None, np.percentile(a, percentile_alpha))
    a = a / max(float(a.max()), 1e-12)
    return np.concatenate([img, a], axis=-1)


def maco_figure(
    images: torch.Tensor, transparency: torch.Tensor, labels: Sequence[str], title: str
):
    """A figure: each image drawn with its transparency as alpha (:func:`maco_rgba`),
    over a white background, one labelled cell per element."""
    from xaikit.filters._plot import new_figure

    count = images.shape[0]
    ncols = max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / ncols)
    fig = new_figure(min(1.6 * ncols + 0.5, 16), min(1.7 * rows + 0.8, 40))
    for k in range(count):
        ax = fig.add_subplot(rows, ncols, k + 1)
        ax.imshow(maco_rgba(images[k], transparency[k]), interpolation="nearest")
        ax.set_title(labels[k], fontsize=7)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig
