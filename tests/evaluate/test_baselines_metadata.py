"""Control maps (random, centred Gaussian) and the metrics' machine-readable metadata."""

from __future__ import annotations

import math

import pytest
import torch

from xaikit.errors import XaikitConfigError
from xaikit.evaluate import (
    METRICS,
    gaussian_explainer,
    gaussian_maps,
    metric_info,
    random_explainer,
    random_maps,
)


def test_random_maps_are_seeded_privately():
    rng = torch.get_rng_state()
    a = random_maps((2, 5, 5), seed=1)
    b = random_maps((2, 5, 5), seed=1)
    c = random_maps((2, 5, 5), seed=2)
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 1


def test_gaussian_map_values_by_hand():
    maps = gaussian_maps((1, 3, 5), sigma=0.5)
    # Centre (1, 2); sigma_y = 1.5 px, sigma_x = 2.5 px.
    assert maps[0, 1, 2] == 1.0
    torch.testing.assert_close(maps[0, 0, 2], torch.tensor(math.exp(-1 / (2 * 1.5**2))))
    torch.testing.assert_close(maps[0, 1, 0], torch.tensor(math.exp(-4 / (2 * 2.5**2))))
    torch.testing.assert_close(maps[0], maps[0].flip(0))  # symmetric about the centre
    torch.testing.assert_close(maps[0], maps[0].flip(1))


def test_baseline_explainers_ignore_model_and_target():
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    rand = random_explainer(seed=4)
    assert torch.equal(rand(None, x, torch.zeros(3)), rand(None, x, torch.ones(3)))
    assert rand(None, x, torch.zeros(3)).shape == (3, 6, 6)
    gauss = gaussian_explainer()(None, x, torch.zeros(3))
    assert torch.equal(gauss, gaussian_maps((3, 6, 6)))
    signal = gaussian_explainer()(None, torch.rand(2, 1, 9), torch.zeros(2))
    assert signal.shape == (2, 9) and signal[0].argmax() == 4


def test_every_metric_declares_direction_baseline_preprocessing_and_paper():
    for name, info in METRICS.items():
        assert info.name == name
        assert isinstance(info.higher_is_better, bool)
        assert info.baseline and info.preprocessing and info.paper and info.description
        as_dict = info.to_dict()
        assert as_dict["arrow"] == ("↑" if info.higher_is_better else "↓")
        assert as_dict["range"][0] < as_dict["range"][1]
    assert metric_info("deletion_auc").higher_is_better is False
    assert metric_info("insertion_auc").higher_is_better is True
    assert metric_info("pointing_game").higher_is_better is True
    assert metric_info("randomization_spearman").higher_is_better is False
    assert "Petsiuk" in metric_info("deletion_auc").paper
    assert "Adebayo" in metric_info("class_contrast").paper
    with pytest.raises(XaikitConfigError, match="unknown metric"):
        metric_info("accuracy")
