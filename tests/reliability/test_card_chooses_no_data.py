"""A model card never chooses data, paths or downloads (security report, finding 4).

``xaikit report`` without ``--data`` uses the card's data set only when it is built in and
offline; a card naming a folder (``imagefolder:~``), IDX files or a torchvision set needs
``--data``. Options in a card's recipe that choose files or the network (``root``,
``download``) are never passed on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import xaikit
from xaikit.cli import main
from xaikit.viz.report import dataset_options


def _checkpoint(folder: Path, data: dict) -> Path:
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=2, widths=(4, 8), input_size=16)
    return xaikit.save_model(
        model.eval(), folder / "model", input_shape=[3, 16, 16], class_names=["a", "b"], data=data
    )


def test_a_card_naming_a_folder_is_not_read_without_data(tmp_path, capsys):
    private = tmp_path / "home"
    for label in ("a", "b"):
        (private / label).mkdir(parents=True)
        for i in range(3):
            pixels = (np.random.default_rng(i).random((16, 16, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(private / label / f"secret{i}.png")
    checkpoint = _checkpoint(tmp_path / "run", {"name": f"imagefolder:{private}"})
    out = tmp_path / "report.html"
    assert main(["report", "--model", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a card only chooses a built-in offline one" in err[0]
    assert "--data" in err[0] and not out.exists()


def test_recipe_options_that_choose_files_or_the_network_are_dropped(tmp_path):
    card = {
        "input_shape": [1, 28, 28],
        "data": {"name": "mnist", "options": {"root": str(tmp_path), "download": True}},
    }
    options = dataset_options("mnist", card, 8)
    assert "root" not in options and "download" not in options
    assert set(options) <= {"n", "size", "length"}  # only what the model's shape implies
    # A built-in offline set keeps the recipe's own options.
    card = {"input_shape": [3, 16, 16], "data": {"name": "shapes", "options": {"seed": 5}}}
    assert dataset_options("shapes", card, 8)["seed"] == 5
