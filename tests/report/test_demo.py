"""``xaikit demo``: every promised file, readable, from the reference models; a missing model
is named, with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
from html_checks import decode_png, parse, section_html
from PIL import Image

from xaikit.cli import main
from xaikit.demo import DEMO_MODELS, FAST, missing_models, run_demo
from xaikit.errors import CheckpointError
from xaikit.viz.report import SECTION_IDS

EXPECTED = [
    "heatmaps/shapes-multiclass_methods.png",
    "heatmaps/shapes-multiclass_gradcam/explanation.npz",
    "heatmaps/shapes-multiclass_gradcam/explanation.json",
    "heatmaps/shapes-multilabel_labels.png",
    "heatmaps/recall-lstm_temporal.png",
    "heatmaps/recall-lstm_sequence0.png",
    "filters/first_layer_weights.png",
    "filters/maximize.png",
    "filters/exemplars.png",
    "filters/atlas.png",
    "evaluation/evaluation.json",
    "evaluation/evaluation.png",
    "evaluation/randomization.png",
    "report.html",
    "reports/shapes-multilabel.html",
    "reports/recall-lstm.html",
    "index.json",
]


@pytest.mark.slow
def test_fast_demo_writes_every_file(tiny_models, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--models-dir", str(tiny_models), "--fast", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in EXPECTED:
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.verify()
    assert str(out / "report.html") in printed
    assert len(printed.strip().splitlines()) == 1 + len(EXPECTED) - 1  # npz + json: one line

    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    methods = [*FAST.report_methods, "random", "gaussian"]
    assert list(evaluation["scores"]) == methods
    assert evaluation["settings"]["n"] == FAST.eval_n
    for row in evaluation["scores"].values():
        assert 0.0 <= row["deletion_auc"]["mean"] <= 1.0
        assert {"pointing_game", "insertion_auc"} <= set(row)
    assert evaluation["metrics"]["deletion_auc"]["arrow"] == "↓"
    assert evaluation["sanity"]["random"]["randomization"]["verdict"] == "fail"

    page = parse((out / "report.html").read_text(encoding="utf-8"))
    assert page.sections[: len(SECTION_IDS)] == list(SECTION_IDS)
    # The other two models' pages show what only they have: a map per label, LSTM gates.
    multilabel = (out / "reports" / "shapes-multilabel.html").read_text(encoding="utf-8")
    assert parse(multilabel).sections[: len(SECTION_IDS)] == list(SECTION_IDS)
    assert section_html(multilabel, "gallery").count("<th>label</th>") == 1
    recurrent = (out / "reports" / "recall-lstm.html").read_text(encoding="utf-8")
    assert "forget gate" in section_html(recurrent, "recurrent")
    for text in (multilabel, recurrent):
        for image in parse(text).images:
            decode_png(image["src"])
    index = json.loads((out / "index.json").read_text())
    assert {entry["path"] for entry in index["files"]} >= {
        "report.html",
        "evaluation/evaluation.json",
    }
    assert index["fast"] is True and index["seconds"]["total"] > 0


def test_missing_reference_model_is_named(tiny_models, tmp_path, capsys):
    partial = tmp_path / "models"
    partial.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(
            tiny_models / f"shapes-multiclass{suffix}", partial / f"shapes-multiclass{suffix}"
        )
    assert missing_models(partial) == ["shapes-multilabel", "recall-lstm"]
    assert missing_models(tiny_models) == []
    code = main(["demo", "--out", str(tmp_path / "out"), "--models-dir", str(partial)])
    assert code == 2
    err = capsys.readouterr().err
    assert "shapes-multilabel, recall-lstm" in err and str(partial) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_models_dir_environment_variable_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIKIT_MODELS_DIR", str(tmp_path))
    assert missing_models() == list(DEMO_MODELS)
    with pytest.raises(CheckpointError, match="missing from"):
        run_demo(tmp_path / "out", fast=True)
