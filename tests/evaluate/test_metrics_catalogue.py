"""The metric catalogue: registry and metadata, hand-checked values, the shapes ground truth
(localisation ranks Grad-CAM above the control maps; randomisation passes Grad-CAM and fails an
edge detector) and ``evaluate_methods(metrics=...)`` with its comparison view."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.evaluate import (
    METRICS,
    complexity,
    evaluate_methods,
    gaussian_maps,
    localisation,
    make_explainer,
    random_maps,
    randomisation_metrics,
)
from xaikit.evaluate.catalogue import CATALOGUE, FAMILIES, run_metric
from xaikit.evaluate.suite import bootstrap_ci


def test_every_catalogue_metric_has_metadata_and_a_family():
    assert len(CATALOGUE) == 32
    for name, spec in CATALOGUE.items():
        info = METRICS[name]
        assert spec.family in FAMILIES and info.paper and info.range[0] < info.range[1]
    families = {spec.family for spec in CATALOGUE.values()}
    assert families == set(FAMILIES)
    assert {n for n, s in CATALOGUE.items() if s.stochastic} >= {
        "faithfulness_correlation", "max_sensitivity", "road", "smooth_mprt",
    }  # fmt: skip
    assert METRICS["pixel_flipping"].higher_is_better is False
    assert METRICS["localisation_auc"].higher_is_better is True


def test_complexity_and_localisation_by_hand():
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 1, 2] = 1.0
    flat = torch.ones(1, 4, 4)
    maps = torch.cat([one_hot, flat])
    gini = complexity.sparseness(maps)
    assert gini[0] == pytest.approx(15 / 16, abs=1e-5) and gini[1] == pytest.approx(0, abs=1e-6)
    entropy = complexity.complexity(maps)
    assert entropy[0] == pytest.approx(0, abs=1e-6)
    assert entropy[1] == pytest.approx(math.log(16), abs=1e-6)
    assert complexity.effective_complexity(maps).tolist() == [1.0, 16.0]

    mask = torch.zeros(2, 4, 4)
    mask[:, 1, 2] = 1.0
    assert localisation.auc(maps, mask).tolist()[0] == pytest.approx(1.0)
    assert localisation.auc(maps, mask).tolist()[1] == pytest.approx(0.5)  # all ties: chance
    assert localisation.relevance_mass_accuracy(maps, mask).tolist() == pytest.approx([1.0, 1 / 16])
    assert localisation.top_k_intersection(maps, mask, k=2).tolist()[0] == pytest.approx(0.5)
    empty = localisation.attribution_localisation(maps, torch.zeros(2, 4, 4))
    assert bool(torch.isnan(empty).all())


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = torch.linspace(0, 1, 21)
    low, high = bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) == [low, high]
    assert low < 0.5 < high and high - low < 0.4
    assert all(math.isnan(v) for v in bootstrap_ci(torch.tensor([1.0])))


def sobel(model, inputs, target):
    """An edge detector: a map of the input alone, independent of the model and class."""
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gray = inputs.mean(1, keepdim=True)
    gx = F.conv2d(gray, k.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(gray, k.T.reshape(1, 1, 3, 3), padding=1)
    return (gx.square() + gy.square()).sqrt()[:, 0]


@pytest.fixture(scope="module")
def shapes():
    model, _ = xaikit.load_model("shapes-multiclass")
    data = xaikit.data.load("shapes", "test", n=16, size=64, seed=0)
    x = torch.stack([data[i][0] for i in range(16)])
    y = torch.tensor([int(data[i][1]) for i in range(16)])
    masks = torch.stack([data[i][2][int(data[i][1])] for i in range(16)])
    return model.eval(), x, y, masks


@pytest.mark.parametrize(
    "name", ["attribution_localisation", "top_k_intersection", "relevance_rank_accuracy",
             "relevance_mass_accuracy", "localisation_auc"],
)  # fmt: skip
def test_localisation_ranks_gradcam_above_the_control_maps(shapes, name):
    model, x, y, masks = shapes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcam = make_explainer("gradcam")(model, x, y).detach()
    options = {"k": 200} if name == "top_k_intersection" else {}
    score = {
        method: float(run_metric(name, None, x, maps, y, masks=masks, **options).nanmean())
        for method, maps in {
            "gradcam": gradcam,
            "random": random_maps((16, 64, 64), seed=0),
            "gaussian": gaussian_maps((16, 64, 64)),
        }.items()
    }
    assert score["gradcam"] > score["random"] and score["gradcam"] > score["gaussian"], score
    assert score["gradcam"] > (0.8 if name == "localisation_auc" else 0.25)


def test_randomisation_passes_gradcam_and_fails_an_edge_detector(shapes):
    model, x, y, _ = shapes
    x, y = x[:6], y[:6]
    gradcam = make_explainer("gradcam")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = gradcam(model, x, y).detach()
        mprt = randomisation_metrics.model_parameter_randomisation(model, x, maps, y, gradcam)
        logit = randomisation_metrics.random_logit(model, x, maps, y, gradcam)
    # Pass: the maps change when the weights or the class change.
    assert float(mprt.nanmean()) < 0.5 and float(logit.mean()) < 0.5
    edges = sobel(model, x, y)
    mprt = randomisation_metrics.model_parameter_randomisation(model, x, edges, y, sobel)
    logit = randomisation_metrics.random_logit(model, x, edges, y, sobel)
    # Fail: a map of the input alone is identical after randomisation and for another class.
    assert mprt.tolist() == pytest.approx([1.0] * 6)
    assert logit.tolist() == pytest.approx([1.0] * 6)


def test_evaluate_methods_with_metrics_gives_values_cis_and_ranks(bar_model, bar_test):
    images, labels, masks = bar_test
    images, labels, masks = images[:8], labels[:8], masks[:8]
    metrics = ["pixel_flipping", "faithfulness_correlation", "max_sensitivity",
               "relevance_rank_accuracy", "sparseness", "mprt", "deletion_auc"]  # fmt: skip
    report = evaluate_methods(
        bar_model, images, "gradcam", labels=labels, masks=masks, metrics=metrics, steps=8,
        metric_options={"nr_samples": 3, "nr_runs": 10}, memory_budget="64M", quiet=True,
    )  # fmt: skip
    row = report.scores["gradcam"]
    assert set(row) == set(metrics) and report.sanity == {}
    pf = row["pixel_flipping"]
    assert len(pf["values"]) == 8 and pf["mean"] == pytest.approx(sum(pf["values"]) / 8)
    assert pf["ci95"][0] <= pf["mean"] <= pf["ci95"][1]
    # Grad-CAM beats the random map on the faithfulness and localisation figures.
    view = report.comparison()
    ranks = view["methods"]["gradcam"]["ranks"]
    assert ranks["pixel_flipping"] == 1 and ranks["relevance_rank_accuracy"] == 1
    assert ranks["mprt"] == 1 and ranks["deletion_auc"] == 1
    assert view["methods"]["random"]["ranks"]["mprt"] == 2.5  # random and gaussian: both 1.0
    assert report.to_dict()["comparison"] == view
    text = report.comparison_table()
    assert "pixel flipping AUC ↓" in text and "mean rank" in text
    again = evaluate_methods(
        bar_model, images, "gradcam", labels=labels, masks=masks, metrics=metrics, steps=8,
        metric_options={"nr_samples": 3, "nr_runs": 10}, quiet=True,
    )  # fmt: skip
    assert again.scores == report.scores  # seeded, independent of the chunking


def test_unknown_metric_and_missing_inputs_are_config_errors(bar_model, bar_test):
    images = bar_test[0][:2]
    with pytest.raises(XaikitConfigError, match="unknown metric 'pixelflip'"):
        evaluate_methods(bar_model, images, "gradcam", metrics=["pixelflip"], quiet=True)
    with pytest.raises(XaikitConfigError, match="needs ground-truth masks"):
        run_metric("localisation_auc", None, images, images[:, 0], torch.zeros(2).long())
    with pytest.raises(XaikitConfigError, match="re-explains"):
        run_metric("max_sensitivity", bar_model, images, images[:, 0], torch.zeros(2).long())


def test_a_changed_prediction_marks_the_draw_nan_and_only_that_draw():
    """``return_nan_when_prediction_changes``: a draw whose predicted class differs from the
    clean input's is NaN; with the flag off the same draws give finite values."""
    from xaikit.evaluate.robustness import avg_sensitivity, max_sensitivity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 0.0]))
        model[1].weight[0, 0] = 1.0  # class 0 iff pixel 0 > 0: noise of 0.5 flips it
    x = torch.zeros(2, 3, 2, 2)
    x[0, 0, 0, 0] = 5.0  # far from the boundary: never flips
    x[1, 0, 0, 0] = 0.01  # at the boundary: flips on about half the draws
    targets = torch.zeros(2, dtype=torch.long)
    maps = torch.rand(2, 2, 2) + 0.1

    def explain_fn(xp, t):
        return maps[: xp.shape[0]] + xp[:, 0] * 0.1

    kwargs = {"nr_samples": 16, "lower_bound": 0.5, "seed": 3}
    flagged = avg_sensitivity(
        model, x, maps, targets, explain_fn, return_nan_when_prediction_changes=True, **kwargs
    )
    plain = avg_sensitivity(model, x, maps, targets, explain_fn, **kwargs)
    assert torch.isfinite(flagged[0]) and torch.isnan(flagged[1])
    assert torch.isfinite(plain).all()
    assert float(flagged[0]) == pytest.approx(float(plain[0]))
    worst = max_sensitivity(
        model, x, maps, targets, explain_fn, return_nan_when_prediction_changes=True, **kwargs
    )
    assert torch.isfinite(worst[0]) and torch.isnan(worst[1])
