"""A resume explains a batch again only when it still has images to write: a batch whose
readable images are all done (its bad file is retried, and fails again) costs no call."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

import xaikit
import xaikit.explain.files as files


def test_a_batch_done_but_for_a_bad_file_is_not_explained_again(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")
    (folder / "2b.png").write_text("not an image")  # in the middle of the second batch
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    kwargs = {"input_shape": (3, 16, 16), "batch_size": 2, "figures": False, "quiet": True}
    first = files.explain_files(model.eval(), [folder], tmp_path / "out", **kwargs)
    assert (first.explained, len(first.errors)) == (5, 1)
    calls = []
    real = files.explain
    monkeypatch.setattr(
        files, "explain", lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k)
    )
    again = files.explain_files(model, [folder], tmp_path / "out", resume=True, **kwargs)
    assert calls == [1]  # the settings probe only: no batch was explained again
    assert (again.explained, again.skipped, len(again.errors)) == (0, 5, 1)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["counts"] == {"images": 5, "errors": 1}
