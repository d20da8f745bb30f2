"""Fixtures of the report and demo tests: tiny reference models trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_models import train_tiny_models


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny ``shapes-multiclass``, ``shapes-multilabel`` and
    ``recall-lstm`` (one epoch each, curves beside them, like ``xaikit/models/``)."""
    return train_tiny_models(tmp_path_factory.mktemp("models"))
