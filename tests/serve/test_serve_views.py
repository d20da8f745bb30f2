"""The server's cheap drawing: its own PNG writer and cached colormap tables give exactly the
pixels of PIL's decoder and of :func:`xaikit.viz.colormaps.apply_colormap`."""

from __future__ import annotations

import base64
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


@pytest.mark.parametrize("level", [0, 1, 6])
@pytest.mark.parametrize("shape,colours", [((1, 1), 1), ((5, 7), 3), ((64, 33), 256)])
def test_indexed_png_decodes_to_the_palette_colours(shape, colours, level):
    rng = np.random.default_rng(colours + level)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    index = rng.integers(0, colours, shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(views.indexed_png_bytes(index, palette, level)))
    assert (image.format, image.mode) == ("PNG", "P")
    np.testing.assert_array_equal(np.asarray(image), index)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), palette[index])


@pytest.mark.parametrize(
    "index,palette",
    [
        (np.zeros((4, 4, 3)), np.zeros((4, 3))),  # RGB, not indices
        (np.zeros((4, 4)), np.zeros((257, 3))),  # too many colours for 8 bits
        (np.zeros((4, 4)), np.zeros((0, 3))),
        (np.zeros((4, 4)), np.zeros((4, 4))),  # RGBA palette
    ],
)
def test_indexed_png_refuses_what_it_cannot_write(index, palette):
    with pytest.raises(ValueError, match="palette"):
        views.indexed_png_bytes(index, palette)


@pytest.mark.parametrize("cmap", ["jet", "viridis", "turbo", "gray"])
def test_the_heatmap_uri_shows_apply_colormaps_pixels(cmap):
    """The palette PNG the page gets decodes to exactly ``apply_colormap`` of the map."""
    rng = np.random.default_rng(1)
    heat = rng.random((48, 40))
    heat[0, :5] = [0.0, 1.0, np.nan, -0.25, 1.25]
    for values in (heat, heat.astype(np.float32), heat[7]):  # a 1-D map is a strip
        uri = views.heatmap_uri(values, cmap)
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert image.mode == "P"
        np.testing.assert_array_equal(
            np.asarray(image.convert("RGB")), views.heatmap_pixels(values, cmap)
        )
    expected = apply_colormap(np.nan_to_num(heat), cmap)
    shown = Image.open(io.BytesIO(base64.b64decode(views.heatmap_uri(heat, cmap)[22:])))
    np.testing.assert_array_equal(np.asarray(shown.convert("RGB")), expected)
