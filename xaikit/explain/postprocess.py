"""From raw maps to heatmaps: ReLU (CAM methods), upsampling, normalization, degeneracy.

Normalization modes, per map ``m`` (one input, one target):

* ``"minmax"`` (default): ``(m - min m) / (max m - min m)``, in ``[0, 1]``;
* ``"max_abs"``: ``m / max |m|``, in ``[-1, 1]`` (``[0, 1]`` for non-negative maps), keeps the
  sign and where zero is;
* ``"global"``: min-max with the minimum and maximum over the whole call (every input,
  target, position), in ``[0, 1]``: maps stay comparable across inputs and targets;
* ``None``: the values as computed (upsampled CAMs after ReLU, or gradient maps).

A map is *degenerate* when it is constant: ``max m - min m <= eps * max |m|`` (an all-zero
map included, e.g. a CAM whose evidence is all negative before the ReLU), when its range is
below the smallest normal float (it cannot be rescaled without overflow), or when it holds
NaN/inf. A degenerate map is returned as zeros by every normalizing mode (never NaN) and
flagged in ``Explanation.degenerate``; ``normalize=None`` returns it unchanged except that
non-finite values become 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitConfigError

NORMALIZE_MODES = ("minmax", "max_abs", "global", None)
DEFAULT_EPS = 1e-6


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(B, K, *s) -> (B, K, *size)``: linear / bilinear / trilinear, ``align_corners=False``."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if maps.numel() == 0:
        return maps.new_zeros(*maps.shape[:2], *size)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(size))
    if mode is None:
        raise XaikitConfigError(
            f"maps with {len(size)} spatial dimensions cannot be upsampled; inputs must be "
            "(N, C, L), (N, C, H, W) or (N, C, D, H, W)"
        )
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)


def check_normalize(normalize: str | None) -> None:
    if normalize not in NORMALIZE_MODES:
        raise XaikitConfigError(
            f"normalize must be one of 'minmax', 'max_abs', 'global' or None; got {normalize!r}"
        )


def normalize_maps(
    maps: torch.Tensor,
    normalize: str | None = "minmax",
    *,
    eps: float = DEFAULT_EPS,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize each ``(n, k)`` map of ``(N, K, *S)`` maps.

    Args:
        maps: ``(N, K, *S)``.
        normalize: see the module docstring.
        eps: relative tolerance of the constant-map test.
        valid: ``(N, K)`` bool; invalid (padding) maps are zeroed and excluded from the
            ``"global"`` range and from the degenerate flags.

    Returns:
        ``(normalized (N, K, *S), degenerate (N, K) bool)``.
    """
    check_normalize(normalize)
    n, k = maps.shape[:2]
    if maps.numel() == 0:
        return maps.clone(), torch.zeros(n, k, dtype=torch.bool, device=maps.device)
    flat = maps.flatten(start_dim=2)
    lo, hi = torch.aminmax(flat, dim=2)
    span = hi - lo  # NaN or inf anywhere in a map makes its span non-finite
    finite = torch.isfinite(span)
    if not bool(finite.all()):
        flat = torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = torch.aminmax(flat, dim=2)
        span = hi - lo
    scale = torch.maximum(lo.abs(), hi.abs())
    # An all-zero map fails (0 > 0); a subnormal span would overflow its reciprocal.
    keep = (span > eps * scale) & (span >= torch.finfo(span.dtype).tiny) & finite
    if valid is not None:
        keep &= valid
        degenerate = valid & ~keep
    else:
        degenerate = ~keep
    if normalize is None:
        out = flat if valid is None else flat * valid.unsqueeze(2).to(flat.dtype)
        return out.reshape(maps.shape), degenerate
    if normalize == "minmax":
        offset, inv = lo, torch.where(keep, span.reciprocal(), 0.0)
    elif normalize == "max_abs":
        offset = torch.zeros_like(lo)
        inv = torch.where(keep, scale.reciprocal(), 0.0)
    else:  # global
        if bool(keep.any()):
            g_lo, g_hi = lo[keep].min(), hi[keep].max()
        else:
            g_lo, g_hi = lo.new_zeros(()), lo.new_zeros(())
        g_span = g_hi - g_lo
        g_inv = 1.0 / g_span.clamp_min(_tiny(g_span)) if bool(g_span > 0) else g_span * 0
        offset = g_lo.expand_as(lo)
        inv = torch.where(keep, g_inv, 0.0)
    # (x - offset) * inv in one pass (a zero inv zeroes the map), then rounding is clamped
    # away so the documented range holds exactly.
    out = torch.addcmul((-offset * inv).unsqueeze(2), flat, inv.unsqueeze(2))
    out.clamp_(-1.0 if normalize == "max_abs" else 0.0, 1.0)
    return out.reshape(maps.shape), degenerate


def _tiny(t: torch.Tensor) -> float:
    return torch.finfo(t.dtype).tiny


def to_heatmaps(
    raw: torch.Tensor,
    size: tuple[int, ...],
    *,
    relu: bool,
    normalize: str | None = "minmax",
    eps: float = DEFAULT_EPS,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw maps ``(N, K, *s)`` -> heatmaps ``(N, K, *size)`` and degenerate flags ``(N, K)``.

    ``relu`` (CAM methods) keeps only positive evidence, before upsampling (as captum's
    LayerGradCam and pytorch-grad-cam do); upsampling is (bi/tri)linear, ``align_corners=False``.
    """
    maps = raw.clamp_min(0) if relu else raw
    if maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    maps = upsample(maps, size)
    return normalize_maps(maps, normalize, eps=eps, valid=valid)
