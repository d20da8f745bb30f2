"""The one image loader: every format and mode to (C, H, W) float32; bad files -> DataError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, features

from xaikit.data.images import (
    check_min_size,
    list_images,
    load_image,
    read_image,
)
from xaikit.errors import DataError

LOSSLESS = ["png", "bmp", "tiff"] + (["webp"] if features.check("webp") else [])


def _rgb_pattern(h: int = 6, w: int = 5) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, path, **kwargs):
    if path.suffix == ".webp":
        kwargs.setdefault("lossless", True)
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize("ext", LOSSLESS)
def test_rgb_lossless_formats_load_exactly(tmp_path, ext):
    pixels = _rgb_pattern()
    path = _save(Image.fromarray(pixels, "RGB"), tmp_path / f"image.{ext}")
    x = load_image(path)
    assert x.dtype == torch.float32 and x.shape == (3, 6, 5)
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "jpg"])
def test_grey_images_have_one_channel(tmp_path, ext):
    pixels = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))  # smooth, JPEG-friendly
    path = _save(Image.fromarray(pixels, "L"), tmp_path / f"grey.{ext}")
    x = load_image(path)
    assert x.shape == (1, 16, 16)
    atol = 3 / 255 if ext == "jpg" else 1e-6
    torch.testing.assert_close(x[0], torch.from_numpy(pixels).float() / 255, atol=atol, rtol=0)


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_stores_grey_as_rgb_with_equal_channels(tmp_path):
    pixels = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    x = load_image(_save(Image.fromarray(pixels, "L"), tmp_path / "grey.webp"))
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(x[0], torch.from_numpy(pixels).float() / 255, atol=1e-6, rtol=0)
    assert torch.equal(x[0], x[2])


def test_jpeg_colour_image_loads_close_to_its_pixels(tmp_path):
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 200, 100, 50
    path = _save(Image.fromarray(pixels), tmp_path / "photo.jpeg", quality=95)
    x = load_image(path)
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(
        x.mean(dim=(1, 2)), torch.tensor([200, 100, 50]) / 255, atol=4 / 255, rtol=0
    )


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_sixteen_bit_images_keep_their_precision(tmp_path, ext):
    values = np.array([[0, 1, 257], [32768, 65534, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / f"deep.{ext}")
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    x = load_image(path)
    assert x.shape == (1, 2, 3)
    torch.testing.assert_close(x[0].double(), torch.from_numpy(values / 65535.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("ext", ["png", "tiff"] + (["webp"] if features.check("webp") else []))
def test_rgba_is_composited_on_white(tmp_path, ext):
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, 0] = 255  # red
    rgba[0, :, 3] = [0, 255, 102]  # transparent, opaque, 40 % opaque
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / f"alpha.{ext}")
    x = load_image(path)
    assert x.shape == (3, 1, 3)
    expected = torch.tensor(
        [[1.0, 1.0, 1.0], [1.0, 0.0, 0.6], [1.0, 0.0, 0.6]]  # R, G, B channels by pixel
    )[:, None, :]
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    la = np.array([[[0, 0], [0, 255], [100, 51]]], dtype=np.uint8)  # (1, 3, 2): L, A
    path = _save(Image.fromarray(la, "LA"), tmp_path / "la.png")
    x = load_image(path)
    expected = torch.tensor([[[1.0, 0.0, 100 / 255 * 0.2 + 0.8]]])
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_palette_images_become_rgb_and_honour_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 0] + [0] * (256 * 3 - 6))
    img.putdata([0, 1])
    plain = _save(img, tmp_path / "palette.png")
    transparent = _save(img, tmp_path / "palette-t.png", transparency=0)
    gif = _save(img, tmp_path / "palette.gif")

    colours = torch.tensor([[10, 200], [20, 100], [30, 0]], dtype=torch.float32)[:, None] / 255
    torch.testing.assert_close(load_image(plain), colours, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_image(gif), colours, atol=1e-6, rtol=0)
    with Image.open(transparent) as opened:
        assert opened.mode == "P" and "transparency" in opened.info
    expected = colours.clone()
    expected[:, :, 0] = 1.0  # palette entry 0 is transparent -> white
    torch.testing.assert_close(load_image(transparent), expected, atol=1e-6, rtol=0)


def test_bilevel_and_cmyk_modes(tmp_path):
    bits = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    torch.testing.assert_close(
        load_image(_save(bits, tmp_path / "bits.png")), torch.tensor([[[0.0, 1.0]]])
    )
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red
    x = load_image(_save(cmyk, tmp_path / "cmyk.tiff"))
    assert x.shape == (3, 2, 2)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_channels_option_converts_grey_and_colour(tmp_path):
    pixels = _rgb_pattern()
    path = _save(Image.fromarray(pixels), tmp_path / "rgb.png")
    grey = load_image(path, channels=1)
    r, g, b = (torch.from_numpy(pixels[..., c]).float() / 255 for c in range(3))
    torch.testing.assert_close(grey[0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-6, rtol=0)

    grey_path = _save(Image.fromarray(pixels[..., 0], "L"), tmp_path / "grey.png")
    rgb = load_image(grey_path, channels=3)
    assert rgb.shape == (3, 6, 5)
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
    with pytest.raises(DataError, match="channels must be 1"):
        load_image(path, channels=2)


def test_size_resizes_and_read_image_reports_the_original_size(tmp_path):
    path = _save(Image.new("RGB", (40, 30), (51, 102, 153)), tmp_path / "flat.png")
    raw = read_image(path, size=16)
    assert raw.original_size == (30, 40)
    assert raw.image.shape == (3, 16, 16)
    torch.testing.assert_close(raw.image[:, 7, 7], torch.tensor([0.2, 0.4, 0.6]), atol=1e-5, rtol=0)
    assert load_image(path, size=(8, 12)).shape == (3, 8, 12)
    with pytest.raises(DataError, match="size must be"):
        load_image(path, size=0)


def test_normalization_from_a_model_card_is_applied(tmp_path):
    pixels = _rgb_pattern()
    path = _save(Image.fromarray(pixels), tmp_path / "rgb.png")
    card = {"normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}}
    x = load_image(path, normalization=card["normalization"])
    raw = read_image(path).image
    expected = (raw - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor(
        [0.2, 0.25, 0.5]
    )[:, None, None]
    torch.testing.assert_close(x, expected)
    # A one-channel card turns a colour file into the grey input the model expects.
    grey = load_image(path, normalization={"mean": [0.5], "std": [0.5]})
    torch.testing.assert_close(grey, (read_image(path, channels=1).image - 0.5) / 0.5)
    with pytest.raises(DataError, match="std values must be positive"):
        load_image(path, normalization={"mean": [0.5], "std": [0.0]})
    with pytest.raises(DataError, match="3 channels"):
        load_image(path, channels=3, normalization={"mean": [0.1, 0.2], "std": [1.0, 1.0]})


@pytest.mark.parametrize(
    ("orientation", "shape", "corner"),
    [
        (1, (3, 16, 32), "top-left"),  # as stored
        (3, (3, 16, 32), "bottom-right"),  # "rotate 180 to display"
        (6, (3, 32, 16), "top-right"),  # "rotate 90 CW to display"
        (8, (3, 32, 16), "bottom-left"),  # "rotate 90 CCW to display"
    ],
)
@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, orientation, shape, corner, ext):
    """A 32x16 (W x H) picture, blue with a red 8x8 block in its stored top-left corner: after
    the EXIF rotation the block sits in the corner the orientation tag sends it to and every
    other corner stays blue (JPEG: within compression error)."""
    pixels = np.zeros((16, 32, 3), dtype=np.uint8)
    pixels[..., 2] = 255
    pixels[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 95} if ext == "jpg" else {}
    path = _save(Image.fromarray(pixels), tmp_path / f"phone.{ext}", exif=exif, **options)
    x = load_image(path)
    assert x.shape == shape
    h, w = shape[1:]
    corners = {
        "top-left": x[:, 2, 2],
        "top-right": x[:, 2, w - 3],
        "bottom-left": x[:, h - 3, 2],
        "bottom-right": x[:, h - 3, w - 3],
    }
    tolerance = 0.1 if ext == "jpg" else 0.0
    for name, rgb in corners.items():
        expected = [1.0, 0.0, 0.0] if name == corner else [0.0, 0.0, 1.0]
        torch.testing.assert_close(rgb, torch.tensor(expected), atol=tolerance, rtol=0)


def test_one_pixel_image_loads_and_min_size_is_a_separate_check(tmp_path):
    path = _save(Image.new("L", (1, 1), 128), tmp_path / "dot.png")
    x = load_image(path)
    assert x.shape == (1, 1, 1)
    check_min_size(x, 1)
    with pytest.raises(DataError, match="1x1 pixels, smaller than the 32x32"):
        check_min_size(x, 32, name=str(path))
    check_min_size((40, 50), (32, 48))


def test_list_images_is_sorted_by_name_and_filters_extensions(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.webp", "notes.txt", ".hidden.png", "d.tif", "e.jpeg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.bmp").write_bytes(b"x")
    expected = ["a.jpg", "b.PNG", "c.webp", "d.tif", "e.jpeg"]
    assert [p.name for p in list_images(tmp_path)] == expected
    assert [p.name for p in list_images(tmp_path, recursive=True)][-1] == "f.bmp"
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(DataError, match="is a file"):
        list_images(tmp_path / "a.jpg")


# ---------------------------------------------------------------- bad input -> DataError


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` grey pixels but whose data is tiny."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _truncated(tmp_path, ext: str):
    path = tmp_path / f"cut.{ext}"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _save(Image.fromarray(noise), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_file(tmp_path, case: str):
    path = tmp_path / f"{case}.png"
    if case == "missing":
        return path
    if case == "folder":
        return tmp_path
    if case == "truncated-jpeg":
        return _truncated(tmp_path, "jpg")
    if case == "truncated-png":
        return _truncated(tmp_path, "png")
    contents = {
        "empty": b"",
        "text": b"not a picture",
        "bomb": _png_with_header(20000, 20000),  # beyond PIL's own decompression-bomb limit
        "big": _png_with_header(9000, 9000),  # below PIL's limit, above xaikit's 50 Mpx
    }
    path.write_bytes(contents[case])
    return path


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("empty", "is empty"),
        ("text", "is not an image file"),
        ("truncated-png", "truncated or corrupt"),
        ("truncated-jpeg", "truncated or corrupt"),
        ("bomb", "refused before decoding"),
        ("big", "refused before decoding: its header claims 9000x9000"),
    ],
)
def test_bad_files_raise_data_error_with_file_and_reason(tmp_path, case, reason):
    path = _bad_file(tmp_path, case)
    with pytest.raises(DataError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_max_pixels_is_checked_before_decoding(tmp_path):
    path = tmp_path / "header-only.png"
    path.write_bytes(_png_with_header(300, 300))  # decoding would fail: its data is cut short
    with pytest.raises(DataError, match="refused before decoding"):
        load_image(path, max_pixels=10_000)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_image(path)
