"""evaluate_methods: a method against the random and centred-Gaussian baselines."""

from __future__ import annotations

import json
import math

import pytest
import torch
from evaluate_toys import input_gradient

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.evaluate import deletion_curve, evaluate_methods, pointing_game
from xaikit.explain.api import explain


def test_gradcam_beats_the_baselines_on_a_trained_model(bar_model, bar_test):
    images, labels, masks = bar_test
    report = evaluate_methods(bar_model, images, "gradcam", labels=labels, masks=masks, steps=16)
    scores = report.scores
    assert report.methods == ["gradcam", "random", "gaussian"]
    for baseline in ("random", "gaussian"):
        assert scores["gradcam"]["deletion_auc"]["mean"] < scores[baseline]["deletion_auc"]["mean"]
        assert (
            scores["gradcam"]["insertion_auc"]["mean"] > scores[baseline]["insertion_auc"]["mean"]
        )
        assert (
            scores["gradcam"]["pointing_game"]["mean"] > scores[baseline]["pointing_game"]["mean"]
        )
    assert scores["gradcam"]["pointing_game"]["n"] == 32
    assert report.sanity["gradcam"]["randomization"]["verdict"] == "pass"
    assert report.sanity["random"]["randomization"]["verdict"] == "fail"
    assert report.sanity["gaussian"]["class_contrast"]["verdict"] == "fail"


def test_figures_equal_the_tensor_metrics(bar_model, bar_test):
    images, labels, masks = bar_test
    report = evaluate_methods(
        bar_model, images, "gradcam", labels=labels, masks=masks, steps=8, baselines=(),
        sanity=False,
    )  # fmt: skip
    maps = explain(bar_model, images, method="gradcam", target="predicted")
    deletion = deletion_curve(bar_model, images, maps, steps=8)
    assert report.scores["gradcam"]["deletion_auc"]["mean"] == pytest.approx(deletion.mean())
    label_maps = explain(bar_model, images, method="gradcam", target=labels)
    hits = pointing_game(label_maps, masks)
    assert report.scores["gradcam"]["pointing_game"]["mean"] == pytest.approx(float(hits.mean()))
    assert report.sanity == {}


def _three_label_toy() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A 3-output conv net, 2 images of 6x6 and per-label masks: image 0 holds labels 0 and
    2, image 1 label 1."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten())  # fmt: skip
    images = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 3, 6, 6)
    masks[0, 0, :2, :2] = 1
    masks[0, 2, 4:, 4:] = 1
    masks[1, 1, 2:4, 2:4] = 1
    return model, images, masks


def test_per_class_masks_score_each_present_label():
    model, images, masks = _three_label_toy()
    report = evaluate_methods(
        model, images, input_gradient, masks=masks, steps=4, baselines=(), sanity=False,
        class_names=["a", "b", "c"],
    )  # fmt: skip
    pointing = report.scores["input_gradient"]["pointing_game"]
    assert pointing["n"] == 3
    assert set(pointing["per_class"]) == {"a", "b", "c"}
    maps = input_gradient(model, images[[0, 0, 1]], torch.tensor([0, 2, 1]))
    hits = pointing_game(maps, masks[[0, 0, 1], [0, 2, 1]])
    assert pointing["mean"] == pytest.approx(float(hits.mean()))


def test_report_json_and_table(bar_model, bar_test):
    images, labels, masks = bar_test
    report = evaluate_methods(bar_model, images[:8], "gradcam", masks=masks[:8], labels=labels[:8],
                              steps=4)  # fmt: skip
    data = json.loads(json.dumps(report.to_dict()))
    assert data["metrics"]["deletion_auc"]["higher_is_better"] is False
    assert data["settings"]["steps"] == 4 and data["settings"]["seed"] == 0
    assert set(data["scores"]) == {"gradcam", "random", "gaussian"}
    table = report.table()
    assert "deletion AUC ↓" in table and "insertion AUC ↑" in table
    assert "pointing game ↑" in table and "pass" in table and "fail" in table
    assert table.splitlines()[0].split()[1:] == ["gradcam", "random", "gaussian"]


def test_same_seed_same_figures(bar_model, bar_test):
    images, _, _ = bar_test
    a = evaluate_methods(bar_model, images[:8], "gradcam", steps=4, seed=5).to_dict()
    b = evaluate_methods(bar_model, images[:8], "gradcam", steps=4, seed=5).to_dict()
    assert a == b
    assert not math.isnan(a["scores"]["random"]["deletion_auc"]["mean"])


def test_bad_arguments_raise_clear_errors(bar_model, bar_test):
    images, _, masks = bar_test
    with pytest.raises(XaikitConfigError, match="baseline"):
        evaluate_methods(bar_model, images[:2], "gradcam", baselines=("noise",))
    with pytest.raises(XaikitConfigError, match="labels"):
        evaluate_methods(bar_model, images[:2], "gradcam", masks=masks[:2], sanity=False)
    with pytest.raises(XaikitConfigError, match="distinct"):
        evaluate_methods(bar_model, images[:2], ["gradcam", "gradcam"], sanity=False)


def test_table_shows_each_class_pointing_game_and_the_tolerance():
    model, images, masks = _three_label_toy()
    for tolerance, title in ((0, "pointing game ↑"), (2, "pointing game (±2 px) ↑")):
        report = evaluate_methods(
            model, images, input_gradient, masks=masks, steps=4, baselines=(), sanity=False,
            class_names=["a", "b", "c"], tolerance=tolerance,
        )  # fmt: skip
        scores = report.scores["input_gradient"]
        per_class = scores["pointing_game"]["per_class"]
        maps = input_gradient(model, images[[0, 0, 1]], torch.tensor([0, 2, 1]))
        item_masks = masks[[0, 0, 1], [0, 2, 1]]
        hits = pointing_game(maps, item_masks, tolerance=tolerance)
        assert scores["pointing_game"]["mean"] == pytest.approx(float(hits.mean()))
        if tolerance:
            exact = pointing_game(maps, item_masks)
            assert scores["pointing_game_exact"]["mean"] == pytest.approx(float(exact.mean()))
            assert "pointing game (0 px) ↑" in report.table()
        else:
            assert "pointing_game_exact" not in scores
        lines = report.table().splitlines()
        row = next(i for i, line in enumerate(lines) if line.startswith(title))
        for offset, name in enumerate(sorted(per_class), start=1):
            label, value = lines[row + offset].split()
            assert label == name and float(value) == pytest.approx(per_class[name], abs=5e-4)


def test_a_binary_head_is_scored_as_two_outcomes():
    """Class 0 of a one-logit head is explained as -z: its Grad-CAM is the positive map's
    evidence of the other sign, so both outcomes are scored and the sanity checks run."""
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=1, task="binary", input_size=16,
                                widths=(4, 8)).eval()  # fmt: skip
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(4, 16, 16)
    masks[:, 4:12, 4:12] = 1
    labels = torch.tensor([0, 1, 0, 1])
    report = evaluate_methods(model, images, "gradcam", labels=labels, masks=masks, steps=4,
                              baselines=(), quiet=True)  # fmt: skip
    raw = explain(model, images, method="gradcam", target=0, normalize=None,
                  return_result=True).raw[:, 0]  # fmt: skip
    upsampled = torch.nn.functional.interpolate(raw[:, None], size=(16, 16), mode="bilinear")
    expected = torch.where(labels[:, None, None] == 1, upsampled[:, 0], -upsampled[:, 0])
    hits = pointing_game(expected.clamp_min(0), masks)
    assert report.scores["gradcam"]["pointing_game"]["mean"] == pytest.approx(float(hits.mean()))
    contrast = report.sanity["gradcam"]["class_contrast"]
    assert contrast["score"] > 0.5  # relu(raw) and relu(-raw) never rank alike
