"""Localization against ground-truth masks: the pointing game and its energy-based variant.

* **Pointing game** (Zhang et al., 2018, "Top-down Neural Attention by Excitation Backprop"):
  a map scores a hit when its maximum lies inside the ground-truth mask of the explained
  class, or within ``tolerance`` pixels of it. The paper uses 15 px on 224x224 images; the
  default here is 0 px (strict), because the images of this toolkit are small (15 px is a
  quarter of a 64x64 image). Pass ``tolerance=round(15 * H / 224)`` for the paper's setting.
  When several pixels share the maximum, the first in row-major order counts, so a constant
  map points at the top-left corner instead of hitting any mask.
* **Energy-based pointing game** (Wang et al., 2020, "Score-CAM"): the fraction of the map's
  energy (sum of its non-negative values) inside the mask. Score-CAM uses bounding boxes;
  this uses the pixel masks the data provides. An all-zero map scores 0.

Both take maps and masks of the same leading shape: ``(N, H, W)`` or, for multi-label data,
``(N, K, H, W)`` (one map per class against that class's mask). A map whose mask is empty
(the class is absent from the image) scores NaN and is left out by ``nanmean``.
"""

from __future__ import annotations

import math

import torch

from xaikit.errors import XaikitConfigError
from xaikit.evaluate._common import fit_maps

#: Negative values down to this fraction of a map's largest magnitude are rounding noise
#: (e.g. from min-max normalization) and count as 0.
NEGATIVE_TOLERANCE = 1e-6


def _prepare(heatmaps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, H, W)`` float maps fitted to the masks and ``(M, H, W)`` bool masks."""
    if not isinstance(heatmaps, torch.Tensor) or not isinstance(masks, torch.Tensor):
        raise XaikitConfigError("heatmaps and masks must be tensors")
    if masks.dim() < 3 or heatmaps.dim() != masks.dim():
        raise XaikitConfigError(
            f"heatmaps and masks must both be (N, H, W) or both (N, K, H, W); got "
            f"{tuple(heatmaps.shape)} and {tuple(masks.shape)}"
        )
    if heatmaps.shape[:-2] != masks.shape[:-2]:
        raise XaikitConfigError(
            f"heatmaps {tuple(heatmaps.shape)} and masks {tuple(masks.shape)} must have the "
            "same leading (N[, K]) shape: one mask per map"
        )
    if not torch.isfinite(heatmaps).all():
        raise XaikitConfigError("heatmaps contain NaN or infinite values")
    spatial = tuple(masks.shape[-2:])
    flat_maps = fit_maps(heatmaps.reshape(-1, *heatmaps.shape[-2:]), spatial)
    flat_masks = masks.reshape(-1, *spatial).to(flat_maps.device) > 0
    return flat_maps, flat_masks


def _disk_offsets(radius: int, device) -> torch.Tensor:
    """``(D, 2)`` integer (dy, dx) offsets with ``dy^2 + dx^2 <= radius^2``."""
    r = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    inside = dy * dy + dx * dx <= radius * radius
    return torch.stack([dy[inside], dx[inside]], dim=1)


def pointing_game(
    heatmaps: torch.Tensor, masks: torch.Tensor, *, tolerance: int = 0
) -> torch.Tensor:
    """Hits of the pointing game (Zhang et al., 2018): ``(N[, K], H, W) -> (N[, K])``.

    Args:
        heatmaps: maps, upsampled bilinearly to the mask size when smaller.
        masks: ground-truth masks, non-zero inside the object, same leading shape.
        tolerance: radius in pixels (Euclidean) around the maximum that may touch the mask;
            0 (default) asks the maximum itself to lie inside the mask.

    Returns:
        ``1.0`` for a hit, ``0.0`` for a miss, ``NaN`` where the mask is empty. The game's
        accuracy is ``result.nanmean()``.
    """
    if tolerance < 0 or int(tolerance) != tolerance:
        raise XaikitConfigError(f"tolerance must be a whole number of pixels >= 0, got {tolerance}")
    maps, bool_masks = _prepare(heatmaps, masks)
    m, h, w = maps.shape
    peak = maps.reshape(m, -1).argmax(dim=1)  # torch returns the first maximum
    y, x = peak // w, peak % w
    offsets = _disk_offsets(int(tolerance), maps.device)  # (D, 2)
    ys, xs = y[:, None] + offsets[:, 0], x[:, None] + offsets[:, 1]  # (M, D)
    valid = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    index = ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)
    touched = bool_masks.reshape(m, -1).gather(1, index) & valid
    hits = touched.any(dim=1).float()
    hits[~bool_masks.reshape(m, -1).any(dim=1)] = math.nan
    return hits.reshape(heatmaps.shape[:-2])


def energy_pointing_game(heatmaps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., 2020, Score-CAM): ``(N[, K], H, W) -> (N[, K])``.

    ``sum(map * mask) / sum(map)`` per map, in ``[0, 1]``; 0 for an all-zero map, NaN where the
    mask is empty. Negative values within rounding noise (:data:`NEGATIVE_TOLERANCE` of the
    map's largest magnitude) count as 0.

    Raises:
        XaikitConfigError: a map has negative values (take ``.abs()`` or ``.clamp(min=0)`` of
            signed attributions first).
    """
    maps, bool_masks = _prepare(heatmaps, masks)
    m = maps.shape[0]
    scale = maps.reshape(m, -1).abs().amax(dim=1).reshape(m, 1, 1)
    if (maps < -NEGATIVE_TOLERANCE * scale).any():
        raise XaikitConfigError(
            "the energy pointing game needs non-negative heatmaps; pass heatmaps.abs() or "
            "heatmaps.clamp(min=0) for signed attributions"
        )
    maps = maps.clamp(min=0.0)
    flat, inside = maps.reshape(m, -1), bool_masks.reshape(m, -1)
    total = flat.sum(dim=1)
    energy = (flat * inside).sum(dim=1) / total.clamp(min=torch.finfo(flat.dtype).tiny)
    energy = torch.where(total > 0, energy, torch.zeros_like(energy))
    energy[~inside.any(dim=1)] = math.nan
    return energy.reshape(heatmaps.shape[:-2])
