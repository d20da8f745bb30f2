"""``load_model(folder)`` on a training folder picks ``best``, never ``last``."""

from __future__ import annotations

import torch

import xaikit
from xaikit.zoo.checkpoint import resolve_checkpoint


def _model(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return xaikit.create_model(
            "simple_cnn", num_classes=3, in_channels=1, widths=(4, 8), input_size=8
        )


def test_a_folder_with_best_and_last_loads_best(tmp_path):
    """Guards against ``load_model(folder)`` preferring ``last`` over ``best``. The folder
    is laid out like a trainer's checkpoint folder (``best`` and ``last`` with different
    weights and epochs, plus ``last``'s training-state file, which is also a ``.safetensors``);
    loading the folder must give ``best``'s weights and card."""
    best, last = _model(1), _model(2)
    xaikit.save_model(best, tmp_path / "best", epoch=3)
    xaikit.save_model(last, tmp_path / "last", epoch=7)
    xaikit.save_model(last, tmp_path / "last.train", epoch=7)  # a decoy of the same suffix
    assert not torch.equal(best.head.fc.weight, last.head.fc.weight)

    assert resolve_checkpoint(tmp_path) == tmp_path / "best.safetensors"
    model, card = xaikit.load_model(tmp_path)
    assert card["epoch"] == 3
    assert card["source"]["path"] == str((tmp_path / "best.safetensors").resolve())
    loaded = model.state_dict()
    for key, value in best.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert not torch.equal(loaded["head.fc.weight"], last.state_dict()["head.fc.weight"])
