"""Turning tensors into what the page shows and downloads: PNG, data URIs, ``.npy``, JSON.

Colours and overlays come from :mod:`xaikit.viz.colormaps` and :mod:`xaikit.viz.overlay`
(used as they are); nothing here computes an explanation. The page blends a heatmap over
its input itself (an opacity slider), so the heatmap is sent as its own picture; the
downloadable figure is :func:`xaikit.viz.overlay.overlay_figure` with a title and colour bar.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import zlib
from typing import Any

import numpy as np

STRIP_ROWS = 12  # rows a 1-D map or signal is drawn with


_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_bytes(pixels: np.ndarray, level: int = 1) -> bytes:
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 -> PNG bytes.

    Written directly (8-bit, no filter, zlib ``level``, 1 by default): a view's PNGs are
    small and drawn per request, and this costs a fraction of PIL's encoder (and of zlib's
    default level 6) for the same pixels; any PNG decoder reads them back exactly. Level 0
    stores the rows as they are: for a natural image, which deflate without PNG filters
    hardly shrinks (a shapes test image: 11.0 kB at level 1, 12.4 kB stored), it costs
    a fortieth of the time."""
    array = np.ascontiguousarray(pixels, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in _PNG_COLOUR_TYPES:
        raise ValueError(f"pixels must be (H, W), (H, W, 3) or (H, W, 4); got {pixels.shape}")
    height, width, channels = array.shape
    rows = np.zeros((height, 1 + width * channels), dtype=np.uint8)  # filter byte 0 per row
    rows[:, 1:] = array.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _png_chunk(b"IEND", b""),
        )
    )


def indexed_png_bytes(index: np.ndarray, palette: np.ndarray, level: int = 1) -> bytes:
    """``(H, W)`` uint8 indices into ``palette`` (``(P, 3)`` uint8, ``P <= 256``) -> an
    8-bit palette PNG: decoded, pixel ``(i, j)`` is ``palette[index[i, j]]``. A colour-mapped
    heatmap is one byte per pixel this way instead of three: at 224 px a tenth of the time of
    the RGB PNG (deflate sees a third of the bytes, and smoother ones) and 40 % of its size."""
    rows_in = np.ascontiguousarray(index, dtype=np.uint8)
    table = np.ascontiguousarray(palette, dtype=np.uint8)
    if rows_in.ndim != 2 or table.ndim != 2 or table.shape[1] != 3 or not 0 < len(table) <= 256:
        raise ValueError(
            f"need (H, W) indices and a (P <= 256, 3) palette; got {index.shape}, {palette.shape}"
        )
    height, width = rows_in.shape
    rows = np.zeros((height, 1 + width), dtype=np.uint8)  # filter byte 0 per row
    rows[:, 1:] = rows_in
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", table.tobytes()),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _png_chunk(b"IEND", b""),
        )
    )


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:image/png;base64,...`` URI (the page needs no image route)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a ``.npy`` file (``np.load`` reads it back exactly)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8")


def _scaled(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def input_pixels(x: Any, kind: str, normalization: Any = None) -> np.ndarray:
    """One model input as uint8 RGB: an image un-normalized (``(C, H, W)``), a signal
    ``(C, L)`` as a strip per channel, a sequence ``(T, F)`` as a features x time picture."""
    from xaikit.viz.colormaps import apply_colormap
    from xaikit.viz.overlay import to_display_image

    values = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if kind == "image":
        rgb = to_display_image(values, normalization=normalization)
        return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    planes = values if kind == "signal" else values.T  # (rows, length)
    picture = apply_colormap(_scaled(planes.astype(np.float64)), "viridis")
    return np.repeat(picture, max(1, STRIP_ROWS // max(1, planes.shape[0])), axis=0)


@functools.lru_cache(maxsize=32)
def colormap_table(cmap: str = "jet") -> np.ndarray:
    """The ``(N, 3)`` uint8 colours of ``cmap``'s lookup table, read once through
    :func:`xaikit.viz.colormaps.apply_colormap` (at each bin's centre)."""
    from xaikit.viz.colormaps import apply_colormap, get_colormap

    size = int(get_colormap(cmap).N)
    table = apply_colormap((np.arange(size, dtype=np.float64) + 0.5) / size, cmap)
    table.setflags(write=False)
    return table


def colormap_index(values: Any, size: int) -> np.ndarray:
    """The bin of each value in a ``size``-colour lookup table, as matplotlib picks it (NaN
    -> 0, clipped to ``[0, 1]``, 1.0 in the last bin)."""
    scaled = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    index = (np.clip(scaled, 0.0, 1.0) * size).astype(np.intp)
    np.minimum(index, size - 1, out=index)
    return index


def colormap_pixels(values: Any, cmap: str = "jet") -> np.ndarray:
    """:func:`xaikit.viz.colormaps.apply_colormap`, pixel for pixel, through the cached
    table: no colormap object is built per call."""
    table = colormap_table(cmap)
    return table[colormap_index(values, table.shape[0])]


def _heat_values(heatmap: np.ndarray) -> np.ndarray:
    values = np.asarray(heatmap, dtype=np.float64)
    if values.ndim == 1:
        values = np.repeat(values[None], STRIP_ROWS, axis=0)
    return values


def heatmap_pixels(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A map in ``[0, 1]`` (``(H, W)``, or ``(L,)`` for signals and sequences) as uint8 RGB."""
    return colormap_pixels(_heat_values(heatmap), cmap)


def heatmap_uri(heatmap: np.ndarray, cmap: str = "jet") -> str:
    """:func:`heatmap_pixels` as a data URI: a palette PNG of the colormap's table when it
    has at most 256 colours (the same decoded pixels, drawn in a tenth of the time), else
    an RGB one."""
    table = colormap_table(cmap)
    values = _heat_values(heatmap)
    if table.shape[0] > 256:
        return pixels_uri(table[colormap_index(values, table.shape[0])])
    index = colormap_index(values, table.shape[0]).astype(np.uint8)
    return data_uri(indexed_png_bytes(index, table))


def colorbar_pixels(cmap: str = "jet", width: int = 256, height: int = 12) -> np.ndarray:
    """A horizontal colour bar from 0 (left) to 1 (right)."""
    from xaikit.viz.colormaps import apply_colormap

    ramp = np.repeat(np.linspace(0.0, 1.0, width)[None], height, axis=0)
    return apply_colormap(ramp, cmap)


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure (Agg canvas) as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def map_figure(
    x: Any,
    heatmap: np.ndarray,
    *,
    kind: str,
    title: str,
    normalization: Any,
    cmap: str,
    alpha: float,
) -> bytes:
    """The downloadable figure of one map: overlay, title and colour bar (images), or the
    signal / sequence with its map as a colour band behind the traces."""
    from xaikit.viz.overlay import overlay_figure, signal_overlay

    values = x.detach().float().cpu() if hasattr(x, "detach") else x
    if kind == "image":
        figure = overlay_figure(
            values,
            heatmap,
            title=title,
            cmap=cmap,
            alpha=alpha,
            normalization=normalization,
            size=max(256, int(values.shape[-1])),
        )
    else:
        figure = signal_overlay(values, heatmap, title=title, channels_first=kind == "signal")
    return figure_png(figure)


def tensor_grid_pixels(grid: Any) -> np.ndarray:
    """A ``(1 | 3, H, W)`` tensor in ``[0, 1]`` (e.g. :attr:`Kernels.grid`) as uint8 RGB."""
    values = grid.detach().float().cpu().clamp(0, 1).numpy()
    if values.shape[0] == 1:
        values = np.repeat(values, 3, axis=0)
    return np.round(values.transpose(1, 2, 0) * 255.0).astype(np.uint8)


def channel_pixels(maps: np.ndarray, cmap: str = "viridis") -> list[np.ndarray]:
    """``(C, *S)`` activations -> one uint8 RGB picture per channel, on one shared scale so
    channels compare."""
    from xaikit.viz.colormaps import apply_colormap

    scaled = _scaled(np.asarray(maps, dtype=np.float64))
    pictures = []
    for plane in scaled:
        if plane.ndim == 1:
            plane = np.repeat(plane[None], STRIP_ROWS, axis=0)
        elif plane.ndim == 0:
            plane = np.full((STRIP_ROWS, STRIP_ROWS), float(plane))
        pictures.append(apply_colormap(plane, cmap))
    return pictures


def pixels_uri(pixels: np.ndarray, level: int = 1) -> str:
    return data_uri(png_bytes(pixels, level))


@functools.lru_cache(maxsize=32)
def colorbar_uri(cmap: str = "jet") -> str:
    """:func:`colorbar_pixels` as a data URI, drawn once per colormap."""
    return pixels_uri(colorbar_pixels(cmap))
