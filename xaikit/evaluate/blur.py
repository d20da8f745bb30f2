"""The Gaussian blur used as the start image of insertion curves (and the ``"blur"`` baseline).

RISE (Petsiuk et al., 2018) blurs with an 11x11 Gaussian kernel of standard deviation 5 px;
these are the defaults. The kernel is separable, so one 1-D convolution per spatial axis does
it for signals ``(N, C, L)`` and images ``(N, C, H, W)`` alike. Borders are padded by
replication (RISE pads with zeros, which darkens the border; replication keeps a constant
image constant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitConfigError


def gaussian_kernel1d(
    sigma: float, kernel_size: int, *, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """A normalized 1-D Gaussian: ``(kernel_size,)`` weights summing to 1."""
    if sigma <= 0 or kernel_size < 1 or kernel_size % 2 == 0:
        raise XaikitConfigError(
            f"the blur needs sigma > 0 and an odd kernel_size >= 1; got sigma={sigma}, "
            f"kernel_size={kernel_size}"
        )
    radius = kernel_size // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float = 5.0, kernel_size: int = 11) -> torch.Tensor:
    """Blur each channel: ``(N, C, *S) -> (N, C, *S)`` for one or two spatial axes.

    Equivalent to ``scipy.ndimage.gaussian_filter(x, sigma, mode="nearest",
    truncate=(kernel_size // 2) / sigma)`` applied over the spatial axes.
    """
    spatial = x.dim() - 2
    if spatial not in (1, 2):
        raise XaikitConfigError(
            f"gaussian_blur takes (N, C, L) or (N, C, H, W); got shape {tuple(x.shape)}"
        )
    n, c = x.shape[:2]
    kernel = gaussian_kernel1d(sigma, kernel_size, dtype=x.dtype, device=x.device)
    radius = kernel_size // 2
    out = x.reshape(n * c, 1, *x.shape[2:])
    for axis in range(spatial):
        # Move the blurred axis last, convolve along it as a 1-D signal, move it back.
        moved = out.movedim(2 + axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        flat = F.pad(flat, (radius, radius), mode="replicate")
        flat = F.conv1d(flat, kernel.view(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, 2 + axis)
    return out.reshape(x.shape)
