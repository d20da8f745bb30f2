"""``evaluate_methods`` and ``xaikit evaluate`` take every method of the catalogue: the new
CAMs, captum's attributions and LRP are scored exactly as their own maps say."""

from __future__ import annotations

import json

import pytest
import torch

import xaikit
from xaikit.evaluate import evaluate_methods
from xaikit.evaluate.perturbation import deletion_curve
from xaikit.explain.engine import method_names

METHODS = ["ablationcam", "fullgrad", "deeplift", "lime", "lrp"]


@pytest.fixture(scope="module")
def shapes_batch():
    model, _card = xaikit.load_model("shapes-multiclass")
    data = xaikit.data.load("shapes", "test", n=4, size=64, seed=0)
    x = torch.stack([data[i][0] for i in range(4)])
    return model, x


def test_new_methods_are_scored_from_their_own_maps(shapes_batch):
    model, x = shapes_batch
    methods = [m for m in METHODS if m in method_names()]
    assert len(methods) >= 4
    report = evaluate_methods(model, x, methods, baselines=(), sanity=False, steps=8, quiet=True)
    assert report.methods == methods
    for name in methods:
        maps = xaikit.explain(model, x, method=name, seed=0, quiet=True)
        assert maps.shape == (4, 64, 64)  # one target per image: (N, H, W)
        expected = deletion_curve(model, x, maps, steps=8, quiet=True).auc.mean()
        got = report.scores[name]["deletion_auc"]["mean"]
        assert got == pytest.approx(float(expected), abs=1e-6), name


def test_the_command_line_scores_lrp_and_kernelshap_beside_the_baselines(tmp_path, capsys):
    from xaikit.cli import main

    out = tmp_path / "ev.json"
    args = ["evaluate", "--model", "shapes-multiclass", "--data", "shapes", "--n", "2"]
    args += ["--method", "lrp,kernelshap", "--no-sanity", "--steps", "4", "--out", str(out)]
    assert main([*args, "-q"]) == 0
    scores = json.loads(out.read_text())["scores"]
    assert list(scores) == ["lrp", "kernelshap", "random", "gaussian"]
    for name in ("lrp", "kernelshap"):
        assert 0.0 <= scores[name]["deletion_auc"]["mean"] <= 1.0
        assert scores[name]["deletion_auc"]["n"] == 2
