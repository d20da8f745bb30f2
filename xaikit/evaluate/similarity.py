"""How alike two batches of heatmaps are: Spearman rank correlation, SSIM, normalized L1.

These are the similarity measures of the sanity checks (Adebayo et al., 2018, "Sanity Checks
for Saliency Maps"). All are batched: ``(N, *S)`` and ``(N, *S)`` -> ``(N,)``, one value per
pair of maps, with no loop over maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitConfigError
from xaikit.evaluate.blur import gaussian_kernel1d


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.dim() < 2:
        raise XaikitConfigError(
            f"maps to compare must have the same shape (N, ...); got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    return a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last axis, ties given their average rank (0-based): ``(N, P) -> (N, P)``.

    The same ranks as ``scipy.stats.rankdata(x, axis=-1) - 1``.
    """
    n, p = x.shape
    values, order = torch.sort(x, dim=1, stable=True)
    position = torch.arange(p, device=x.device).expand(n, p)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    # First and last sorted position of each run of equal values.
    first = torch.where(starts, position, torch.zeros_like(position)).cummax(dim=1).values
    last_flip = torch.where(ends, position, torch.full_like(position, p - 1)).flip(1)
    last = last_flip.cummin(dim=1).values.flip(1)
    mean_rank = (first + last).to(torch.float64) / 2.0
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps: ``(N, *S), (N, *S) -> (N,)``.

    Pearson correlation of the average ranks (as ``scipy.stats.spearmanr``). Where it is
    undefined because a map is constant: two constant maps correlate 1 (they rank pixels
    identically: not at all), one constant and one varying map correlate 0.
    """
    fa, fb = _pair(a, b)
    ra, rb = average_ranks(fa), average_ranks(fb)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    na, nb = ra.norm(dim=1), rb.norm(dim=1)
    flat_a, flat_b = na == 0, nb == 0
    rho = (ra * rb).sum(dim=1) / (na * nb).clamp(min=1e-300)
    rho = torch.where(flat_a | flat_b, torch.zeros_like(rho), rho.clamp(-1.0, 1.0))
    rho = torch.where(flat_a & flat_b, torch.ones_like(rho), rho)
    return rho.float()


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to ``[0, 1]``: ``(N, *S) -> (N, *S)``; a constant map becomes zeros."""
    flat = maps.reshape(maps.shape[0], -1).float()
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp(min=1e-30), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per pixel of min-max normalized maps: ``(N, *S) x2 -> (N,)``.

    In ``[0, 1]``: 0 for maps equal up to an affine rescaling.
    """
    _pair(a, b)
    diff = (minmax(a) - minmax(b)).abs()
    return diff.reshape(diff.shape[0], -1).mean(dim=1)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli, 2004) of 2-D maps:
    ``(N, H, W), (N, H, W) -> (N,)``.

    Each map is min-max normalized to ``[0, 1]`` (data range 1, ``C1 = 0.01^2``,
    ``C2 = 0.03^2``); local statistics come from a Gaussian window (``window`` px, ``sigma``)
    applied without padding, shrunk to the largest odd size that fits smaller maps; the
    result is the mean of the SSIM map.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise XaikitConfigError(
            f"ssim compares 2-D maps shaped (N, H, W); got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    size = min(window, a.shape[-2], a.shape[-1])
    size -= 1 - size % 2  # the largest odd size that fits
    x, y = minmax(a).double()[:, None], minmax(b).double()[:, None]
    g = gaussian_kernel1d(sigma, size, dtype=torch.float64, device=x.device)
    kernel = (g[:, None] * g[None, :])[None, None]

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel)

    mx, my = local_mean(x), local_mean(y)
    vx = local_mean(x * x) - mx * mx
    vy = local_mean(y * y) - my * my
    cxy = local_mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).float()
