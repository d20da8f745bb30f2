"""Image parametrizations and random transforms: exact geometry, per-element randomness."""

from __future__ import annotations

import torch

from xaikit.filters.param import COLOR_DECORRELATION, FourierImage, PixelImage, fft_frequencies
from xaikit.filters.transforms import (
    FILL,
    Jitter,
    Rotate,
    Scale,
    apply_transforms,
    n_random,
    standard_transforms,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_centre_draws_are_the_identity():
    images = torch.rand(2, 3, 8, 8)
    transforms = [Jitter(2), Scale(0.8, 1.2), Rotate(15), Jitter(1)]
    u = torch.full((2, n_random(transforms)), 0.5)
    torch.testing.assert_close(apply_transforms(images, transforms, u), images)


def test_jitter_shifts_whole_pixels_and_fills_with_grey():
    images = torch.rand(2, 1, 6, 6)
    # u -> floor(u * 5) - 2: element 0 shifts (x, y) by (+1, 0), element 1 by (-2, +2)
    u = torch.tensor([[0.7, 0.5], [0.0, 0.99]])
    moved = apply_transforms(images, [Jitter(2)], u)
    expect = torch.full_like(images, FILL)
    # the output at x samples the input at x + shift
    expect[0, :, :, :5] = images[0, :, :, 1:]
    expect[1, :, :4, 2:] = images[1, :, 2:, :4]
    torch.testing.assert_close(moved, expect)


def test_rotation_by_a_quarter_turn_equals_rot90():
    images = torch.rand(1, 3, 7, 7)
    turned = apply_transforms(images, [Rotate(90)], torch.ones(1, 1))
    torch.testing.assert_close(turned, torch.rot90(images, k=1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_scaling_by_two_samples_the_centre_at_half_steps():
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4) / 16  # value (4 y + x) / 16, linear
    zoomed = apply_transforms(ramp, [Scale(2, 2)], torch.zeros(1, 1))
    # output pixel i samples input coordinate 0.75 + 0.5 i (pixel centres, zoom about the
    # middle); bilinear interpolation of a linear ramp is exact there
    coords = 0.75 + 0.5 * torch.arange(4.0)
    expect = (4 * coords[:, None] + coords[None, :]) / 16
    torch.testing.assert_close(zoomed[0, 0], expect)


def test_signals_only_move_along_their_length():
    signal = torch.rand(1, 2, 1, 12)
    transforms = [Jitter(2), Rotate(30), Scale(1, 1)]
    u = torch.tensor([[0.95, 0.0, 1.0, 0.3]])  # shift +2 in x; y and the rotation are ignored
    moved = apply_transforms(signal, transforms, u)
    expect = torch.full_like(signal, FILL)
    expect[..., :10] = signal[..., 2:]
    torch.testing.assert_close(moved, expect)


def test_standard_transforms_scale_with_the_image():
    small, large = standard_transforms(16), standard_transforms(224)
    assert [t.pixels for t in (small[0], small[-1])] == [1, 1]
    assert [t.pixels for t in (large[0], large[-1])] == [14, 7]


def test_each_element_starts_from_its_own_generator():
    pair = FourierImage([_gen(1), _gen(2)], 3, 10, 10)
    alone = FourierImage([_gen(2)], 3, 10, 10)
    torch.testing.assert_close(pair.spectrum[1], alone.spectrum[0])
    torch.testing.assert_close(pair()[1], alone()[0])
    pixels = PixelImage([_gen(1), _gen(2)], 1, 5, 7)
    assert pixels().shape == (2, 1, 5, 7)


def test_fourier_image_is_the_scaled_inverse_fft_through_the_colour_matrix():
    image = FourierImage([_gen(0)], 3, 8, 6, decorrelate=True)
    freqs = fft_frequencies(8, 6)
    assert freqs.shape == (8, 4) and freqs[0, 0] == 0
    scale = 1 / freqs.clamp(min=1 / 8)
    spectrum = torch.complex(image.spectrum[..., 0], image.spectrum[..., 1]) * scale
    raw = torch.fft.irfft2(spectrum, s=(8, 6), norm="ortho") / 4
    expect = torch.sigmoid(torch.einsum("bchw,dc->bdhw", raw, COLOR_DECORRELATION))
    torch.testing.assert_close(image(), expect)
    torch.testing.assert_close(COLOR_DECORRELATION.norm(dim=0).max(), torch.tensor(1.0))
    assert ((image() > 0) & (image() < 1)).all()
