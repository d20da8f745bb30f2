"""Shared test settings: deterministic, quiet, headless."""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Tiny models run fastest on one thread; two threads on two busy cores mostly contend.
torch.set_num_threads(1)
os.environ.setdefault("XAIKIT_QUIET", "1")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
