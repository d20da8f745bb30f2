"""The pointing game on non-square maps: every other fixture is square, where a height/width
swap in the peak's coordinates (``peak // h``, ``m, w, h = maps.shape``, a transposed
resize) goes unnoticed. Maps and masks here are 8 rows by 12 columns."""

from __future__ import annotations

import math

import torch

from xaikit.evaluate import energy_pointing_game, pointing_game

H, W = 8, 12


def spike(y: int, x: int, h: int = H, w: int = W) -> torch.Tensor:
    """An ``(h, w)`` map that is 0 except for its unique maximum 1 at row ``y``, column ``x``."""
    heat = torch.zeros(h, w)
    heat[y, x] = 1.0
    return heat


def mask_at(*pixels: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(H, W)
    for y, x in pixels:
        mask[y, x] = 1.0
    return mask


def test_the_peak_of_a_non_square_map_is_read_as_row_and_column():
    """Guards against the pointing game swapping height and width. The peak at row 1,
    column 10 is flat index 22; read with the height as the row length it would be row 2,
    column 6. A mask on the true peak is a hit, a mask on the swapped pixel a miss; peaks in
    the last columns (10, 11) exist only if the width is 12."""
    maps = torch.stack([spike(1, 10), spike(1, 10), spike(6, 2), spike(7, 11), spike(0, 9)])
    masks = torch.stack(
        [
            mask_at((1, 10)),  # the peak itself: hit
            mask_at((2, 6)),  # where 22 // 8, 22 % 8 points: miss
            mask_at((6, 2)),  # hit
            mask_at((7, 11)),  # the bottom-right corner, flat index 95: hit
            mask_at((1, 1)),  # 9 = 1 * 8 + 1 in a swapped reading: miss
        ]
    )
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_the_tolerance_disk_is_bounded_by_the_true_height_and_width():
    """Guards against the swap in the neighbourhood test: with a 1-pixel tolerance a peak at
    row 1, column 11 (the right edge) reaches the pixel below it, (2, 11), and the one to its
    left, but not (2, 0) (what a row length of 8 would wrap to) nor anything two rows away."""
    maps = spike(1, 11).expand(4, H, W)
    masks = torch.stack([mask_at((2, 11)), mask_at((1, 10)), mask_at((2, 0)), mask_at((3, 11))])
    assert pointing_game(maps, masks).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=1).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=2).tolist() == [1.0, 1.0, 0.0, 1.0]


def test_a_low_resolution_non_square_map_is_resized_to_the_mask_as_rows_by_columns():
    """Guards against a transposed resize of smaller maps: a 4x6 map with its maximum in the
    top-right cell, upsampled bilinearly (align_corners=False) to 8x12, has its unique
    maximum at row 0, column 11."""
    low = spike(0, 5, h=4, w=6)[None]
    assert pointing_game(low, mask_at((0, 11))[None]).tolist() == [1.0]
    assert pointing_game(low, mask_at((0, 10), (1, 11))[None]).tolist() == [0.0]
    assert pointing_game(low, mask_at((0, 5))[None]).tolist() == [0.0]


def test_multilabel_non_square_maps_are_scored_per_label():
    """``(N, K, H, W)`` maps with non-square masks: one hit, one miss at the swapped pixel,
    one NaN for an absent label; the energy game puts all of a spike's energy in its mask."""
    maps = torch.stack([spike(1, 10), spike(1, 10), spike(5, 3)])[None]  # (1, 3, 8, 12)
    masks = torch.stack([mask_at((1, 10)), mask_at((2, 6)), torch.zeros(H, W)])[None]
    hits = pointing_game(maps, masks)
    assert hits.shape == (1, 3)
    assert hits[0, :2].tolist() == [1.0, 0.0] and math.isnan(hits[0, 2])
    energy = energy_pointing_game(maps, masks)
    assert energy[0, :2].tolist() == [1.0, 0.0] and math.isnan(energy[0, 2])
