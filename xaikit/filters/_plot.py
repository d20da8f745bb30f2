"""Drawing at the edge: tiling tensors into grids, matplotlib figures (Agg, never shown) and
PNG bytes for files and inlined HTML images."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure with an Agg canvas (no pyplot, no window)."""
    fig = Figure(figsize=(max(width, 1.0), max(height, 1.0)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def displayable(images: torch.Tensor) -> torch.Tensor:
    """``(K, C, h, w)`` in [0, 1] -> ``(K, 1 | 3, h, w)``: RGB when ``C == 3``, grey when
    ``C == 1``, the channel mean otherwise."""
    if images.shape[1] in (1, 3):
        return images
    return images.mean(dim=1, keepdim=True)


def tile(
    images: torch.Tensor, ncols: int, pad: int = 1, pad_value: float = 1.0
) -> tuple[torch.Tensor, int, int]:
    """Tile ``(K, C, h, w)`` into one ``(C, rows*(h+pad)+pad, ncols*(w+pad)+pad)`` image.

    Cell ``k`` starts at row ``pad + (k // ncols) * (h + pad)`` and column
    ``pad + (k % ncols) * (w + pad)``. Returns ``(grid, rows, ncols)``.
    """
    count, channels, h, w = images.shape
    ncols = max(1, min(ncols, count))
    rows = max(1, math.ceil(count / ncols))
    cells = images.new_full((rows * ncols, channels, h + pad, w + pad), pad_value)
    cells[:count, :, pad:, pad:] = images
    grid = cells.reshape(rows, ncols, channels, h + pad, w + pad)
    grid = grid.permute(2, 0, 3, 1, 4).reshape(channels, rows * (h + pad), ncols * (w + pad))
    return F.pad(grid, (0, pad, 0, pad), value=pad_value), rows, ncols


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``(1 | 3, h, w)`` in [0, 1] -> ``(h, w)`` or ``(h, w, 3)`` float array."""
    array = image.detach().float().clamp(0, 1).cpu().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def grid_axes(
    fig: Figure,
    images: torch.Tensor,
    labels: Sequence[str],
    *,
    ncols: int,
    ax_position: object = 111,
    title: str | None = None,
    cmap: str = "gray",
) -> None:
    """Draw ``(K, 1 | 3, h, w)`` images as one tiled picture with a label over each cell."""
    images = displayable(images).float()
    count, colours, h, w = images.shape
    pad = max(1, min(h, w) // 8)
    # Colour-mapped cells get NaN borders drawn white, whatever the colormap.
    grid, _, ncols = tile(images, ncols, pad=pad, pad_value=1.0 if colours == 3 else math.nan)
    ax = fig.add_subplot(ax_position)
    picture = grid.detach().cpu().numpy()
    picture = picture[0] if colours == 1 else picture.clip(0, 1).transpose(1, 2, 0)
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="white")
    ax.imshow(picture, cmap=colormap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fontsize = max(4.0, min(9.0, 60.0 / ncols))
    for k, label in enumerate(labels[:count]):
        y = pad + (k // ncols) * (h + pad)
        x = pad + (k % ncols) * (w + pad)
        ax.text(x, y - 0.3, label, fontsize=fontsize, va="bottom", ha="left", color="black")
    if title:
        ax.set_title(title, fontsize=10)


def grid_figure(
    images: torch.Tensor,
    labels: Sequence[str],
    *,
    ncols: int | None = None,
    title: str | None = None,
    cmap: str = "gray",
) -> Figure:
    """A figure of ``(K, C, h, w)`` images in [0, 1], tiled, each labelled."""
    count = images.shape[0]
    ncols = ncols or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / ncols)
    aspect = images.shape[-2] / images.shape[-1]
    fig = new_figure(min(1.1 * ncols + 0.5, 16), min(1.1 * rows * max(aspect, 0.25) + 0.8, 40))
    grid_axes(fig, images, labels, ncols=ncols, title=title, cmap=cmap)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def image_png(image: torch.Tensor, min_side: int = 64) -> bytes:
    """``(C, h, w)`` in [0, 1] as PNG bytes, enlarged (nearest neighbour) to at least
    ``min_side`` pixels on its shorter side."""
    image = displayable(image[None])[0]
    h, w = image.shape[-2:]
    factor = max(1, math.ceil(min_side / max(1, min(h, w))))
    array = (to_numpy_image(image) * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    if factor > 1:
        picture = picture.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an inlined ``<img>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
