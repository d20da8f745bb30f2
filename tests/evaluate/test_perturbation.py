"""Deletion and insertion curves (RISE): hand-computed values, tie-breaking, batching."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from evaluate_toys import BrightPixelModel, SumModel, object_images

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.evaluate import (
    auc,
    deletion_curve,
    gaussian_blur,
    insertion_curve,
    pixel_ranks,
    random_maps,
)
from xaikit.explain.hooks import hook_count


def corner_image(channels: int = 1) -> torch.Tensor:
    """4x4 zeros with ones in the top-left 2x2 block: S = 4 (per channel), p0 = 5/6."""
    x = torch.zeros(1, channels, 4, 4)
    x[:, :, :2, :2] = 1.0
    return x


def test_deletion_of_the_object_first_matches_the_hand_computation():
    x = corner_image()
    result = deletion_curve(SumModel(), x, x[:, 0], target=0, steps=4)
    # Steps remove 0, 4, 8, 12, 16 pixels; the first 4 are the object: S = 4, 0, 0, 0, 0.
    expected = torch.tensor([[5 / 6, 1 / 2, 1 / 2, 1 / 2, 1 / 2]])
    torch.testing.assert_close(result.curve, expected)
    torch.testing.assert_close(result.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    # Trapezoid: 0.25 * ((5/6 + 1/2) / 2 + 3 * 1/2) = 13/24.
    torch.testing.assert_close(result.auc, torch.tensor([13 / 24]))
    assert result.info.higher_is_better is False


def test_equal_values_are_removed_in_row_major_order():
    x = corner_image()
    flat = torch.zeros(1, 4, 4)  # every pixel ties: rows are removed top to bottom
    result = deletion_curve(SumModel(), x, flat, target=0, steps=4)
    # Row 0 holds 2 object pixels (S = 2, p = 3/4), row 1 the other 2 (S = 0).
    expected = torch.tensor([[5 / 6, 3 / 4, 1 / 2, 1 / 2, 1 / 2]])
    torch.testing.assert_close(result.curve, expected)
    torch.testing.assert_close(result.auc, torch.tensor([29 / 48]))


def test_pixel_ranks_are_stable_for_ties():
    maps = torch.tensor([[[1.0, 3.0], [3.0, 2.0]]])
    assert pixel_ranks(maps).tolist() == [[3, 0, 1, 2]]


def test_steps_that_do_not_divide_the_pixels_use_the_real_fractions():
    x = corner_image()
    result = deletion_curve(SumModel(), x, torch.zeros(1, 4, 4), target=0, steps=3)
    # floor(k * 16 / 3) = 0, 5, 10, 16 pixels: row 0 and (1, 0) first -> S = 1, then S = 0.
    torch.testing.assert_close(result.fractions, torch.tensor([0.0, 5 / 16, 10 / 16, 1.0]))
    torch.testing.assert_close(result.curve, torch.tensor([[5 / 6, 2 / 3, 1 / 2, 1 / 2]]))
    area = (5 / 16) * (5 / 6 + 2 / 3) / 2 + (5 / 16) * (2 / 3 + 1 / 2) / 2 + (6 / 16) * (1 / 2)
    torch.testing.assert_close(result.auc, torch.tensor([area]))


def test_mean_baseline_replaces_pixels_with_the_image_mean():
    x = corner_image()
    result = deletion_curve(SumModel(), x, x[:, 0], target=0, steps=4, baseline="mean")
    # Removed pixels become 0.25: S = 4, 1, 2, 3, 4.
    expected = torch.tensor([[5 / 6, 2 / 3, 3 / 4, 4 / 5, 5 / 6]])
    torch.testing.assert_close(result.curve, expected)


def test_a_pixel_is_removed_in_every_channel_at_once():
    x = corner_image(channels=3)  # S = 12, p0 = 13/14
    result = deletion_curve(SumModel(), x, x[:, 0], target=0, steps=4)
    torch.testing.assert_close(result.curve, torch.tensor([[13 / 14, 1 / 2, 1 / 2, 1 / 2, 1 / 2]]))


def test_insertion_from_zeros_matches_the_hand_computation():
    x = corner_image()
    result = insertion_curve(SumModel(), x, x[:, 0], target=0, steps=4, start="zeros")
    expected = torch.tensor([[1 / 2, 5 / 6, 5 / 6, 5 / 6, 5 / 6]])
    torch.testing.assert_close(result.curve, expected)
    torch.testing.assert_close(result.auc, torch.tensor([19 / 24]))
    assert result.info.higher_is_better is True


def test_insertion_starts_at_the_blurred_image_and_ends_at_the_original():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = SumModel()
    result = insertion_curve(model, x, random_maps((2, 8, 8), seed=1), target=0, steps=4)
    s_blur = gaussian_blur(x).flatten(1).sum(1)
    s = x.flatten(1).sum(1)
    torch.testing.assert_close(result.curve[:, 0], (1 + s_blur) / (2 + s_blur))
    torch.testing.assert_close(result.curve[:, -1], (1 + s) / (2 + s))


def test_blur_matches_scipy_gaussian_filter_with_nearest_borders():
    x = torch.rand(2, 3, 13, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = gaussian_blur(x, sigma=5.0, kernel_size=11).numpy()
    reference = scipy.ndimage.gaussian_filter(
        x.numpy(), sigma=(0, 0, 5.0, 5.0), mode="nearest", truncate=1.0
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)
    flat = torch.full((1, 1, 4, 4), 0.3)
    torch.testing.assert_close(gaussian_blur(flat), flat)


def test_auc_is_the_trapezoid_over_zero_to_one():
    curve = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(auc(curve), torch.tensor([0.25, 0.75]))


def test_oracle_beats_random_which_beats_inverted():
    images, masks = object_images(16)
    model = BrightPixelModel()
    oracle = masks + 0.01 * random_maps(masks.shape, seed=2)  # the object first, else random
    inverted = 1.0 - oracle
    random = random_maps(masks.shape, seed=3)
    deletion = {
        name: deletion_curve(model, images, maps, target=0, steps=16).mean()
        for name, maps in (("oracle", oracle), ("random", random), ("inverted", inverted))
    }
    insertion = {
        name: insertion_curve(model, images, maps, target=0, steps=16).mean()
        for name, maps in (("oracle", oracle), ("random", random), ("inverted", inverted))
    }
    assert deletion["oracle"] < deletion["random"] < deletion["inverted"]
    assert insertion["oracle"] > insertion["random"] > insertion["inverted"]


def test_batched_equals_per_sample():
    torch.manual_seed(3)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=8).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = random_maps((5, 8, 8), seed=4)
    target = torch.tensor([0, 1, 2, 0, 1])
    for curve_fn in (deletion_curve, insertion_curve):
        batched = curve_fn(model, x, maps, target, steps=6, batch_size=7).curve
        single = torch.cat(
            [
                curve_fn(model, x[i : i + 1], maps[i : i + 1], target[i : i + 1], steps=6,
                         batch_size=1).curve
                for i in range(5)
            ]
        )  # fmt: skip
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_k_maps_per_input_equal_separate_calls():
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    maps = random_maps((3, 2, 6, 6), seed=5)
    target = torch.tensor([[0, 1], [1, 0], [0, 0]])
    both = deletion_curve(SumModel(), x, maps, target, steps=5)
    assert both.curve.shape == (3, 2, 6) and both.auc.shape == (3, 2)
    for k in range(2):
        alone = deletion_curve(SumModel(), x, maps[:, k], target[:, k], steps=5)
        torch.testing.assert_close(both.curve[:, k], alone.curve)


def test_small_maps_are_upsampled_to_the_input():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    small = random_maps((2, 4, 4), seed=6)
    big = torch.nn.functional.interpolate(small[:, None], size=(8, 8), mode="bilinear")[:, 0]
    a = deletion_curve(SumModel(), x, small, target=0, steps=8).curve
    b = deletion_curve(SumModel(), x, big, target=0, steps=8).curve
    torch.testing.assert_close(a, b)


def test_predicted_target_and_zeros_in_input_space_before_normalization():
    x = corner_image()
    norm = {"mean": [-1.0], "std": [1.0]}  # the model sees x + 1
    result = deletion_curve(SumModel(), x, x[:, 0], steps=1, normalization=norm)
    # Predicted class 0: S = 4 + 16 = 20 -> 21/22; deleted pixels are 0 in input space, so
    # the model sees 16 ones: S = 16 -> 17/18 (zeros after normalization would give 1/2).
    torch.testing.assert_close(result.curve, torch.tensor([[21 / 22, 17 / 18]]))


def test_multilabel_head_scores_the_label_sigmoid():
    torch.manual_seed(0)
    model = xaikit.create_model(
        "simple_cnn", num_classes=3, task="multilabel", widths=(4, 8), input_size=8
    ).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    result = deletion_curve(model, x, random_maps((2, 8, 8)), target=2, steps=2)
    with torch.no_grad():
        expected = model(x)[:, 2].sigmoid()
    torch.testing.assert_close(result.curve[:, 0], expected)


def test_model_state_is_borrowed_and_global_rng_untouched():
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=8)
    model.train()
    model.features.block1.conv.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 8, 8)
    rng = torch.get_rng_state()
    deletion_curve(model, x, random_maps((2, 8, 8)), steps=3)
    insertion_curve(model, x, random_maps((2, 8, 8)), steps=3)
    assert torch.equal(rng, torch.get_rng_state())
    assert model.training and hook_count(model) == 0
    assert not model.features.block1.conv.weight.requires_grad
    assert model.head.fc.weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_results_are_deterministic():
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    maps = torch.round(random_maps((3, 6, 6), seed=7) * 3)  # many ties
    a = deletion_curve(SumModel(), x, maps, target=0, steps=9)
    b = deletion_curve(SumModel(), x, maps, target=0, steps=9, batch_size=4)
    assert torch.equal(a.curve, b.curve)


@pytest.mark.parametrize(
    ("maps", "target", "message"),
    [
        (torch.zeros(2, 4, 4), 0, "N = 1"),
        (torch.full((1, 4, 4), float("nan")), 0, "NaN"),
        (torch.zeros(1, 4, 4), 2, r"\[0, 1\]"),
        (torch.zeros(1, 4, 4), "everything", "predicted"),
        (torch.zeros(1, 2, 4, 4), 0, r"\(N, K\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(maps, target, message):
    with pytest.raises(XaikitConfigError, match=message):
        deletion_curve(SumModel(), corner_image(), maps, target=target, steps=2)


def test_bad_options_raise_clear_errors():
    x = corner_image()
    with pytest.raises(XaikitConfigError, match="baseline"):
        deletion_curve(SumModel(), x, x[:, 0], target=0, baseline="noise")
    with pytest.raises(XaikitConfigError, match="steps"):
        deletion_curve(SumModel(), x, x[:, 0], target=0, steps=0)
    with pytest.raises(XaikitConfigError, match="batch_size"):
        deletion_curve(SumModel(), x, x[:, 0], target=0, batch_size=0)
