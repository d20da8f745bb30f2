"""Fixtures of the reliability suite: a tiny checkpoint and its model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reliability_files import save_tiny

import xaikit


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """Stem of the tiny 3-class CNN checkpoint (``m.safetensors`` + ``m.json``), 3x16x16."""
    return save_tiny(tmp_path_factory.mktemp("checkpoint") / "m")


@pytest.fixture
def model() -> torch.nn.Module:
    """A fresh tiny 3-class CNN for 3x16x16 inputs, in eval mode."""
    torch.manual_seed(0)
    return xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
