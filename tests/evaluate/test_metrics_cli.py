"""``xaikit evaluate --metrics``: the comparison table, the JSON with per-sample values, means,
bootstrap intervals and ranks; without ``--metrics`` the output is the original one."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import xaikit
from xaikit.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metric-models")
    state = torch.get_rng_state()
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=6, widths=(4, 8), input_size=16)
    xaikit.save_model(model, folder / "tiny", input_shape=[3, 16, 16])
    torch.set_rng_state(state)
    return folder / "tiny.safetensors"


def run_cli(args: list[str]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untrained model gives flat maps
        return main(args)


def test_metrics_subset_prints_ranks_and_writes_values(checkpoint, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    code = run_cli(
        ["evaluate", "--model", str(checkpoint), "--data", "shapes", "--n", "6", "--size", "16",
         "--method", "gradcam,saliency", "--metrics",
         "pixel_flipping,avg_sensitivity,relevance_mass_accuracy,sparseness",
         "--metric-option", "nr_samples=2", "--steps", "4", "--memory-budget", "32M",
         "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "pixel flipping AUC ↓" in printed and "mean rank" in printed
    assert "deletion AUC" not in printed and "class contrast" not in printed
    data = json.loads(out.read_text())
    assert data["settings"]["metrics"] == [
        "pixel_flipping", "avg_sensitivity", "relevance_mass_accuracy", "sparseness",
    ]  # fmt: skip
    assert data["settings"]["metric_options"] == {"nr_samples": 2}
    assert set(data["scores"]) == {"gradcam", "saliency", "random", "gaussian"}
    entry = data["scores"]["saliency"]["sparseness"]
    assert len(entry["values"]) == 6 and entry["n"] == 6
    assert entry["mean"] == pytest.approx(sum(entry["values"]) / 6)
    assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
    ranks = {m: data["comparison"]["methods"][m]["ranks"]["sparseness"] for m in data["scores"]}
    assert sorted(ranks.values()) == [1, 2, 3, 4]
    assert data["metrics"]["avg_sensitivity"]["higher_is_better"] is False
    assert data["sanity"] == {}


def test_without_metrics_the_output_has_no_comparison(checkpoint, tmp_path, capsys):
    out = tmp_path / "plain.json"
    code = run_cli(
        ["evaluate", "--model", str(checkpoint), "--data", "shapes", "--n", "3", "--size", "16",
         "--steps", "2", "--no-sanity", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert "deletion AUC ↓" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert "comparison" not in data and "metrics" not in data["settings"]
    assert "values" not in data["scores"]["gradcam"]["deletion_auc"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metrics", "pixel_flip"], "unknown metric 'pixel_flip'"),
        (["--metrics", "sparseness", "--metric-option", "nr_samples"], "KEY=VALUE"),
    ],
)
def test_bad_metrics_exit_2_with_one_line(checkpoint, capsys, extra, message):
    code = run_cli(
        ["evaluate", "--model", str(checkpoint), "--data", "shapes", "--n", "2", "--size", "16",
         *extra]
    )  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err
