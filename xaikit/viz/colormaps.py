"""Colormaps for heatmaps: matplotlib's, always RGB (no OpenCV, so no BGR surprises).

``apply_colormap`` turns values in ``[0, 1]`` into uint8 RGB; 0 is the colormap's low end and
1 its high end (dark red for ``"jet"``, yellow for ``"viridis"``).
"""

from __future__ import annotations

import difflib

import matplotlib
import numpy as np
from matplotlib.colors import Colormap

from xaikit.errors import XaikitConfigError

#: Colour of ground-truth mask contours drawn over heatmaps (white: no sequential colormap
#: used for heatmaps - jet, viridis, inferno, turbo - produces pure white at any value).
CONTOUR_COLOR: tuple[int, int, int] = (255, 255, 255)


def get_colormap(cmap: str | Colormap) -> Colormap:
    """A matplotlib colormap by name (``"jet"``, ``"viridis"``, ``"inferno"``, ...) or as given.

    Raises:
        XaikitConfigError: an unknown name; the message lists the closest known names.
    """
    if isinstance(cmap, Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except (KeyError, TypeError):
        names = sorted(matplotlib.colormaps)
        close = difflib.get_close_matches(str(cmap), names, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "e.g. jet, viridis, inferno, turbo"
        raise XaikitConfigError(f"unknown colormap {cmap!r}; {hint}") from None


def apply_colormap(values: np.ndarray, cmap: str | Colormap = "jet") -> np.ndarray:
    """Map values in ``[0, 1]`` to colours: ``(...) float -> (..., 3) uint8`` RGB.

    Values outside ``[0, 1]`` are clipped; NaN becomes 0.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    rgba = get_colormap(cmap)(np.clip(values, 0.0, 1.0), bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def colormap_color(cmap: str | Colormap, value: float) -> tuple[int, int, int]:
    """The uint8 RGB colour of one value in ``[0, 1]`` (e.g. ``1.0`` for the high end)."""
    r, g, b = apply_colormap(np.array([value]), cmap)[0]
    return int(r), int(g), int(b)
