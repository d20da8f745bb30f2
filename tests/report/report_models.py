"""Tiny stand-ins for the shipped reference models, trained the way the real ones are
(``xaikit train``), in seconds: 32x32 shapes CNNs and a short-sequence recall LSTM.

They are laid out like ``xaikit/models/``: ``<name>.safetensors``, ``<name>.json`` and
``<name>.curves.png`` side by side, so ``XAIKIT_MODELS_DIR`` / ``--models-dir`` can point at
them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from xaikit.cli import main

# name -> (data, architecture, data options)
TINY_MODELS = {
    "shapes-multiclass": ("shapes", "simple_cnn", ["n=96", "size=32"]),
    "shapes-multilabel": ("shapes-multilabel", "simple_cnn", ["n=96", "size=32"]),
    "recall-lstm": ("recall", "lstm", ["n=64", "length=20"]),
}


def train_tiny_models(folder: Path) -> Path:
    """Train every model of :data:`TINY_MODELS` for one epoch into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, arch, options) in TINY_MODELS.items():
        run = folder / f"run-{name}"
        argv = ["train", "--data", data, "--model", arch, "--epochs", "1", "--out", str(run)]
        argv += [flag for option in options for flag in ("--data-option", option)]
        argv += ["--optimizer", "adam", "--lr", "0.003", "--device", "cpu", "--quiet"]
        assert main(argv) == 0, f"training the tiny {name} failed"
        for source, suffix in (
            ("model.safetensors", ".safetensors"),
            ("model.json", ".json"),
            ("curves.png", ".curves.png"),
        ):
            shutil.copyfile(run / source, folder / f"{name}{suffix}")
    return folder
