"""``xaikit.data.sampling``: class-balanced, seeded subsets for reports and evaluations."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import Subset

from xaikit.data.sampling import balanced_indices, balanced_order, dataset_targets

SKEWED = [0] * 90 + [1] * 10


def _classes(indices: list[int], targets: list[int]) -> Counter:
    return Counter(targets[i] for i in indices)


def test_skewed_targets_give_equal_shares():
    chosen = balanced_indices(SKEWED, 10, seed=0)
    assert len(chosen) == len(set(chosen)) == 10
    assert _classes(chosen, SKEWED) == {0: 5, 1: 5}
    assert chosen == sorted(chosen)


def test_same_seed_same_indices_other_seed_other_indices():
    assert balanced_indices(SKEWED, 10, seed=3) == balanced_indices(SKEWED, 10, seed=3)
    draws = {tuple(balanced_indices(SKEWED, 10, seed=s)) for s in range(5)}
    assert len(draws) > 1
    for seed in range(5):
        assert _classes(balanced_indices(SKEWED, 10, seed=seed), SKEWED) == {0: 5, 1: 5}


def test_small_class_gives_all_it_has_and_others_fill_in():
    chosen = balanced_indices(SKEWED, 30, seed=1)
    assert _classes(chosen, SKEWED) == {0: 20, 1: 10}


def test_n_at_least_the_length_gives_every_index():
    assert balanced_indices(SKEWED, 100, seed=0) == list(range(100))
    assert balanced_indices(SKEWED, 500, seed=0) == list(range(100))
    assert balanced_indices(SKEWED, 0, seed=0) == []
    with pytest.raises(ValueError):
        balanced_indices(SKEWED, -1)


def test_order_prefixes_are_balanced_and_tensors_are_accepted():
    targets = torch.tensor([0] * 12 + [1] * 12 + [2] * 3)
    order = balanced_order(targets, seed=0)
    assert sorted(order) == list(range(27))
    assert Counter(targets[order[:9]].tolist()) == {0: 3, 1: 3, 2: 3}
    assert balanced_indices(targets, 9, seed=0) == sorted(order[:9])


def test_multilabel_rows_are_classes_of_their_own():
    rows = torch.tensor([[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 2)
    chosen = balanced_indices(rows, 4, seed=0)
    assert Counter(tuple(rows[i].tolist()) for i in chosen) == {(1.0, 0.0): 2, (0.0, 1.0): 2}


def test_dataset_targets_looks_through_subsets():
    class Data(torch.utils.data.Dataset):
        targets = torch.arange(10)

        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int):
            return torch.zeros(1), self.targets[i]

    inner = Subset(Data(), [9, 8, 7, 6, 5])
    assert dataset_targets(Data()) == list(range(10))
    assert dataset_targets(Subset(inner, [0, 2])) == [9, 7]
    assert dataset_targets(object()) is None
