"""Fixtures of the explanation-quality tests: one thread, a tiny trained CNN."""

from __future__ import annotations

import pytest
import torch
from evaluate_toys import bar_data, train_bar_model
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and most reproducibly) on one thread; restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bar_model() -> nn.Module:
    """The trained model; tests must not modify it (each check works on copies)."""
    return train_bar_model()


@pytest.fixture(scope="session")
def bar_test():
    """32 held-out images, labels and masks."""
    return bar_data(32, seed=5)
