"""Pointing game (Zhang et al., 2018) and energy pointing game (Score-CAM): hand-computed."""

from __future__ import annotations

import math

import pytest
import torch
from evaluate_toys import object_images

from xaikit.errors import XaikitConfigError
from xaikit.evaluate import energy_pointing_game, gaussian_maps, pointing_game, random_maps


def peak_map() -> torch.Tensor:
    """4x4 map whose unique maximum (9) is at row 1, column 2."""
    return torch.tensor(
        [[0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 9.0, 1.0], [0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )


def mask_at(*pixels: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(4, 4)
    for y, x in pixels:
        mask[y, x] = 1.0
    return mask


def test_hit_miss_and_tolerance_by_hand():
    maps = peak_map().expand(4, 4, 4)
    masks = torch.stack(
        [
            mask_at((1, 2), (0, 0)),  # contains the peak: hit
            mask_at((2, 2)),  # 1 px below the peak: miss at r=0, hit at r=1
            mask_at((3, 3)),  # sqrt(2^2 + 1^2) = 2.24 px away: hit only from r=3
            mask_at((0, 0), (3, 0)),  # far away
        ]
    )
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=1).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=2).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=3).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_a_constant_map_points_at_the_top_left_corner():
    flat = torch.zeros(2, 4, 4)
    masks = torch.stack([mask_at((0, 0)), mask_at((1, 1))])
    assert pointing_game(flat, masks).tolist() == [1.0, 0.0]


def test_empty_masks_score_nan_and_multilabel_is_scored_per_label():
    maps = torch.stack([peak_map(), peak_map().T]).unsqueeze(0)  # (1, K=2, 4, 4)
    masks = torch.stack([mask_at((1, 2)), torch.zeros(4, 4)]).unsqueeze(0)
    hits = pointing_game(maps, masks)
    assert hits.shape == (1, 2)
    assert hits[0, 0] == 1.0 and math.isnan(hits[0, 1])
    energy = energy_pointing_game(maps, masks)
    assert energy.shape == (1, 2) and math.isnan(energy[0, 1])
    # Label 1's map is the transpose: its peak (2, 1) lies in its own mask.
    masks[0, 1] = mask_at((2, 1))
    assert pointing_game(maps, masks).tolist() == [[1.0, 1.0]]


def test_energy_fraction_by_hand():
    heat = torch.arange(16.0).reshape(1, 4, 4)  # total 120
    mask = mask_at((0, 0), (0, 1), (1, 0), (1, 1)).unsqueeze(0)  # 0 + 1 + 4 + 5 = 10
    torch.testing.assert_close(energy_pointing_game(heat, mask), torch.tensor([10 / 120]))
    full = torch.ones(1, 4, 4)
    torch.testing.assert_close(energy_pointing_game(heat, full), torch.tensor([1.0]))
    torch.testing.assert_close(energy_pointing_game(torch.zeros(1, 4, 4), mask), torch.zeros(1))


def test_small_maps_are_upsampled_to_the_mask():
    small = torch.zeros(1, 2, 2)
    small[0, 1, 1] = 1.0  # bottom-right quadrant
    mask = torch.zeros(1, 8, 8)
    mask[0, 6:, 6:] = 1.0
    assert pointing_game(small, mask).tolist() == [1.0]


def test_oracle_beats_random_which_beats_inverted():
    _, masks = object_images(32, size=12)
    oracle = 0.99 * masks + 0.01 * random_maps(masks.shape, seed=1)
    inverted = 1.0 - oracle
    random = random_maps(masks.shape, seed=2)
    hits = {name: pointing_game(m, masks).nanmean() for name, m in
            (("oracle", oracle), ("random", random), ("inverted", inverted))}  # fmt: skip
    energy = {name: energy_pointing_game(m, masks).nanmean() for name, m in
              (("oracle", oracle), ("random", random), ("inverted", inverted))}  # fmt: skip
    assert hits["oracle"] == 1.0 and hits["inverted"] == 0.0
    assert hits["oracle"] > hits["random"] > hits["inverted"]
    assert energy["oracle"] > energy["random"] > energy["inverted"]
    # A uniform random map puts about the object's area fraction (16/144) inside it.
    assert abs(float(energy["random"]) - 16 / 144) < 0.03
    centred = gaussian_maps(masks.shape)
    # Its maximum ties over the four central pixels; the first in row-major order, (5, 5),
    # counts, so a centred map hits exactly the objects that cover pixel (5, 5).
    covers_centre = masks[:, 5, 5]
    assert 0 < int(covers_centre.sum()) < 32  # some hits and some misses
    assert pointing_game(centred, masks).tolist() == covers_centre.tolist()
    assert float(pointing_game(centred, masks).nanmean()) == float(covers_centre.mean())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(XaikitConfigError, match="non-negative"):
        energy_pointing_game(-torch.ones(1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(XaikitConfigError, match="same leading"):
        pointing_game(torch.ones(2, 4, 4), torch.ones(3, 4, 4))
    with pytest.raises(XaikitConfigError, match="NaN"):
        pointing_game(torch.full((1, 4, 4), float("nan")), torch.ones(1, 4, 4))
    with pytest.raises(XaikitConfigError, match="tolerance"):
        pointing_game(torch.ones(1, 4, 4), torch.ones(1, 4, 4), tolerance=-1)


def test_rounding_noise_below_zero_is_accepted():
    heat = peak_map().unsqueeze(0) / 9.0
    heat[0, 3, 3] = -1e-9  # what min-max normalization can leave behind
    energy = energy_pointing_game(heat, mask_at((1, 2)).unsqueeze(0))
    torch.testing.assert_close(energy, torch.tensor([1.0 / (20.0 / 9.0)]))
