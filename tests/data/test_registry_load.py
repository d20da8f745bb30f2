"""load() and list_datasets(): names, splits, options, and the attributes every data set has."""

from __future__ import annotations

import pytest
import torch

from xaikit.data import XaiDataset, dataset_info, list_datasets, load
from xaikit.errors import DataError

OFFLINE = {
    "shapes": {"n": 12},
    "shapes-multilabel": {"n": 12},
    "digits": {},
    "mnist1d": {},
    "recall": {"n": 12},
}


def test_list_datasets_names_every_data_set_and_the_folder_patterns():
    names = list_datasets()
    expected = [*OFFLINE, "mnist", "fashion-mnist", "cifar10", "imagefolder:<dir>", "idx:<dir>"]
    assert sorted(names) == sorted(expected)
    assert dataset_info("idx:/somewhere").name == "idx:<dir>"


@pytest.mark.parametrize("name", list(OFFLINE))
def test_every_offline_data_set_describes_itself(name):
    dataset = load(name, "test", **OFFLINE[name])
    assert isinstance(dataset, XaiDataset)
    assert dataset.task in ("multiclass", "multilabel")
    assert dataset.input_kind in ("image", "signal", "sequence")
    assert dataset.normalization is None or set(dataset.normalization) == {"mean", "std"}
    assert all(isinstance(c, str) for c in dataset.classes) and len(dataset.classes) >= 2
    item = dataset[len(dataset) - 1]
    assert len(item) == (3 if dataset.has_ground_truth else 2)
    x, y = item[0], item[1]
    assert x.dtype == torch.float32
    assert x.dim() == {"image": 3, "signal": 2, "sequence": 2}[dataset.input_kind]
    if dataset.task == "multiclass":
        assert y.dtype == torch.int64 and y.shape == () and 0 <= int(y) < dataset.num_classes
    else:
        assert y.dtype == torch.float32 and y.shape == (dataset.num_classes,)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown data set 'shpes'; known: shapes, ") as info:
        load("shpes")
    assert "imagefolder:<dir>" in str(info.value)


def test_unknown_split_and_option_raise_data_error():
    with pytest.raises(DataError, match="unknown split 'validation'"):
        load("shapes", "validation", n=4)
    with pytest.raises(DataError, match="has no option colour; its options are: n, size, seed"):
        load("shapes", n=4, colour="red")
    with pytest.raises(DataError, match="needs a folder after the colon"):
        load("idx:")


def test_integer_options_may_be_given_as_text():
    assert len(load("recall", n="8", length="20")) == 8
    with pytest.raises(DataError, match="must be an integer"):
        load("recall", n="eight")
