"""``imagefolder:<dir>``: a stratified, seeded train / val / test split, or the split folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from xaikit.data import load
from xaikit.data.folders import parse_fractions, split_image_folder
from xaikit.data.registry import dataset_splits
from xaikit.errors import DataError


def _folder(root: Path, counts: dict[str, int], grey: dict[str, int] | None = None) -> Path:
    """``root/<class>/<i>.png``: ``counts[class]`` tiny images, each class one grey level."""
    for k, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        level = (grey or {}).get(name, 40 + 60 * k)
        for i in range(count):
            Image.new("RGB", (6, 6), (level, level, level)).save(root / name / f"{i:03d}.png")
    return root


def _names(dataset) -> set[str]:
    return {p.relative_to(dataset.layout.root).as_posix() for p in dataset.files}


def test_the_default_split_is_70_15_15_per_class_disjoint_and_complete(tmp_path):
    root = _folder(tmp_path, {"cat": 20, "dog": 40})
    splits = {s: load(f"imagefolder:{root}", s, size=4) for s in ("train", "val", "test")}
    counts = {s: torch.bincount(d.targets, minlength=2).tolist() for s, d in splits.items()}
    assert counts == {"train": [14, 28], "val": [3, 6], "test": [3, 6]}
    names = {s: _names(d) for s, d in splits.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    every = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert names["train"] | names["val"] | names["test"] == every
    assert all(d.classes == ["cat", "dog"] for d in splits.values())
    assert dataset_splits(f"imagefolder:{root}") == ("train", "val", "test")
    assert dataset_splits("shapes") == ("train", "test")


def test_the_split_is_deterministic_in_the_seed(tmp_path):
    root = _folder(tmp_path, {"a": 30, "b": 30})
    first = split_image_folder(root, seed=4).manifest()
    assert split_image_folder(root, seed=4).manifest() == first
    other = split_image_folder(root, seed=5).manifest()
    assert other["files"]["test"] != first["files"]["test"]
    assert other["counts"] == first["counts"]
    assert set(load(f"imagefolder:{root}", "test", seed=4).files) == {
        root / p for group in first["files"]["test"].values() for p in group
    }
    # Adding an image moves no other: each file's place depends on its own name only.
    (root / "a" / "zzz.png").write_bytes((root / "a" / "000.png").read_bytes())
    grown = split_image_folder(root, seed=4).manifest()["files"]
    for split, groups in first["files"].items():
        moved = set(groups["a"]) - set(grown[split]["a"])
        assert len(moved) <= 1, split


def test_fractions_change_the_split(tmp_path):
    root = _folder(tmp_path, {"a": 10, "b": 10})
    test = load(f"imagefolder:{root}", "test", fractions="0.6,0.2,0.2")
    assert torch.bincount(test.targets).tolist() == [2, 2]
    val = load(f"imagefolder:{root}", "val", fractions=(0.8, 0.0, 0.2))
    assert len(val) == 0  # no validation split asked for
    assert parse_fractions([0.5, 0.25, 0.25]) == (0.5, 0.25, 0.25)
    for bad in ("0.5,0.5", "0.7,0.2,0.2", "0.9,0.1,0", "a,b,c", "-0.1,0.6,0.5"):
        with pytest.raises(DataError, match="fractions"):
            load(f"imagefolder:{root}", "train", fractions=bad)


def test_too_few_images_and_empty_classes_name_the_class_and_counts(tmp_path):
    root = _folder(tmp_path, {"big": 9, "small": 2})
    with pytest.raises(DataError) as err:
        load(f"imagefolder:{root}")
    message = str(err.value)
    assert "'small' has 2 images" in message and "big 9, small 2" in message
    assert "needs at least 3 images per class" in message and "\n" not in message
    (root / "none").mkdir()
    with pytest.raises(DataError, match="'none' has no images"):
        load(f"imagefolder:{root}", "test")
    # Without a validation split, two images are enough (one to train, one to test).
    (root / "none").rmdir()
    assert len(load(f"imagefolder:{root}", "test", fractions="0.8,0,0.2")) == 3


def test_split_subfolders_are_used_as_given(tmp_path):
    for split, n in (("train", 6), ("valid", 2), ("test", 3)):
        _folder(tmp_path / split, {"cat": n, "dog": n})
    loaded = {s: load(f"imagefolder:{tmp_path}", s) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in loaded.items()} == {"train": 12, "val": 4, "test": 6}
    assert all(p.parts[-3] == "valid" for p in loaded["val"].files)
    assert loaded["train"].layout.layout == "folders" and loaded["train"].layout.carved == ()


def test_a_missing_val_folder_is_drawn_from_train(tmp_path):
    _folder(tmp_path / "train", {"cat": 17, "dog": 17})
    _folder(tmp_path / "test", {"cat": 2, "dog": 2})
    train = load(f"imagefolder:{tmp_path}", "train")
    val = load(f"imagefolder:{tmp_path}", "val")
    # 15 / (70 + 15) of train/ goes to val: round(17 * 0.176) = 3 per class.
    assert torch.bincount(val.targets).tolist() == [3, 3] and len(train) == 28
    assert all(p.parts[-3] == "train" for p in val.files) and not set(val.files) & set(train.files)
    assert train.layout.carved == ("val",)


def test_split_folder_errors_name_the_class(tmp_path):
    _folder(tmp_path / "train", {"cat": 4, "dog": 4})
    _folder(tmp_path / "test", {"cat": 2})
    missing = r"class 'dog' has no images in test/ \(train/ 4; test/ 0\)"
    with pytest.raises(DataError, match=missing):
        load(f"imagefolder:{tmp_path}", "train")
    _folder(tmp_path / "test", {"dog": 2})
    (tmp_path / "val").mkdir()
    (tmp_path / "valid").mkdir()
    with pytest.raises(DataError, match="both val/ and valid/"):
        load(f"imagefolder:{tmp_path}", "train")


def test_normalize_uses_the_train_split_statistics_for_every_split(tmp_path):
    root = _folder(tmp_path, {"a": 10, "b": 10}, grey={"a": 0, "b": 255})
    loaded = {s: load(f"imagefolder:{root}", s, normalize=True) for s in ("train", "test")}
    stats = loaded["train"].normalization
    assert loaded["test"].normalization == stats
    assert stats["mean"] == [pytest.approx(0.5, abs=1e-4)] * 3  # 7 black, 7 white images
    assert stats["std"] == [pytest.approx(0.5, abs=1e-4)] * 3
    x, _ = loaded["test"][0]
    torch.testing.assert_close(x, (loaded["test"].raw_input(0) - 0.5) / 0.5)
    assert load(f"imagefolder:{root}", "test").normalization is None  # off by default


def test_the_manifest_lists_every_file_once(tmp_path):
    root = _folder(tmp_path, {"cat": 5, "rocket": 7})
    manifest = load(f"imagefolder:{root}", seed=2).split_manifest()
    assert manifest["classes"] == ["cat", "rocket"] and manifest["seed"] == 2
    assert manifest["fractions"] == [0.7, 0.15, 0.15] and manifest["layout"] == "stratified"
    listed = [p for split in manifest["files"].values() for g in split.values() for p in g]
    assert sorted(listed) == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert manifest["counts"]["test"] == {"cat": 1, "rocket": 1}
