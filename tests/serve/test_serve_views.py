"""The server's cheap drawing: its own PNG writer and cached colormap tables give exactly the
pixels of PIL's decoder and of :func:`xaikit.viz.colormaps.apply_colormap`."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from xaikit.serve import views
from xaikit.viz.colormaps import apply_colormap


@pytest.mark.parametrize("level", [0, 1, 6])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (5, 7, 3), (64, 64, 3), (3, 9, 4)])
def test_png_bytes_decode_to_the_same_pixels(shape, level):
    pixels = np.random.default_rng(sum(shape) + level).integers(0, 256, shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(views.png_bytes(pixels, level)))
    assert image.format == "PNG"
    channels = shape[2] if len(shape) == 3 else 1
    assert image.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    np.testing.assert_array_equal(np.asarray(image), pixels)
    uri = views.pixels_uri(pixels, level)
    assert uri.startswith("data:image/png;base64,")


def test_png_bytes_refuses_other_shapes():
    with pytest.raises(ValueError, match="pixels must be"):
        views.png_bytes(np.zeros((4, 4, 2), dtype=np.uint8))


@pytest.mark.parametrize("cmap", ["jet", "viridis", "inferno", "turbo"])
def test_colormap_pixels_equal_apply_colormap(cmap):
    rng = np.random.default_rng(0)
    values = rng.random((64, 256))
    values[0, :6] = [0.0, 1.0, np.nan, -0.5, 1.5, np.inf]
    values[1] = np.arange(256) / 256  # every bin edge
    values[2] = (np.arange(256) + 1) / 256 - 1e-12  # just under each edge
    values[3] = np.nextafter(np.arange(256) / 256, 1.0)  # just over each edge
    for dtype in (np.float64, np.float32):
        typed = values.astype(dtype)
        expected = apply_colormap(typed, cmap)
        np.testing.assert_array_equal(views.colormap_pixels(typed, cmap), expected)
    heat = views.heatmap_pixels(values[5], cmap)  # a 1-D map: a strip
    np.testing.assert_array_equal(
        heat, apply_colormap(np.repeat(values[5][None], views.STRIP_ROWS, axis=0), cmap)
    )
