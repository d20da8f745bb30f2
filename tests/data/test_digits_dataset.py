"""digits: scikit-learn's real 8x8 digits, a fixed stratified split, recorded normalization."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from xaikit.data import load


def test_split_sizes_values_and_stratification():
    train, test = load("digits", "train"), load("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert train.inputs.min() == 0.0 and train.inputs.max() == 1.0
    total = np.bincount(load_digits().target)
    assert np.all(np.abs(torch.bincount(test.targets).numpy() - 0.2 * total) <= 1)
    assert train.classes == [str(d) for d in range(10)]


def test_images_are_sklearns_pixels_divided_by_16_in_sklearns_stratified_split():
    bunch = load_digits()
    rows = np.arange(len(bunch.target))
    train_rows, test_rows = train_test_split(
        rows, test_size=0.2, stratify=bunch.target, random_state=0
    )
    for split, chosen in (("train", np.sort(train_rows)), ("test", np.sort(test_rows))):
        dataset = load("digits", split)
        expected = torch.from_numpy(bunch.images[chosen] / 16.0).float()[:, None]
        assert torch.equal(dataset.inputs, expected)
        assert torch.equal(dataset.targets, torch.from_numpy(bunch.target[chosen]))


def test_normalization_is_the_training_pixels_statistics():
    train, test = load("digits", "train"), load("digits", "test")
    assert train.normalization == test.normalization
    mean, std = train.normalization["mean"][0], train.normalization["std"][0]
    assert abs(mean - float(train.inputs.mean())) < 1e-5
    assert abs(std - float(train.inputs.std(unbiased=False))) < 1e-4


def test_seed_changes_the_split_deterministically():
    a, b = load("digits", "test", seed=1), load("digits", "test", seed=1)
    assert torch.equal(a.inputs, b.inputs)
    assert not torch.equal(a.inputs, load("digits", "test").inputs)


def test_items_are_normalized_and_raw_inputs_are_pixels():
    train = load("digits", "train")
    mean, std = train.normalization["mean"][0], train.normalization["std"][0]
    x, _ = train[5]
    torch.testing.assert_close(x, (train.inputs[5] - mean) / std)
    torch.testing.assert_close(train.raw_input(5), train.inputs[5])
    stacked = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(float(stacked.mean())) < 1e-4 and abs(float(stacked.std(unbiased=False)) - 1) < 1e-3
