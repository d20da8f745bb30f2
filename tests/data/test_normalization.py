"""normalize / denormalize with a model card's per-channel mean and std."""

from __future__ import annotations

import pytest
import torch

from xaikit.data import check_normalization, denormalize, normalize
from xaikit.errors import DataError

CARD = {"mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 2.0]}


def test_normalize_per_channel_and_round_trip():
    x = torch.rand(2, 3, 4, 5)
    y = normalize(x, CARD)
    torch.testing.assert_close(y[:, 1], (x[:, 1] - 0.25) / 0.25)
    torch.testing.assert_close(denormalize(y, CARD), x)
    torch.testing.assert_close(normalize(x[0], CARD), y[0])


def test_channel_dim_for_sequences_and_single_value_broadcast():
    x = torch.rand(4, 7, 3)
    torch.testing.assert_close(normalize(x, CARD, channel_dim=-1)[..., 2], x[..., 2] / 2.0)
    torch.testing.assert_close(normalize(x, {"mean": [1.0], "std": [2.0]}), (x - 1.0) / 2.0)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"mean": [0.5]}, "must be a dict"),
        ({"mean": [0.5, 0.5], "std": [1.0]}, "equal length"),
        ({"mean": [], "std": []}, "non-empty"),
        ({"mean": [0.0], "std": [-1.0]}, "positive"),
    ],
)
def test_bad_normalization_raises_data_error(bad, message):
    with pytest.raises(DataError, match=message):
        check_normalization(bad)


def test_channel_count_must_match():
    with pytest.raises(DataError, match="2 channel values but the input has 3"):
        normalize(torch.rand(3, 2, 2), {"mean": [0, 0], "std": [1, 1]})
