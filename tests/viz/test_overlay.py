"""Overlays: colours land where the heatmap is high, normalized inputs look like the raw image,
the output keeps the input's size, masks get a contour, figures save as PNGs of a known size."""

import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from xaikit.errors import XaikitConfigError
from xaikit.viz import (
    CONTOUR_COLOR,
    apply_colormap,
    colormap_color,
    mask_contour,
    overlay,
    overlay_figure,
    prepare_heatmap,
    save_figure,
    save_overlay_figure,
    signal_overlay,
    to_display_image,
)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def quadrant_heatmap(h: int = 16, w: int = 16) -> torch.Tensor:
    heat = torch.zeros(h, w)
    heat[: h // 2, : w // 2] = 1.0
    return heat


def quadrant_contrast(pixels: np.ndarray, figure: Figure) -> float:
    """Mean red-minus-blue of the top-left quarter of a saved figure's image, minus that of
    its bottom-right quarter (central halves of the quarters, clear of the blurred edge).

    ``pixels`` is the ``(H, W, 3)`` PNG of ``figure``'s layout; the image is its first axes.
    """
    height, width = pixels.shape[:2]
    box = figure.axes[0].get_position()
    top, bottom = (1 - box.y1) * height, (1 - box.y0) * height
    left, right = box.x0 * width, box.x1 * width
    h, w = bottom - top, right - left

    def red_minus_blue(row: float, col: float) -> float:
        """Over the central half of the quarter whose top-left is at ``(row, col)`` (in
        fractions of the image)."""
        r0, r1 = int(top + (row + 0.125) * h), int(top + (row + 0.375) * h)
        c0, c1 = int(left + (col + 0.125) * w), int(left + (col + 0.375) * w)
        patch = pixels[r0:r1, c0:c1].astype(float)
        return float((patch[..., 0] - patch[..., 2]).mean())

    return red_minus_blue(0.0, 0.0) - red_minus_blue(0.5, 0.5)


@pytest.fixture
def photo() -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cmap", ["jet", "viridis", "inferno"])
def test_a_hot_top_left_quadrant_gets_the_colormaps_high_end_colour(cmap):
    black = torch.zeros(3, 32, 32)
    out = overlay(black, quadrant_heatmap(), cmap=cmap, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    high, low = colormap_color(cmap, 1.0), colormap_color(cmap, 0.0)
    assert np.all(out[:14, :14] == high)  # the quadrant, away from the blurred edge
    assert np.all(out[18:, 18:] == low)
    assert np.all(out[18:, :14] == low) and np.all(out[:14, 18:] == low)


def test_alpha_blends_image_and_colour(photo):
    out = overlay(photo, quadrant_heatmap(), alpha=0.3)
    pixel = photo[:, 3, 4].numpy()
    expected = np.round((0.7 * pixel + 0.3 * np.array(colormap_color("jet", 1.0)) / 255) * 255)
    np.testing.assert_array_equal(out[3, 4], expected.astype(np.uint8))
    np.testing.assert_array_equal(
        overlay(photo, quadrant_heatmap(), alpha=0.0),
        np.round(photo.permute(1, 2, 0).numpy() * 255),
    )


def test_a_normalized_tensor_overlays_like_the_raw_image(photo):
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
    normalized = (photo - mean) / std
    heat = torch.rand(7, 7)
    raw = overlay(photo, heat).astype(int)
    with_stats = overlay(normalized, heat, mean=IMAGENET_MEAN, std=IMAGENET_STD).astype(int)
    with_card = overlay(
        normalized, heat, normalization={"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    ).astype(int)
    assert np.abs(raw - with_stats).max() <= 1
    assert np.abs(raw - with_card).max() <= 1
    # without un-normalizing the picture is visibly different (clipped)
    assert np.abs(raw - overlay(normalized, heat).astype(int)).mean() > 10


def test_output_has_the_inputs_size_for_non_square_images():
    image = torch.rand(3, 20, 36)
    heat = torch.rand(5, 9)
    assert overlay(image, heat).shape == (20, 36, 3)
    assert overlay(image.permute(1, 2, 0).numpy(), heat).shape == (20, 36, 3)
    assert overlay(image, heat, size=72).shape == (40, 72, 3)  # longer side, aspect kept
    assert overlay(image, heat, size=(10, 12)).shape == (10, 12, 3)


def test_the_heatmap_is_resized_bilinearly_without_distortion():
    heat = torch.zeros(4, 8)
    heat[:, 4:] = 1.0  # right half hot
    resized = prepare_heatmap(heat, (20, 40))
    assert resized.shape == (20, 40)
    np.testing.assert_allclose(resized[:, :18], 0, atol=1e-6)
    np.testing.assert_allclose(resized[:, 22:], 1, atol=1e-6)
    np.testing.assert_allclose(resized[:, 18:22], np.tile([0.2, 0.4, 0.6, 0.8], (20, 1)), atol=1e-6)


def test_a_raw_signed_heatmap_is_min_max_scaled():
    heat = torch.tensor([[-2.0, 0.0], [2.0, 6.0]])
    np.testing.assert_allclose(prepare_heatmap(heat, (2, 2)), [[0, 0.25], [0.5, 1.0]])
    assert np.all(prepare_heatmap(torch.full((3, 3), 5.0), (3, 3)) == 0)  # constant: no NaN


@pytest.mark.parametrize(
    "image",
    [
        torch.rand(1, 12, 10),  # (1, H, W) tensor
        torch.rand(12, 10),  # (H, W)
        np.random.default_rng(0).random((12, 10, 1)),  # (H, W, 1) array
    ],
)
def test_grayscale_images_are_shown_gray(image):
    out = overlay(image, torch.zeros(3, 3), alpha=0.0)
    assert out.shape == (12, 10, 3)
    assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 1] == out[..., 2])
    gray = np.asarray(image).reshape(12, 10) if not torch.is_tensor(image) else image
    np.testing.assert_array_equal(out[..., 0], np.round(np.asarray(gray).reshape(12, 10) * 255))


def test_rgba_images_drop_alpha_and_uint8_arrays_are_read_as_0_to_255():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(9, 11, 4), dtype=np.uint8)
    out = overlay(rgba, np.zeros((3, 3)), alpha=0.0)
    np.testing.assert_array_equal(out, rgba[..., :3])
    rgba_tensor = torch.from_numpy(rgba).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(overlay(rgba_tensor, np.zeros((3, 3)), alpha=0.0), out)


def test_bgr_input_is_shown_as_rgb():
    bgr = np.zeros((4, 4, 3), dtype=np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    out = overlay(bgr, np.zeros((2, 2)), alpha=0.0, channel_order="BGR")
    assert tuple(out[0, 0]) == (0, 0, 255)


def test_display_image_of_a_normalized_tensor_recovers_pixels(photo):
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
    shown = to_display_image((photo - mean) / std, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    np.testing.assert_allclose(shown, photo.permute(1, 2, 0).numpy(), atol=1e-5)


def test_mask_contour_pixels_have_the_contour_colour(photo):
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:20, 10:26] = True
    out = overlay(photo, torch.zeros(4, 4), mask=mask, alpha=0.5)
    ring = mask_contour(mask.numpy())
    assert ring.sum() == 2 * 12 + 2 * 16 - 4  # the rectangle's one-pixel boundary
    assert np.all(out[ring] == CONTOUR_COLOR)
    assert ring[8, 10] and ring[19, 25] and not ring[12, 15] and not ring[7, 10]
    plain = overlay(photo, torch.zeros(4, 4), alpha=0.5)
    np.testing.assert_array_equal(out[~ring], plain[~ring])
    thick = mask_contour(mask.numpy(), width=2)
    assert thick.sum() > ring.sum() and np.all(thick[ring])
    red = overlay(photo, torch.zeros(4, 4), mask=mask, mask_color=(255, 0, 0))
    assert np.all(red[ring] == (255, 0, 0))


def test_a_low_resolution_mask_is_resized_to_the_image(photo):
    mask = np.zeros((8, 8))
    mask[2:6, 2:6] = 1
    out = overlay(photo, torch.zeros(4, 4), mask=mask)
    assert np.all(out[8, 8:24] == CONTOUR_COLOR)  # the square's top edge at 4x scale


def test_save_overlay_figure_writes_a_png_of_the_expected_size(tmp_path, photo):
    image = photo[:, :, :24]  # non-square
    path = tmp_path / "out" / "cat.png"
    returned = save_overlay_figure(path, image, quadrant_heatmap(), title="cat (p=0.93)", dpi=80)
    assert returned == path and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["cat.png"]  # no temporary left behind
    expected_size = overlay_figure(image, quadrant_heatmap(), title="cat (p=0.93)")
    width, height = (int(inches * 80) for inches in expected_size.get_size_inches())
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (width, height)
        pixels = np.asarray(png.convert("RGB"))
    # the overlay's hot quadrant is in the picture, where the image's top-left quarter is
    # (jet's red end: red minus blue about 128 higher there than in the bottom-right quarter)
    assert quadrant_contrast(pixels, expected_size) > 100
    # the check is not met by any overlay at all: an all-zero heatmap is blue everywhere
    cold = save_overlay_figure(
        tmp_path / "cold.png", image, torch.zeros(16, 16), title="cat (p=0.93)", dpi=80
    )
    with Image.open(cold) as png:
        assert abs(quadrant_contrast(np.asarray(png.convert("RGB")), expected_size)) < 20
    no_bar = save_overlay_figure(tmp_path / "plain.png", image, quadrant_heatmap(), colorbar=False)
    with Image.open(no_bar) as png:
        assert png.size[0] < width * 100 / 80


def test_signal_overlay_draws_a_band_behind_every_channel(tmp_path):
    t = np.linspace(0, 6, 50)
    signal = np.stack([np.sin(t), np.cos(t)])
    attribution = torch.zeros(25)
    attribution[10] = 1.0
    figure = signal_overlay(signal, attribution, title="class 3", labels=["sin", "cos"])
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    assert len(ax.lines) == 2 and len(ax.images) == 1
    band = ax.images[0].get_array()
    assert band.shape == (1, 50) and int(np.argmax(band)) in (20, 21)
    sequence = signal_overlay(signal.T, attribution, channels_first=False, colorbar=False)
    assert len(sequence.axes) == 1 and len(sequence.axes[0].lines) == 2
    path = save_figure(figure, tmp_path / "signal.png")
    with Image.open(path) as png:
        assert png.size == tuple(int(inches * 100) for inches in figure.get_size_inches())
    buffer = io.BytesIO()
    sequence.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_apply_colormap_is_rgb_not_bgr():
    np.testing.assert_array_equal(apply_colormap(np.array([1.0]), "jet")[0], (127, 0, 0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda im: overlay(im, torch.zeros(4, 4), cmap="jett"), "closest: jet"),
        (lambda im: overlay(im, torch.zeros(4, 4), alpha=1.5), "alpha"),
        (lambda im: overlay(im[None, None], torch.zeros(4, 4)), "(H, W)"),
        (lambda im: overlay(im, torch.zeros(2, 4, 4)), "one target"),
        (lambda im: overlay(im, torch.zeros(4, 4), mean=[0.5, 0.5], std=[1, 1]), "3 channels"),
        (lambda im: overlay(im, torch.zeros(4, 4), mean=[0.5, 0.5, 0.5]), "both mean and std"),
        (lambda im: overlay(im, torch.zeros(4, 4), size=(0, 3)), "size"),
        (lambda im: signal_overlay(np.zeros(5), np.zeros((2, 5))), "(L,)"),
    ],
)
def test_bad_arguments_raise_a_clear_config_error(photo, call, message):
    with pytest.raises(XaikitConfigError) as info:
        call(photo)
    assert message in str(info.value)
