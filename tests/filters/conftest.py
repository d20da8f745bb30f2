"""Fixtures for the filter tests: one small trained CNN shared by the session."""

from __future__ import annotations

import pytest
from filters_toys import trained_striped_cnn


@pytest.fixture(scope="session")
def striped():
    """``(model, images, labels, normalization)``: a simple_cnn trained on striped images."""
    return trained_striped_cnn()


@pytest.fixture
def striped_cli(tmp_path, monkeypatch, striped):
    """``setup(n) -> (xaikit.cli, checkpoint)``: the striped model saved as a checkpoint and
    its first ``n`` images served as the data set ``striped`` to ``xaikit filters``."""
    from xaikit import cli
    from xaikit.cli import filters as filters_command
    from xaikit.data import TensorDataset
    from xaikit.zoo.checkpoint import save_model

    model, images, labels, norm = striped

    def setup(n: int):
        checkpoint = save_model(
            model, tmp_path / "model", input_shape=[3, 16, 16], normalization=norm
        )
        dataset = TensorDataset(
            images[:n],
            labels[:n],
            name="striped",
            split="test",
            classes=["h", "v", "d"],
            task="multiclass",
            input_kind="image",
        )
        monkeypatch.setattr(filters_command, "load", lambda name, split="train", **o: dataset)
        monkeypatch.setattr(cli, "COMMAND_MODULES", ["filters"])
        return cli, checkpoint

    return setup
