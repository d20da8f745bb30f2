"""Colormaps for heatmaps: matplotlib's, always RGB (no OpenCV, so no BGR surprises).

``apply_colormap`` turns values in ``[0, 1]`` into uint8 RGB; 0 is the colormap's low end and
1 its high end (dark red for ``"jet"``, yellow for ``"viridis"``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

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


# -- how a method's map is drawn ----------------------------------------------------------

#: What ``sign=`` (``xaikit explain --sign``) accepts: ``"auto"`` (the method family's
#: default), ``"absolute"`` (``|a|``), ``"positive"`` (``max(a, 0)``) or ``"all"`` (signed,
#: on a diverging colormap centred on zero).
SIGNS: tuple[str, ...] = ("auto", "absolute", "positive", "all")
#: Gradient methods whose maps are read as magnitudes: always drawn as ``|a|`` (``sign`` is
#: ignored). ``saliency`` / ``smoothgrad``-style maps carry no sign worth reading.
MAGNITUDE_METHODS: tuple[str, ...] = ("saliency", "guided-backprop", "deconvolution")
#: Gradient / perturbation methods whose signed maps may be drawn with any ``sign``
#: (``"auto"``: absolute value). Methods whose name starts with ``deeplift`` or
#: ``gradientshap`` belong here too.
SIGNED_METHODS: tuple[str, ...] = (
    "inputxgrad",
    "gradxinput",
    "ig",
    "smoothgrad",
    "occlusion",
    "guided-gradcam",
    "feature-ablation",
    "lime",
    "kernelshap",
    "lrp",
)
_SIGNED_PREFIXES = ("deeplift", "gradientshap", "deepshap")
#: Sequential colormap of ``|a|`` and ``max(a, 0)`` maps (white at 0: the picture stays
#: readable under the unimportant pixels) and diverging colormap of signed maps (white at 0,
#: blue negative, red positive).
SEQUENTIAL_CMAP = "Reds"
DIVERGING_CMAP = "bwr"
#: Default share of the largest ``|a|`` values clipped to the colormap's end (percent).
OUTLIER_PERC = 1.0


@dataclass(frozen=True)
class DisplayMap:
    """A map ready to draw: see :func:`display_map`.

    Attributes:
        values: ``(h, w)`` float64: in ``[0, 1]`` (``|a|``, ``max(a, 0)``, or a CAM map as
            given), or in ``[-1, 1]`` for signed maps (``signed``).
        cmap: the colormap to draw with; ``None`` for CAM-family maps (the caller's,
            ``"jet"`` by default, as before).
        suffix: what the figure title appends after the method name, e.g.
            ``", |attribution|, clipped at 99th pct"`` (``""`` for CAM-family maps).
        short: the rule in a few characters, for small grid cells (``""`` for CAMs).
        signed: ``values`` lie in ``[-1, 1]`` with 0 at the colormap's centre.
    """

    values: np.ndarray
    cmap: str | None
    suffix: str
    short: str
    signed: bool = False

    @property
    def colour_values(self) -> np.ndarray:
        """``values`` as colormap positions in ``[0, 1]`` (signed: ``(v + 1) / 2``, so 0 is
        the diverging colormap's centre)."""
        return (self.values + 1.0) / 2.0 if self.signed else self.values

    @property
    def colour_range(self) -> tuple[float, float]:
        """The value range a colour bar shows: ``(-1, 1)`` signed, else ``(0, 1)``."""
        return (-1.0, 1.0) if self.signed else (0.0, 1.0)


def display_family(method: str) -> str:
    """``"magnitude"``, ``"signed"`` or ``"cam"`` (CAMs, Score-CAM, attention and any other
    method: drawn as before) - see :func:`display_map`."""
    if method in MAGNITUDE_METHODS:
        return "magnitude"
    if method in SIGNED_METHODS or method.startswith(_SIGNED_PREFIXES):
        return "signed"
    return "cam"


def check_sign(sign: str) -> str:
    """``sign`` when it is one of :data:`SIGNS`.

    Raises:
        XaikitConfigError: any other value.
    """
    if sign not in SIGNS:
        raise XaikitConfigError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    return sign


def _percentile_word(q: float) -> str:
    text = f"{q:g}"
    if text.endswith(("11", "12", "13")) or text[-1:] not in "123":
        return f"{text}th"
    return text + {"1": "st", "2": "nd", "3": "rd"}[text[-1]]


def display_map(
    raw_or_map: Any,
    method: str,
    *,
    sign: str = "auto",
    outlier_perc: float = OUTLIER_PERC,
) -> DisplayMap:
    """How ``method``'s map is drawn - the colour rule per method family, as the field reads
    them (captum's ``visualize_image_attr`` conventions).

    * CAM family (``gradcam`` ... ``eigencam``, Score-CAM, attention, unknown names): the map
      is returned as given (normally the ``[0, 1]`` heatmap) with ``cmap=None`` - drawn
      exactly as before, on the caller's colormap (``jet``); ``sign`` is ignored.
    * magnitude methods (:data:`MAGNITUDE_METHODS`: ``saliency``, ``guided-backprop``):
      always ``|a|``.
    * signed methods (:data:`SIGNED_METHODS`: ``inputxgrad``, ``ig``, ``smoothgrad``,
      ``occlusion``, ``guided-gradcam``, DeepLift-like): ``sign="auto"`` / ``"absolute"``
      draws ``|a|``, ``"positive"`` ``max(a, 0)``, ``"all"`` the signed map.

    Gradient maps are heavy-tailed: a min-max scale lets a few pixels take the whole colour
    range. So the map is divided by the ``100 - outlier_perc`` percentile ``t`` of the drawn
    values (of ``|a|`` for ``"all"``) and clipped: the top ``outlier_perc`` % of pixels reach the
    colormap's end (1, or -1 / 1 signed), 0 stays 0. (captum thresholds by the cumulative sum
    of the sorted values instead; this is the plain percentile, so the clipped share is exactly
    ``outlier_perc`` % of the pixels.) ``|a|`` and ``max(a, 0)`` are drawn on the sequential
    :data:`SEQUENTIAL_CMAP`, signed maps on the diverging :data:`DIVERGING_CMAP` with 0 at its
    centre (:attr:`DisplayMap.colour_values`). ``.npy`` outputs are not affected: only pixels.

    Args:
        raw_or_map: ``(h, w)`` map (leading singleton dimensions allowed): the raw, signed
            attribution for gradient methods, the ``[0, 1]`` heatmap for CAMs.
        method: the method's name.
        sign: one of :data:`SIGNS`.
        outlier_perc: percent of pixels clipped at the colormap's end, in ``[0, 100)``.

    Raises:
        XaikitConfigError: an unknown ``sign`` or an ``outlier_perc`` out of range.
    """
    check_sign(sign)
    if not 0.0 <= outlier_perc < 100.0:
        raise XaikitConfigError(f"outlier_perc must lie in [0, 100), got {outlier_perc}")
    if hasattr(raw_or_map, "detach"):
        raw_or_map = raw_or_map.detach().cpu().numpy()
    values = np.nan_to_num(np.asarray(raw_or_map, dtype=np.float64))
    family = display_family(method)
    if family == "cam":
        return DisplayMap(values, None, "", "")
    rule = "absolute" if family == "magnitude" or sign == "auto" else sign
    if rule == "absolute":
        drawn = np.abs(values)
    elif rule == "positive":
        drawn = np.maximum(values, 0.0)
    else:
        drawn = values
    magnitude = np.abs(drawn)
    q = 100.0 - outlier_perc
    threshold = float(np.percentile(magnitude, q)) if magnitude.size else 0.0
    if threshold <= 0.0:
        threshold = float(magnitude.max()) if magnitude.size else 0.0
    scaled = np.clip(drawn / threshold, -1.0, 1.0) if threshold > 0 else np.zeros_like(drawn)
    clip = f"clipped at {_percentile_word(q)} pct"
    names = {
        "absolute": ("|attribution|", "|a|"),
        "positive": ("positive attribution", "a>0"),
        "all": ("signed attribution (0 = centre)", "±a"),
    }
    long, short = names[rule]
    return DisplayMap(
        scaled,
        DIVERGING_CMAP if rule == "all" else SEQUENTIAL_CMAP,
        f", {long}, {clip}",
        f"{short} ≤p{q:g}",
        signed=rule == "all",
    )
