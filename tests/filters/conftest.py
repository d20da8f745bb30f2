"""Fixtures for the filter tests: one small trained CNN shared by the session."""

from __future__ import annotations

import pytest
from filters_toys import trained_striped_cnn


@pytest.fixture(scope="session")
def striped():
    """``(model, images, labels, normalization)``: a simple_cnn trained on striped images."""
    return trained_striped_cnn()
