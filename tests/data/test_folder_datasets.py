"""A user's own data: idx:<dir> and imagefolder:<dir>."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from xaikit.data import load
from xaikit.errors import DataError


def _pair(root, write_idx, prefix, images, labels, gz=True):
    suffix = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)


def test_idx_folder_with_train_and_test_files(tmp_path, write_idx):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (12, 6, 5), dtype=np.uint8)
    test_x = rng.integers(0, 256, (4, 6, 5), dtype=np.uint8)
    _pair(tmp_path, write_idx, "train", train_x, np.arange(12, dtype=np.uint8) % 3)
    _pair(tmp_path, write_idx, "t10k", test_x, np.array([0, 1, 2, 3], dtype=np.uint8), gz=False)

    train = load(f"idx:{tmp_path}", "train")
    test = load(f"idx:{tmp_path}", "test")
    assert (len(train), len(test)) == (12, 4)
    x, y = train[2]
    assert x.shape == (1, 6, 5) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.from_numpy(train_x[2]).float() / 255)
    assert int(y) == 2 and torch.equal(test.targets, torch.arange(4))
    # Both splits know all four classes, though train only has three of them.
    assert train.classes == test.classes == ["0", "1", "2", "3"]


def test_idx_folder_with_one_pair_is_split_stratified(tmp_path, write_idx):
    labels = np.repeat(np.arange(4, dtype=np.uint8), [10, 20, 30, 40])
    images = np.arange(100, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    _pair(tmp_path, write_idx, "t10k", images, labels)

    train = load(f"idx:{tmp_path}", "train")
    test = load(f"idx:{tmp_path}", "test")
    assert torch.bincount(test.targets).tolist() == [2, 4, 6, 8]
    assert torch.bincount(train.targets).tolist() == [8, 16, 24, 32]
    ids = lambda d: set((d.inputs[:, 0, 0, 0]).tolist())  # noqa: E731 - the pixel is the id
    assert ids(train) | ids(test) == set(range(100)) and not ids(train) & ids(test)
    assert torch.equal(load(f"idx:{tmp_path}", "test").inputs, test.inputs)
    assert not torch.equal(load(f"idx:{tmp_path}", "test", seed=1).inputs, test.inputs)


def test_idx_folder_errors(tmp_path, write_idx):
    with pytest.raises(DataError, match="does not exist"):
        load(f"idx:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="no train files"):
        load(f"idx:{tmp_path}")
    _pair(tmp_path, write_idx, "train", np.zeros((3, 2, 2), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load(f"idx:{tmp_path}")


def _write_class_images(folder, colours):
    folder.mkdir(parents=True)
    for i, colour in enumerate(colours):
        Image.new("RGB", (10 + i, 8), colour).save(folder / f"{i}.png")


def test_image_folder_classes_are_sorted_subfolders(tmp_path):
    # Three images per class: the default 70/15/15 split gives each split one of each (the
    # folder used to be returned whole for every split, so "test" was the training images).
    _write_class_images(tmp_path / "dog", [(255, 0, 0), (250, 0, 0), (245, 0, 0)])
    _write_class_images(tmp_path / "cat", [(0, 0, 255)] * 3)
    (tmp_path / "cat" / "readme.txt").write_text("not an image")
    dataset = load(f"imagefolder:{tmp_path}", "test", size=16)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.targets.tolist() == [0, 1]
    x, y = dataset[0]
    assert x.shape == (3, 16, 16) and int(y) == 0
    torch.testing.assert_close(x[:, 5, 5], torch.tensor([0.0, 0.0, 1.0]))
    assert load(f"imagefolder:{tmp_path}", channels=1, size=4)[1][0].shape == (1, 4, 4)


def test_image_folder_with_split_subfolders(tmp_path):
    _write_class_images(tmp_path / "train" / "a", [(0, 0, 0)] * 3)
    _write_class_images(tmp_path / "train" / "b", [(9, 9, 9)] * 2)
    _write_class_images(tmp_path / "test" / "a", [(0, 0, 0)])
    _write_class_images(tmp_path / "test" / "b", [(9, 9, 9)])
    train = load(f"imagefolder:{tmp_path}", "train")
    val = load(f"imagefolder:{tmp_path}", "val")  # no val/: one of each class drawn from train/
    test = load(f"imagefolder:{tmp_path}", "test")
    assert (len(train), len(val), len(test)) == (3, 2, 2)
    assert train.classes == val.classes == test.classes == ["a", "b"]
    assert test.targets.tolist() == [0, 1] and not set(train.files) & set(val.files)


def test_image_folder_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        load(f"imagefolder:{tmp_path}")
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="class 'a' has no images"):
        load(f"imagefolder:{tmp_path}")
    for i in range(3):
        (tmp_path / "a" / f"broken{i}.png").write_text("text")
    dataset = load(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match=r"broken\d.png is not an image"):
        dataset[0]
