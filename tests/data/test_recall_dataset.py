"""The long-range recall task: the marker, its position as ground truth, the noise."""

from __future__ import annotations

import math

import pytest
import torch

from xaikit.data import load
from xaikit.errors import DataError


@pytest.fixture(scope="module")
def recall():
    return load("recall", "train", n=400, seed=0)


def test_items_are_sequence_label_and_one_hot_marker(recall):
    x, label, marker = recall[0]
    assert x.shape == (100, 5) and x.dtype == torch.float32
    assert label.dtype == torch.int64 and label.shape == ()
    assert marker.shape == (100,) and marker.dtype == torch.float32
    assert marker.sum() == 1.0 and int(marker.argmax()) == int(recall.positions[0])
    assert recall.classes == ["marker 0", "marker 1", "marker 2", "marker 3"]
    assert (recall.task, recall.input_kind) == ("multiclass", "sequence")


def test_marker_sits_in_the_first_tenth_on_the_label_channel(recall):
    x, labels, positions = recall.inputs, recall.targets, recall.positions
    assert positions.max() < 10 and positions.min() == 0 and len(positions.unique()) == 10
    rows = torch.arange(len(recall))
    assert torch.all(x[rows, positions, labels] == 1.0)
    # The marker is the one value on a class channel far above the noise.
    class_channels = x[..., :4].clone()
    class_channels[rows, positions, labels] = 0.0
    assert class_channels.abs().max() < 0.7
    assert 0.09 < float(class_channels.std()) < 0.11
    assert 0.9 < float(x[..., 4].std()) < 1.1
    assert torch.equal(x[rows, positions, :4].argmax(1), labels)


def test_labels_are_balanced_and_options_apply():
    data = load("recall", "test", n=300, length=40, num_classes=3, seed=5)
    assert torch.bincount(data.targets).tolist() == [100, 100, 100]
    assert data[0][0].shape == (40, 4)
    assert data.positions.max() < math.ceil(0.1 * 40)


def test_deterministic_in_seed_and_split():
    a = load("recall", "train", n=20, seed=1)
    assert torch.equal(a.inputs, load("recall", "train", n=20, seed=1).inputs)
    assert not torch.equal(a.inputs, load("recall", "train", n=20, seed=2).inputs)
    assert not torch.equal(a.inputs, load("recall", "test", n=20, seed=1).inputs)


@pytest.mark.parametrize("options", [{"length": 5}, {"num_classes": 1}, {"n": 0}])
def test_bad_options_raise_data_error(options):
    with pytest.raises(DataError):
        load("recall", **options)
