"""Heatmaps drawn over their inputs: images (uint8 RGB arrays, PNG figures) and 1-D signals.

The edge of the pipeline where tensors become pixels, so the usual pitfalls are handled once:

* normalized inputs are un-normalized (``mean``/``std`` or a model card's ``normalization``)
  before display, instead of being shown clipped;
* the heatmap is resized bilinearly to the image's own ``H x W`` (the output always has the
  input's size, square or not);
* colours come from matplotlib colormaps in RGB (no OpenCV, no BGR);
* grayscale, RGB and RGBA inputs, channels first (tensors) or last (arrays);
* figures are :class:`matplotlib.figure.Figure` objects on an Agg canvas - never pyplot, never
  ``show()`` - so drawing is headless and leaves no global figure behind; files are written
  atomically;
* memory: pixels are converted and blended a strip of rows at a time, so the float64
  temporaries of the arithmetic cover a strip, never the whole picture (a 7000 x 7000 overlay
  needs its uint8 output and one float32 copy of the image, not 150 bytes per pixel), and
  :func:`display_pixels` scales large images down to :data:`MAX_OVERLAY_SIDE` as uint8 for
  pipelines that keep many pictures (``xaikit explain``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from xaikit.errors import XaikitConfigError
from xaikit.io import atomic_path
from xaikit.names import display
from xaikit.viz.colormaps import CONTOUR_COLOR, apply_colormap, get_colormap

#: Text drawn into figures is plain: never parsed as mathtext or TeX (a class named
#: ``$\\foo$`` is shown as written, not a parse error), and at most this many characters.
PLAIN_TEXT: dict[str, Any] = {"parse_math": False, "usetex": False}
TITLE_LIMIT = 200

ArrayLike = np.ndarray | torch.Tensor
Normalization = Mapping[str, Sequence[float]]
Size = int | tuple[int, int]

#: The longer side, in pixels, of the pictures :func:`display_pixels` keeps (and so of the
#: overlays ``xaikit explain`` writes): larger images are scaled down to it, so one picture
#: costs at most 2048 x 2048 x 3 bytes (12 MiB) whatever the file's size.
MAX_OVERLAY_SIDE = 2048
# Rows converted / blended at a time: bounds the float64 temporaries to a strip of the picture.
_ROWS = 256


def display_pixels(image: torch.Tensor, max_side: int | None = MAX_OVERLAY_SIDE) -> torch.Tensor:
    """An image to keep for drawing: ``(C, H, W)`` float in ``[0, 1]`` -> ``(C, H', W')`` uint8.

    The size is kept when the longer side is at most ``max_side`` (``None``: always), so small
    images stay pixel-exact; larger ones are scaled down, aspect kept, with antialiased bilinear
    interpolation in float32 (the full-size image is not copied).
    """
    height, width = (int(s) for s in image.shape[-2:])
    if max_side is not None and max(height, width) > max_side:
        size = _output_size((height, width), max_side)
        image = F.interpolate(
            image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
        )[0]
    return (image * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _channels_first(image: ArrayLike) -> np.ndarray:
    """``(H, W)``, ``(C, H, W)``, ``(H, W, C)`` or ``(1, C, H, W)`` -> ``(C, H, W)``.

    Tensors are read channels first and arrays channels last (torch's and PIL's conventions)
    unless only the other reading has 1, 3 or 4 channels.
    """
    arr = _numpy(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise XaikitConfigError(
            f"an image must be shaped (H, W), (C, H, W) or (H, W, C), got {tuple(arr.shape)}"
        )
    first, last = arr.shape[0] in (1, 3, 4), arr.shape[-1] in (1, 3, 4)
    channels_first = isinstance(image, torch.Tensor) if first == last else first
    return arr if channels_first else arr.transpose(2, 0, 1)


def _stats(values: Sequence[float] | float, channels: int, name: str) -> np.ndarray:
    stats = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if stats.ndim != 1 or len(stats) not in (1, channels, min(channels, 3)):
        raise XaikitConfigError(
            f"normalization {name} has {len(stats)} values but the image has {channels} "
            "channels; pass one value per channel"
        )
    full = np.zeros(channels) if name == "mean" else np.ones(channels)
    full[: len(stats)] = stats if len(stats) > 1 else stats[0]
    if len(stats) == 1:
        full[:] = stats[0]
    return full.reshape(-1, 1, 1)


def to_display_image(
    image: ArrayLike,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalization: Normalization | None = None,
    channel_order: str = "RGB",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """An input as displayable RGB: ``(C, H, W)`` / ``(H, W, C)`` / ``(H, W)`` ->
    ``(H, W, 3)`` float32 in ``[0, 1]``.

    Args:
        mean, std: per-channel statistics the input was normalized with; undone
            (``x * std + mean``) before display. Or pass a model card's ``normalization``
            dict ``{"mean": [...], "std": [...]}`` instead.
        channel_order: ``"RGB"`` or ``"BGR"`` (reversed to RGB).
        value_range: the pixel range after un-normalizing; default ``(0, 255)`` for
            integer images, ``(0, 1)`` for floats. Values outside are clipped.

    One channel is shown as gray, four as RGBA with the alpha channel dropped; any other
    channel count as the gray mean of its channels.
    """
    if normalization is not None:
        if mean is not None or std is not None:
            raise XaikitConfigError("pass either mean/std or normalization, not both")
        if not isinstance(normalization, Mapping) or not {"mean", "std"} <= set(normalization):
            raise XaikitConfigError(
                f"normalization must be a dict with 'mean' and 'std' lists, got {normalization!r}"
            )
        mean, std = normalization["mean"], normalization["std"]
    if (mean is None) != (std is None):
        raise XaikitConfigError("un-normalizing needs both mean and std")
    if channel_order not in ("RGB", "BGR"):
        raise XaikitConfigError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    arr = _channels_first(image)
    integer = np.issubdtype(arr.dtype, np.integer)
    if value_range is None:
        value_range = (0.0, float(np.iinfo(arr.dtype).max)) if integer else (0.0, 1.0)
    low, high = value_range
    if not high > low:
        raise XaikitConfigError(
            f"value_range must be (low, high) with high > low, got {value_range}"
        )
    channels = arr.shape[0]
    scale = shift = None
    if mean is not None and std is not None:
        scale, shift = _stats(std, channels, "std"), _stats(mean, channels, "mean")
    height, width = arr.shape[1:]
    out = np.empty((height, width, 3), dtype=np.float32)
    for top in range(0, height, _ROWS):
        # float64 arithmetic as before, but on a strip: the temporaries stay small.
        rows = arr[:, top : top + _ROWS].astype(np.float64)
        if scale is not None and shift is not None:
            rows = rows * scale + shift
        rows = (rows - low) / (high - low)
        if channel_order == "BGR" and channels in (3, 4):
            rows = np.concatenate([rows[2::-1], rows[3:]])
        if channels == 1:
            rows = np.repeat(rows, 3, axis=0)
        elif channels == 4:
            rows = rows[:3]
        elif channels != 3:
            rows = np.repeat(rows.mean(axis=0, keepdims=True), 3, axis=0)
        out[top : top + _ROWS] = np.clip(np.nan_to_num(rows), 0.0, 1.0).transpose(1, 2, 0)
    return out


def _resize(arr: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize ``(H, W)`` or ``(H, W, C)`` to ``size = (H', W')`` with torch's interpolation."""
    if arr.shape[:2] == tuple(size):
        return arr
    planes = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    planes = planes[None, None] if planes.dim() == 2 else planes.permute(2, 0, 1)[None]
    kwargs: dict[str, Any] = {"mode": mode}
    if mode == "bilinear":
        downscale = size[0] < arr.shape[0] or size[1] < arr.shape[1]
        kwargs.update(align_corners=False, antialias=downscale)
    out = F.interpolate(planes, size=size, **kwargs)[0]
    out = out[0] if arr.ndim == 2 else out.permute(1, 2, 0)
    return out.numpy()


def _output_size(shape: tuple[int, int], size: Size | None) -> tuple[int, int]:
    if size is None:
        return shape
    if isinstance(size, int):
        if size < 1:
            raise XaikitConfigError(f"size must be positive, got {size}")
        scale = size / max(shape)
        return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))
    if len(size) != 2 or min(size) < 1:
        raise XaikitConfigError(f"size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def prepare_heatmap(heatmap: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` (leading singleton dims allowed) -> ``(H, W)`` float in ``[0, 1]``.

    Resized bilinearly to ``size``. A map already in ``[0, 1]`` (xaikit's normalized heatmaps)
    is used as is, so 1 is the colormap's high end; a raw map with values outside is min-max
    scaled first. NaN counts as 0.
    """
    arr = np.nan_to_num(_numpy(heatmap).astype(np.float64))
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise XaikitConfigError(
            f"a heatmap must be shaped (h, w), got {tuple(_numpy(heatmap).shape)}; "
            "select one image and one target first"
        )
    low, high = float(arr.min()), float(arr.max())
    if low < 0 or high > 1:
        arr = (arr - low) / (high - low) if high > low else np.zeros_like(arr)
    return np.clip(_resize(arr, size, "bilinear"), 0.0, 1.0)


def mask_contour(mask: ArrayLike, width: int = 1) -> np.ndarray:
    """The boundary of a mask: ``(H, W)`` -> ``(H, W)`` bool, the mask pixels within ``width``
    pixels (4-neighbourhood) of a pixel outside it or of the image border."""
    inside = _numpy(mask).astype(bool)
    inner = inside.copy()
    for _ in range(max(1, width)):
        p = np.pad(inner, 1, constant_values=False)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return inside & ~inner


def _prepare_mask(mask: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    arr = _numpy(mask)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise XaikitConfigError(f"a mask must be shaped (H, W), got {tuple(arr.shape)}")
    arr = arr.astype(np.float32) > 0.5 if arr.dtype != bool else arr
    return _resize(arr.astype(np.float32), size, "nearest") > 0.5


def overlay(
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalization: Normalization | None = None,
    cmap: str | Colormap = "jet",
    alpha: float = 0.5,
    mask: ArrayLike | None = None,
    size: Size | None = None,
    mask_color: tuple[int, int, int] = CONTOUR_COLOR,
    contour_width: int = 1,
    channel_order: str = "RGB",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """A heatmap blended over its image: ``-> (H, W, 3)`` uint8 RGB.

    Args:
        image: ``(C, H, W)`` / ``(H, W, C)`` / ``(H, W)`` tensor or array, 1, 3 or 4
            channels (see :func:`to_display_image`, which also takes ``value_range`` and
            ``channel_order``).
        heatmap: ``(h, w)`` map, normally in ``[0, 1]`` (see :func:`prepare_heatmap`);
            resized bilinearly to the image.
        mean, std, normalization: how the image was normalized; undone before display.
        cmap: a matplotlib colormap name or object.
        alpha: weight of the colour layer: ``out = (1 - alpha) * image + alpha * cmap(heat)``.
        mask: optional ``(H, W)`` ground-truth mask (bool or 0/1, any size: resized nearest);
            its contour is drawn in ``mask_color``, ``contour_width`` pixels wide.
        size: output size - ``(H, W)``, or an int for the longer side (aspect kept); default
            the image's own size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise XaikitConfigError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = to_display_image(
        image,
        mean=mean,
        std=std,
        normalization=normalization,
        channel_order=channel_order,
        value_range=value_range,
    )
    out_size = _output_size(rgb.shape[:2], size)
    if rgb.shape[:2] != out_size:
        rgb = np.clip(_resize(rgb, out_size, "bilinear"), 0.0, 1.0)
    heat = prepare_heatmap(heatmap, out_size)
    out = np.empty((*out_size, 3), dtype=np.uint8)
    for top in range(0, out_size[0], _ROWS):
        # A strip at a time: the colormap's lookup and the float64 blend of a whole picture
        # would cost ~100 bytes per pixel.
        rows = slice(top, top + _ROWS)
        colours = apply_colormap(heat[rows], cmap).astype(np.float64) / 255.0
        blended = (1.0 - alpha) * rgb[rows] + alpha * colours
        out[rows] = np.clip(np.round(blended * 255.0), 0, 255).astype(np.uint8)
    if mask is not None:
        out[mask_contour(_prepare_mask(mask, out_size), contour_width)] = mask_color
    return out


def _plain_title(title: Any) -> str:
    """A title as drawn: valid Unicode, at most :data:`TITLE_LIMIT` characters."""
    text = display(str(title))
    return text if len(text) <= TITLE_LIMIT else text[: TITLE_LIMIT - 3] + "..."


def _figure(**kwargs: Any) -> Figure:
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def overlay_figure(
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    title: str | None = None,
    colorbar: bool = True,
    colorbar_label: str = "attribution",
    height: float = 4.0,
    cmap: str | Colormap = "jet",
    colorbar_range: tuple[float, float] = (0.0, 1.0),
    **overlay_options: Any,
) -> Figure:
    """A figure of :func:`overlay` with an optional title and colour bar (``[0, 1]``).

    The title is plain text (no mathtext or TeX: ``$`` is a dollar sign), cut to
    :data:`TITLE_LIMIT` characters.

    The image part is ``height`` inches tall and keeps the image's aspect ratio; the figure's
    size is fixed by the layout (``fig.get_size_inches()``), so saved files have a
    predictable pixel size. ``overlay_options`` go to :func:`overlay`. ``colorbar_range`` is
    what the colour bar's ends read (``(-1, 1)`` for a signed map drawn as
    :attr:`~xaikit.viz.colormaps.DisplayMap.colour_values`); the colours are the same.
    """
    rgb = overlay(image, heatmap, cmap=cmap, **overlay_options)
    h, w = rgb.shape[:2]
    pad, bar, top = 0.08, (0.95 if colorbar else 0.0), (0.45 if title else 0.0)
    image_width = height * w / h
    fig_w, fig_h = image_width + bar + 2 * pad, height + top + 2 * pad
    figure = _figure(figsize=(fig_w, fig_h))
    ax = figure.add_axes((pad / fig_w, pad / fig_h, image_width / fig_w, height / fig_h))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(_plain_title(title), fontsize=11, **PLAIN_TEXT)
    if colorbar:
        cax = figure.add_axes(
            ((pad + image_width + 0.1) / fig_w, pad / fig_h, 0.15 / fig_w, height / fig_h)
        )
        mappable = ScalarMappable(norm=Normalize(*colorbar_range), cmap=get_colormap(cmap))
        figure.colorbar(mappable, cax=cax, label=colorbar_label)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Write ``figure`` atomically; the format comes from the suffix (PNG when there is none)."""
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi)
    return target


def save_overlay_figure(
    path: str | os.PathLike[str],
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    title: str | None = None,
    colorbar: bool = True,
    dpi: int = 100,
    **options: Any,
) -> Path:
    """Write :func:`overlay_figure` (e.g. titled ``"cat (p=0.93)"``) as a PNG, atomically.

    The file is ``int(inches * dpi)`` pixels for the figure's ``get_size_inches()`` (as
    matplotlib's Agg renderer sizes it). Returns the path.
    """
    figure = overlay_figure(image, heatmap, title=title, colorbar=colorbar, **options)
    return save_figure(figure, path, dpi=dpi)


def _resample(values: np.ndarray, length: int) -> np.ndarray:
    """Linear resampling of ``(l,)`` onto ``length`` points, cell centres aligned."""
    if len(values) == length:
        return values
    source = (np.arange(len(values)) + 0.5) * length / len(values) - 0.5
    return np.interp(np.arange(length), source, values)


def signal_overlay(
    signal: ArrayLike,
    attribution: ArrayLike,
    *,
    title: str | None = None,
    cmap: str | Colormap = "Reds",
    alpha: float = 0.7,
    channels_first: bool = True,
    labels: Sequence[str] | None = None,
    colorbar: bool = True,
    figsize: tuple[float, float] = (8.0, 2.6),
) -> Figure:
    """A 1-D signal with its attribution as a colour band behind the trace.

    Args:
        signal: ``(L,)``, ``(C, L)`` (``channels_first``; a Conv1d input) or ``(L, C)``
            (``channels_first=False``; a recurrent model's ``(T, F)`` sequence).
        attribution: ``(l,)`` per-step map (e.g. :func:`xaikit.explain.temporal.explain_sequence`
            or a 1-D CAM), in ``[0, 1]`` or min-max scaled; resampled linearly to ``L``.
        cmap, alpha: the band's colormap (default ``"Reds"``: white where nothing matters,
            so the trace stays readable) and opacity.
        labels: one legend entry per channel.

    Returns:
        a :class:`~matplotlib.figure.Figure` on an Agg canvas (save with :func:`save_figure`).
    """
    trace = _numpy(signal).astype(np.float64)
    if trace.ndim == 1:
        trace = trace[None]
    elif trace.ndim == 2 and not channels_first:
        trace = trace.T
    elif trace.ndim != 2:
        raise XaikitConfigError(
            f"a signal must be shaped (L,), (C, L) or (L, C), got {tuple(trace.shape)}"
        )
    channels, length = trace.shape
    if labels is not None and len(labels) != channels:
        raise XaikitConfigError(f"{len(labels)} labels given for {channels} channels")
    band = np.nan_to_num(_numpy(attribution).astype(np.float64)).squeeze()
    if band.ndim != 1:
        raise XaikitConfigError(
            f"a signal attribution must be shaped (L,), got {tuple(_numpy(attribution).shape)}"
        )
    low, high = float(band.min()), float(band.max())
    if low < 0 or high > 1:
        band = (band - low) / (high - low) if high > low else np.zeros_like(band)
    band = _resample(band, length)
    y_low, y_high = float(trace.min()), float(trace.max())
    margin = 0.08 * (y_high - y_low) if y_high > y_low else 1.0
    y_low, y_high = y_low - margin, y_high + margin

    figure = _figure(figsize=figsize, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(
        band[None, :],
        aspect="auto",
        cmap=get_colormap(cmap),
        alpha=alpha,
        vmin=0.0,
        vmax=1.0,
        extent=(-0.5, length - 0.5, y_low, y_high),
        origin="lower",
        interpolation="nearest",
    )
    for c in range(channels):
        ax.plot(
            np.arange(length),
            trace[c],
            color="black" if channels == 1 else None,
            linewidth=1.2,
            label=labels[c] if labels is not None else None,
        )
    ax.set_xlim(-0.5, length - 0.5)
    ax.set_ylim(y_low, y_high)
    ax.set_xlabel("step")
    if labels is not None:
        legend = ax.legend(loc="upper right", fontsize="small")
        for text in legend.get_texts():
            text.set(**PLAIN_TEXT)
    if title:
        ax.set_title(_plain_title(title), **PLAIN_TEXT)
    if colorbar:
        figure.colorbar(image, ax=ax, label="attribution", pad=0.01)
    return figure
