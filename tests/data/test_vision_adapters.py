"""torchvision adapters: files read offline, missing files and failed downloads -> DataError."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from xaikit.data import load
from xaikit.errors import DataError


def _fake_mnist(root, write_idx, folder="MNIST"):
    """torchvision's MNIST layout: <root>/<folder>/raw/<name>-idx?-ubyte, all four files."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)}
    images["t10k"] = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for prefix, x in images.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(len(x), dtype=np.uint8))
    return images


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_style_files_are_read_offline(tmp_path, write_idx, name, folder):
    images = _fake_mnist(tmp_path, write_idx, folder)
    train = load(name, "train", root=tmp_path)
    test = load(name, "test", root=str(tmp_path))
    assert (len(train), len(test)) == (6, 3)
    x, y = test[1]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and int(y) == 1
    pixels = torch.from_numpy(images["t10k"][1]).float() / 255
    torch.testing.assert_close(test.raw_input(1)[0], pixels)
    mean, std = test.normalization["mean"][0], test.normalization["std"][0]
    torch.testing.assert_close(x[0], (pixels - mean) / std)  # items are model-ready
    assert len(train.classes) == 10 and train.normalization["mean"][0] > 0


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_files_say_to_pass_download_true(tmp_path, name):
    with pytest.raises(DataError, match="pass download=True") as info:
        load(name, root=tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("name, cls", [("mnist", "MNIST"), ("cifar10", "CIFAR10")])
def test_failed_download_is_a_plain_data_error(tmp_path, monkeypatch, name, cls):
    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(getattr(torchvision.datasets, cls), "download", offline)
    with pytest.raises(DataError, match=f"could not download {name} to .*no network"):
        load(name, root=tmp_path, download=True)


def test_download_option_must_be_a_bool(tmp_path):
    with pytest.raises(DataError, match="True or False"):
        load("mnist", root=tmp_path, download="yes")
