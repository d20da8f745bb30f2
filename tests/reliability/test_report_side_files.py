"""The report's side files (``curves.png``, ``history.json``, the card's confusion matrix):
one that cannot be read drops only its own part, with a one-line note in the page, and the
rest of the report is built."""

from __future__ import annotations

import json
import os
import re
import shutil
from html import escape
from pathlib import Path

import pytest
from reliability_files import png_with_header, write_image

import xaikit
from xaikit.cli import main
from xaikit.viz.report import SECTION_IDS, build_report

TRAIN = ["train", "--data", "shapes", "--model", "simple_cnn", "--data-option", "n=60"]
TRAIN += ["--data-option", "size=16", "--model-option", "widths=[4,8]", "--epochs", "1", "-q"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A trained run: model, card with a 6 x 6 confusion matrix, curves.png, history.json."""
    out = tmp_path_factory.mktemp("report-run") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def _copy(run_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(run_folder, folder)
    return folder


def _report(folder: Path) -> str:
    text = build_report(
        folder / "model",
        n=2,
        evaluate=False,
        sanity=False,
        atlas_channels=2,
        atlas_steps=2,
        exemplar_pool=4,
        quiet=True,
    )
    assert isinstance(text, str)
    assert [s for s in SECTION_IDS if f'<section id="{s}">' not in text] == []
    return text


def _section(text: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', text, re.S)
    assert match, section_id
    return match.group(1)


def _notes(text: str) -> str:
    return _section(text, "notes")


def _has_curves(section: str) -> bool:
    return "<figure><img" in section and "curves.png: loss and metrics" in section


def _has_history(section: str) -> bool:
    return "<h3>History (1 epochs)</h3>" in section


def test_an_intact_run_folder_shows_every_part(run_folder):
    text = _report(run_folder)
    training = _section(text, "training")
    assert _has_curves(training) and _has_history(training)
    assert "was not read" not in text
    assert "Confusion matrix (model card, test split)" in _section(text, "metrics")


def _bad_curves(path: Path, case: str) -> None:
    path.unlink()
    if case == "text":
        path.write_text("not an image\n")
    elif case == "jpeg":
        write_image(path.with_suffix(".jpg"), 16, 16)
        os.replace(path.with_suffix(".jpg"), path)
    elif case == "truncated":
        write_image(path.with_suffix(".tmp.png"), 64, 64)
        data = path.with_suffix(".tmp.png").read_bytes()
        path.with_suffix(".tmp.png").unlink()
        path.write_bytes(data[: len(data) // 2])
    elif case == "bomb":
        path.write_bytes(png_with_header(9000, 9000))
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "dev-zero":
        os.symlink("/dev/zero", path)
    elif case == "folder":
        path.mkdir()


CURVES_CASES = {
    "text": "not a readable PNG image",
    "jpeg": "not a readable PNG image",
    "truncated": "not a readable PNG image",
    "bomb": "the figure is 9000 x 9000 pixels, more than 50,000,000",
    "fifo": "the training curves is not a regular file but a FIFO (named pipe)",
    "dev-zero": "the training curves is not a regular file but a character device",
}


@pytest.mark.parametrize("case", list(CURVES_CASES))
def test_a_bad_curves_png_drops_only_the_figure(run_folder, tmp_path, case):
    folder = _copy(run_folder, tmp_path)
    _bad_curves(folder / "curves.png", case)
    text = _report(folder)
    training = _section(text, "training")
    note = escape(f"curves.png was not read: {CURVES_CASES[case]}")
    assert note in training and note in _notes(text), note
    assert not _has_curves(training) and _has_history(training)
    assert "Test metrics (model card)" in _section(text, "metrics")


HISTORY_CASES = {
    "string-number": (
        lambda records: [{**records[0], "train_loss": "low"}],
        "[0].train_loss must be a finite number or null, got 'low'",
    ),
    "not-a-list": (
        lambda records: {"epochs": records},
        "the document must be a list of per-epoch records, got {'epochs': [{...}]}",
    ),
    "no-epoch": (lambda records: [{"train_loss": 0.5}], "[0].epoch is missing"),
    "200k-deep": (None, "the history nests deeper than 64 levels"),
    "not-json": (None, "the history is not valid JSON"),
}


@pytest.mark.parametrize("case", list(HISTORY_CASES))
def test_a_bad_history_json_drops_only_the_table(run_folder, tmp_path, case):
    folder = _copy(run_folder, tmp_path)
    path = folder / "history.json"
    change, reason = HISTORY_CASES[case]
    if case == "200k-deep":
        path.write_text("[" * 200_000)
    elif case == "not-json":
        path.write_text('[{"epoch": 1, "train_loss": 0.5},')
    else:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    text = _report(folder)
    training = _section(text, "training")
    note = escape(f"history.json was not read: {reason}")
    assert note in training and note in _notes(text), note
    assert _has_curves(training) and not _has_history(training)


CONFUSION_CASES = {
    "string": (
        "many",
        "metrics.test_confusion_matrix must be a 6 x 6 matrix of counts, got 'many'",
    ),
    "wrong-shape": (
        [[1, 2], [3, 4]],
        "metrics.test_confusion_matrix must be a 6 x 6 matrix of counts, got 2 items",
    ),
    "ragged": (
        [[1] * 6] * 5 + [[1, 2]],
        "metrics.test_confusion_matrix must be a square matrix, got 6 rows of [2, 6] numbers",
    ),
    "strings-inside": ([["a"] * 6] * 6, "metrics.test_confusion_matrix[0][0] must be a number"),
    "negative": ([[-1] * 6] * 6, "metrics.test_confusion_matrix[0][0] must be a number >= 0"),
}


@pytest.mark.parametrize("case", list(CONFUSION_CASES))
def test_a_bad_confusion_matrix_drops_only_the_matrix(run_folder, tmp_path, case):
    folder = _copy(run_folder, tmp_path)
    card_path = folder / "model.json"
    card = json.loads(card_path.read_text())
    value, reason = CONFUSION_CASES[case]
    card["metrics"]["test_confusion_matrix"] = value
    card_path.write_text(json.dumps(card))
    text = _report(folder)
    metrics = _section(text, "metrics")
    note = escape(f"the model card's confusion matrix was not read: model card: {reason}")
    assert note in metrics and note in _notes(text), note
    assert "Test metrics (model card)" in metrics
    assert f"{card['metrics']['test_accuracy']:.4f}" in metrics
    # The matrix of the report's own samples takes its place, labelled as such.
    assert "Confusion matrix (the report&#x27;s 2 samples)" in metrics
    assert "Confusion matrix (model card" not in metrics
    training = _section(text, "training")
    assert _has_curves(training) and _has_history(training)


def test_card_metrics_that_are_not_a_table_drop_only_the_metrics(run_folder):
    model, card = xaikit.load_model(run_folder / "model")
    card["metrics"] = ["accuracy", 1.0]
    text = build_report(
        model,
        "shapes",
        card=card,
        checkpoint=run_folder / "model.safetensors",
        data_options={"n": 60, "size": 16},
        n=2,
        evaluate=False,
        sanity=False,
        atlas_channels=2,
        atlas_steps=2,
        exemplar_pool=4,
        quiet=True,
    )
    metrics = _section(text, "metrics")
    note = escape("the model card's metrics was not read: not a table: ['accuracy', 1.0]")
    assert note in metrics, note
    assert "The model card holds no test metrics." in metrics
    assert _has_curves(_section(text, "training"))
