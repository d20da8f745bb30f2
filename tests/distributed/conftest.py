"""Fixtures of the distributed tests (helpers in ``torchrun_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torchrun_helpers import make_images


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("distributed") / "imgs")
