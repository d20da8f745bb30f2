"""``xaikit evaluate``: table, JSON file and exit codes."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import xaikit
from xaikit.cli import main


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    state = torch.get_rng_state()
    torch.manual_seed(0)
    for name, task in (("single", "multiclass"), ("multi", "multilabel")):
        model = xaikit.create_model(
            "simple_cnn", num_classes=6, task=task, widths=(4, 8), input_size=16
        )
        xaikit.save_model(model, folder / name, input_shape=[3, 16, 16])
    torch.set_rng_state(state)
    return folder


def run_cli(args: list[str]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained models give flat maps
        return main(args)


def test_evaluate_prints_a_table_and_writes_json(checkpoints, tmp_path, capsys):
    out = tmp_path / "figures" / "eval.json"
    code = run_cli(
        ["evaluate", "--model", str(checkpoints / "single.safetensors"), "--data", "shapes",
         "--method", "gradcam", "--n", "6", "--steps", "4", "--out", str(out), "--seed", "1"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "deletion AUC ↓" in printed and "insertion AUC ↑" in printed
    assert "pointing game ↑" in printed and "class contrast" in printed
    header = next(line for line in printed.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == ["gradcam", "random", "gaussian"]
    data = _strict(out.read_text())
    assert data["data"] == "shapes" and data["settings"]["n"] == 6
    assert data["settings"]["seed"] == 1 and data["settings"]["steps"] == 4
    assert set(data["scores"]) == {"gradcam", "random", "gaussian"}
    assert data["scores"]["gradcam"]["pointing_game"]["n"] == 6
    assert data["metrics"]["deletion_auc"]["higher_is_better"] is False
    assert data["sanity"]["random"]["randomization"]["verdict"] == "fail"
    assert list(tmp_path.joinpath("figures").iterdir()) == [out]  # no temporary file left


def test_multilabel_data_scores_every_present_label(checkpoints, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = run_cli(
        ["evaluate", "--model", str(checkpoints / "multi.safetensors"), "--data",
         "shapes-multilabel", "--method", "gradcam,saliency", "--n", "5", "--steps", "2",
         "--baselines", "none", "--no-sanity", "--out", str(out), "-q"]
    )  # fmt: skip
    assert code == 0
    data = _strict(out.read_text())
    dataset = xaikit.data.load("shapes-multilabel", "test", n=5, size=16, seed=0)
    present = int(dataset.targets.sum())
    assert set(data["scores"]) == {"gradcam", "saliency"}
    assert data["scores"]["gradcam"]["pointing_game"]["n"] == present
    assert data["sanity"] == {}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "nonsense"], "unknown data set"),
        (["--data", "shapes", "--method", "grad-cam"], "unknown method"),
        (["--data", "shapes", "--n", "0"], "--n must be at least 1"),
        (["--data", "shapes", "--steps", "0"], "steps"),
        (["--data", "digits"], "6 classes but data set 'digits' has 10"),
    ],
)
def test_bad_input_exits_2_with_one_line(checkpoints, capsys, extra, message):
    code = run_cli(["evaluate", "--model", str(checkpoints / "single.safetensors"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_label_target_needs_single_label_data(checkpoints, capsys):
    code = run_cli(
        ["evaluate", "--model", str(checkpoints / "multi.safetensors"), "--data",
         "shapes-multilabel", "--target", "label", "--n", "2"]
    )  # fmt: skip
    assert code == 2
    assert "multi-label" in capsys.readouterr().err


def test_help_lists_evaluate(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "evaluate" in capsys.readouterr().out
