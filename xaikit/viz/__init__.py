"""Drawing explanations: heatmap overlays on images, attribution bands on signals, colormaps.

Everything here returns NumPy arrays (uint8 RGB) or matplotlib ``Figure`` objects on an Agg
canvas; nothing calls pyplot or ``show()``, and files are written atomically.
"""

from xaikit.viz.colormaps import CONTOUR_COLOR, apply_colormap, colormap_color, get_colormap
from xaikit.viz.overlay import (
    mask_contour,
    overlay,
    overlay_figure,
    prepare_heatmap,
    save_figure,
    save_overlay_figure,
    signal_overlay,
    to_display_image,
)

__all__ = [
    "CONTOUR_COLOR",
    "apply_colormap",
    "colormap_color",
    "get_colormap",
    "mask_contour",
    "overlay",
    "overlay_figure",
    "prepare_heatmap",
    "save_figure",
    "save_overlay_figure",
    "signal_overlay",
    "to_display_image",
]
