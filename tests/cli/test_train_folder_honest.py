"""The newcomer's scenario, replayed: ``xaikit train --data imagefolder:DIR`` trains honestly.

The printed test accuracy is measured again here, independently (the saved model, the files
``split.json`` lists as test, read with PIL and normalized as the card says), and must agree;
the kept epoch is printed; a folder that cannot be split exits 2 before any training; and a
torchvision model fine-tuned on the folder keeps the class names and normalization, so
``xaikit explain --target cat`` works on it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit.cli import main
from xaikit.cli.train import kept_line
from xaikit.train.monitor import Monitor

CLASSES = ["cat", "rocket"]
SIZE = 32
FAST = ["--data-option", f"size={SIZE}", "--batch-size", "16", "-q"]


def _write_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """``root/cat`` (a bright disk) and ``root/rocket`` (a dark bar), on grey noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.normal(0.5, 0.1, (SIZE, SIZE))
            if name == "cat":
                cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 9)
                pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 0.95
            else:
                x0 = rng.integers(4, 24)
                pixels[4:28, x0 : x0 + 4] = 0.05
            grey = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(root / name / f"{i:02d}.png")
    return root


def _files(split: dict, name: str) -> list[tuple[str, int]]:
    """``[(path relative to the folder, label), ...]`` of one split in ``split.json``."""
    groups = split["files"][name]
    return [(path, split["classes"].index(c)) for c, paths in groups.items() for path in paths]


def _measure(model: torch.nn.Module, card: dict, root: Path, files: list) -> float:
    """Accuracy of ``model`` on ``files``, read without xaikit's loaders."""
    mean = torch.tensor(card["normalization"]["mean"]).view(-1, 1, 1)
    std = torch.tensor(card["normalization"]["std"]).view(-1, 1, 1)
    images, labels = [], []
    for path, label in files:
        with Image.open(root / path) as image:
            # Written at the training size, so no resize is involved in the comparison.
            assert list(image.size) == card["input_shape"][1:]
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        images.append((torch.from_numpy(pixels).permute(2, 0, 1) - mean) / std)
        labels.append(label)
    with torch.no_grad():
        predicted = model.eval()(torch.stack(images)).argmax(dim=1)
    return float((predicted == torch.tensor(labels)).float().mean())


def test_the_printed_test_accuracy_is_the_held_out_accuracy(tmp_path, capsys):
    root = _write_folder(tmp_path / "crops", 30)
    run = tmp_path / "runs" / "crops"
    args = ["train", "--data", f"imagefolder:{root}", "--model", "simple_cnn", "--epochs", "3"]
    args += ["--out", str(run), "--seed", "0", "--model-option", "widths=[8,16]", *FAST]
    assert main(args) == 0
    out = capsys.readouterr().out

    found = re.search(r"^test_accuracy\s+([0-9.]+) \(on (\d+) held-out images\)$", out, re.M)
    assert found, out
    printed, count = found.group(1), int(found.group(2))
    kept = re.search(r"^kept epoch (\d+) of 3 \(best val_(accuracy|loss) [0-9.]+", out, re.M)
    assert kept, out

    split = json.loads((run / "split.json").read_text())
    test_files = _files(split, "test")
    model, card = xaikit.load_model(run)
    measured = _measure(model, card, root, test_files)
    assert printed == f"{measured:.4f}"
    assert count == len(test_files) == 10  # 15 % of 30, per class

    names = {s: {path for path, _ in _files(split, s)} for s in ("train", "val", "test")}
    assert not names["test"] & names["train"] and not names["val"] & names["train"]
    assert not names["test"] & names["val"]
    assert len(names["train"] | names["val"] | names["test"]) == 60

    saved, final = xaikit.load_model(run / "model")
    for key, value in saved.state_dict().items():  # the folder loads the kept model
        assert torch.equal(value, model.state_dict()[key]), key
    assert final["metrics"]["test_samples"] == count
    assert sum(map(sum, final["metrics"]["test_confusion_matrix"])) == count
    assert final["metrics"]["test_accuracy"] == pytest.approx(measured)
    assert final["epoch"] == final["selection"]["epoch"] == int(kept.group(1))
    assert final["class_names"] == CLASSES and len(final["normalization"]["mean"]) == 3
    assert final["data"]["options"]["seed"] == 0


@pytest.mark.parametrize(
    ("classes", "reason"),
    [
        ({"cat": 6}, r"has 1 class \('cat': 6 images\)"),
        ({"cat": 6, "rocket": 0}, r"class 'rocket' has no images.*cat 6, rocket 0"),
        ({"cat": 6, "rocket": 2}, r"class 'rocket' has 2 images.*cat 6, rocket 2"),
    ],
)
def test_a_folder_that_cannot_be_split_exits_2_before_training(tmp_path, capsys, classes, reason):
    root = tmp_path / "data"
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (200, 9, 9)).save(root / name / f"{i}.png")
    run = tmp_path / "run"
    args = ["train", "--data", f"imagefolder:{root}", "--model", "simple_cnn", "--epochs", "1"]
    assert main([*args, "--out", str(run), *FAST]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.search(reason, lines[0]), captured.err
    assert not run.exists() and captured.out == ""


def test_a_fine_tuned_torchvision_model_keeps_class_names_and_normalization(tmp_path, capsys):
    root = _write_folder(tmp_path / "crops", 10, seed=1)
    run = tmp_path / "tv"
    args = ["train", "--data", f"imagefolder:{root}", "--model", "torchvision:resnet18"]
    assert main([*args, "--epochs", "1", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    _, card = xaikit.load_model(run)
    assert card["class_names"] == CLASSES
    assert card["input_shape"] == [3, SIZE, SIZE]
    stats = card["normalization"]
    assert len(stats["mean"]) == len(stats["std"]) == 3
    assert all(0 < m < 1 for m in stats["mean"]) and all(s > 0 for s in stats["std"])
    _, final = xaikit.load_model(run / "model")
    assert final["class_names"] == CLASSES and final["normalization"] == stats

    image = root / "cat" / "00.png"
    out = tmp_path / "explained"
    code = main(["explain", str(image), "--model", str(run), "--target", "cat", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert any("cat" in p.name for p in out.rglob("*.png"))


def test_resuming_with_another_split_is_refused(tmp_path, capsys):
    root = _write_folder(tmp_path / "crops", 6)
    run = tmp_path / "run"
    args = ["train", "--data", f"imagefolder:{root}", "--model", "simple_cnn", "--out", str(run)]
    args += ["--model-option", "widths=[4,8]", *FAST]
    assert main([*args, "--epochs", "1"]) == 0
    # Another seed draws other test files: going on would train on images held out so far.
    assert main([*args, "--epochs", "2", "--seed", "1", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split.json" in err
    assert main([*args, "--epochs", "2", "--resume"]) == 0


# -- the kept epoch: strictly better, ties of a metric to the lower loss ---------------------


def test_a_later_epoch_replaces_the_best_only_if_strictly_better():
    loss = Monitor.for_quantity("val_loss", patience=None)
    assert loss.mode == "min" and loss.tiebreak is None
    assert [loss.update(v, e) for e, v in enumerate([0.5, 0.5, 0.4, float("nan")], 1)] == [
        True,
        False,
        True,
        False,
    ]
    assert loss.best_epoch == 3

    accuracy = Monitor.for_quantity("val_accuracy", patience=2)
    assert accuracy.mode == "max" and accuracy.tiebreak == "val_loss"
    steps = [(1.0, 0.6), (1.0, 0.6), (1.0, 0.5), (0.9, 0.1), (1.0, math.nan)]
    assert [accuracy.update(v, e, t) for e, (v, t) in enumerate(steps, 1)] == [
        True,
        False,  # equal accuracy, equal loss: the first stays
        True,  # equal accuracy, lower loss
        False,
        False,
    ]
    assert accuracy.best_epoch == 3 and accuracy.best_tiebreak == 0.5 and accuracy.should_stop

    # A checkpoint from before tie-breaking (no best_tiebreak) still resumes.
    old = {k: v for k, v in accuracy.state_dict().items() if k != "best_tiebreak"}
    resumed = Monitor.for_quantity("val_accuracy", patience=2)
    resumed.load_state_dict(old)
    assert resumed.best_epoch == 3 and resumed.best_tiebreak is None


def test_the_kept_line_says_which_epoch_and_why():
    line = kept_line({"epoch": 3, "of": 5, "monitor": "val_loss", "value": 0.412, "tied_with": []})
    assert line == "kept epoch 3 of 5 (best val_loss 0.4120)"
    tied = {"epoch": 4, "of": 5, "monitor": "val_accuracy", "value": 1.0, "tied_with": [2, 3]}
    tied.update(tiebreak="val_loss", tiebreak_value=0.25)
    assert kept_line(tied) == (
        "kept epoch 4 of 5 (best val_accuracy 1.0000, tied with epochs 2, 3: kept for the "
        "lower val_loss 0.2500)"
    )
    last = kept_line({"epoch": 5, "of": 5, "monitor": None})
    assert last == "kept epoch 5 of 5 (the last: no validation data to choose by)"
