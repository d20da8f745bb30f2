"""explain(), the explainer classes, normalization, degenerate maps and the result object."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from explain_nets import conv_by_hand
from torch import nn

import xaikit.explain as X
from xaikit.errors import XaikitConfigError
from xaikit.explain import ExplainWarning

CAMS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam"]
# Random-weight models give some all-negative CAMs; the warning itself is tested below.
pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")


def test_one_target_gives_n_h_w_maps_in_unit_range_and_many_targets_n_k_h_w(zoo_multiclass, images):
    heat = X.explain(zoo_multiclass, images)
    assert heat.shape == (4, 16, 16) and heat.device == images.device
    assert heat.min() >= 0 and heat.max() <= 1
    many = X.explain(zoo_multiclass, images, target="all")
    assert many.shape == (4, 5, 16, 16)


def test_several_methods_from_one_capture_equal_single_method_calls(zoo_multilabel, images):
    together = X.explain(
        zoo_multilabel, images, method=[*CAMS, "scorecam-fast"], target=[[0, 2, 5]] * 4
    )
    assert list(together) == [*CAMS, "scorecam-fast"]
    for name, maps in together.items():
        alone = X.explain(zoo_multilabel, images, method=name, target=[[0, 2, 5]] * 4)
        torch.testing.assert_close(maps, alone, atol=1e-5, rtol=1e-4)


def test_result_object_holds_raw_maps_targets_scores_and_probabilities(zoo_multiclass, images):
    result = X.explain(zoo_multiclass, images, target=[1, 2, 3, 4], return_result=True)
    with torch.no_grad():
        logits = zoo_multiclass(images)
    index = torch.tensor([[1], [2], [3], [4]])
    assert result.method == "gradcam" and result.layer == "features.block2"
    assert result.raw.shape == (4, 1, 8, 8) and result.maps.shape == (4, 1, 16, 16)
    assert result.targets.tolist() == index.tolist() and result.targets.dtype == torch.long
    torch.testing.assert_close(result.scores, logits.gather(1, index))
    torch.testing.assert_close(result.probabilities, logits.softmax(1).gather(1, index))
    assert result.raw.min() < 0  # raw maps are signed (before the ReLU)
    prob = X.explain(zoo_multiclass, images, target=[1, 2, 3, 4], score="prob", return_result=True)
    torch.testing.assert_close(prob.scores, prob.probabilities)
    assert prob.score == "prob"


def test_prob_scores_are_softmax_for_multiclass_and_sigmoid_for_multilabel(
    zoo_multiclass, zoo_multilabel, images
):
    def raw(model, score):
        return X.explain(model, images, target=1, score=score, return_result=True).raw

    # d softmax_1 / dA = p1 * (dz1/dA - sum_j p_j dz_j/dA); for a sigmoid: p1 (1 - p1) dz1/dA.
    with torch.no_grad():
        p = torch.sigmoid(zoo_multilabel(images))[:, 1]
    expected = raw(zoo_multilabel, "logit") * (p * (1 - p)).reshape(4, 1, 1, 1)
    torch.testing.assert_close(raw(zoo_multilabel, "prob"), expected, atol=1e-6, rtol=1e-4)
    all_logit = X.explain(zoo_multiclass, images, target="all", return_result=True).raw
    with torch.no_grad():
        q = zoo_multiclass(images).softmax(1)
    mixed = all_logit[:, 1] - (q.reshape(4, 5, 1, 1) * all_logit).sum(1)
    expected = q[:, 1].reshape(4, 1, 1) * mixed
    torch.testing.assert_close(raw(zoo_multiclass, "prob")[:, 0], expected, atol=1e-6, rtol=1e-4)


def test_to_numpy_and_save(zoo_multilabel, images, tmp_path):
    result = X.explain(
        zoo_multilabel, images, target="positive", return_result=True, class_names=list("abcdef")
    )
    arrays = result.to_numpy()
    assert set(arrays) == {
        "maps",
        "raw",
        "targets",
        "valid",
        "scores",
        "probabilities",
        "degenerate",
        "logits",
    }
    assert isinstance(arrays["maps"], np.ndarray)
    with torch.no_grad():
        np.testing.assert_allclose(arrays["logits"], zoo_multilabel(images).numpy(), atol=1e-6)
    path = result.save(tmp_path / "out")
    with np.load(path) as saved:
        np.testing.assert_array_equal(saved["maps"], arrays["maps"])
        np.testing.assert_array_equal(saved["targets"], arrays["targets"])
        np.testing.assert_array_equal(saved["logits"], arrays["logits"])
    meta = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert meta["method"] == "gradcam" and meta["layer"] == "features.block2"
    assert meta["target_names"][0][0] in list("abcdef")


# -- normalization -------------------------------------------------------------------------


def test_normalization_modes(zoo_multiclass, images):
    kw = {"target": "all", "return_result": True}
    plain = X.explain(zoo_multiclass, images, normalize=None, **kw)
    ok = ~plain.degenerate
    minmax = X.explain(zoo_multiclass, images, **kw).maps
    flat = minmax.flatten(2)
    assert torch.allclose(flat.amax(2)[ok], torch.ones(()))
    assert torch.allclose(flat.amin(2)[ok], torch.zeros(()))
    max_abs = X.explain(zoo_multiclass, images, normalize="max_abs", **kw).maps
    expected = plain.maps / plain.maps.flatten(2).amax(2)[..., None, None]
    torch.testing.assert_close(max_abs[ok], expected[ok])
    glob = X.explain(zoo_multiclass, images, normalize="global", **kw).maps
    lo, hi = plain.maps[ok].min(), plain.maps[ok].max()
    torch.testing.assert_close(glob[ok], (plain.maps[ok] - lo) / (hi - lo))


def test_global_normalization_keeps_the_ordering_across_inputs():
    # Logit = sum of the input: Grad-CAM at the input layer is the input itself.
    model = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(16, 1, bias=False)).eval()
    with torch.no_grad():
        model[2].weight.fill_(1.0)
    base = torch.rand(1, 1, 4, 4) + 0.1
    x = torch.cat([base, 3 * base])
    glob = X.explain(model, x, layer="0", target=0, normalize="global")
    expected = (x[:, 0] - x.min()) / (x.max() - x.min())
    torch.testing.assert_close(glob, expected)
    assert (glob[1] > glob[0]).all()
    assert glob[1].max() == 1.0
    minmax = X.explain(model, x, layer="0", target=0)
    torch.testing.assert_close(minmax[0], minmax[1])  # per-map scaling hides the factor 3


def test_bad_normalize_and_score_are_config_errors(zoo_multiclass, images):
    with pytest.raises(XaikitConfigError, match="normalize must be one of"):
        X.explain(zoo_multiclass, images, normalize="zscore")
    with pytest.raises(XaikitConfigError, match="score must be one of"):
        X.explain(zoo_multiclass, images, score="softmax")


# -- degenerate maps -----------------------------------------------------------------------


class ConstantFeatures(nn.Module):
    """Features that ignore the input (a constant map), then GAP + linear."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.fill_(1.0)
            self.fc.weight.fill_(sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("normalize", ["minmax", "max_abs", "global", None])
def test_constant_maps_are_zeros_flagged_and_warned_never_nan(images, normalize):
    model = ConstantFeatures().eval()
    with pytest.warns(ExplainWarning, match="constant heatmaps"):
        results = X.explain(
            model, images, method=CAMS, layer="features", normalize=normalize, return_result=True
        )
    for name, result in results.items():
        assert result.degenerate.all(), name
        assert torch.isfinite(result.maps).all(), name
        if normalize is not None:
            assert result.maps.abs().sum() == 0, name


def test_all_negative_evidence_is_flagged_and_gives_zeros(images):
    model = ConstantFeatures(sign=-1.0).eval()
    with torch.no_grad():
        model.features.weight.normal_()  # varied, mostly signed features
    with pytest.warns(ExplainWarning):
        result = X.explain(
            nn.Sequential(model.features, nn.ReLU(), _Head(model.fc)).eval(),
            images,
            layer="1",
            return_result=True,
        )
    # Positive activations times negative weights: no positive evidence anywhere.
    assert (result.raw <= 0).all() and result.degenerate.all()
    assert result.maps.abs().sum() == 0


class _Head(nn.Module):
    def __init__(self, fc: nn.Linear) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def test_normalize_maps_handles_nan_inf_and_constant_maps():
    maps = torch.stack(
        [
            torch.tensor([[0.0, 1.0], [2.0, 4.0]]),
            torch.full((2, 2), 3.0),
            torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]),
            torch.zeros(2, 2),
        ]
    ).unsqueeze(0)
    out, degenerate = X.normalize_maps(maps, "minmax")
    assert degenerate.tolist() == [[False, True, True, True]]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert out[0, 1:].abs().sum() == 0


# -- classes and errors --------------------------------------------------------------------


def test_explainer_classes_equal_explain_and_keep_no_state(zoo_multiclass, images):
    with X.GradCAM(zoo_multiclass) as cam, X.LayerCAM(zoo_multiclass, normalize=None) as lc:
        first = cam(images, target=2)
        other = lc.attribute(images, target=2)
        again = cam(images, target=2)
    torch.testing.assert_close(first, X.explain(zoo_multiclass, images, target=2))
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(
        other, X.explain(zoo_multiclass, images, "layercam", target=2, normalize=None)
    )
    with pytest.raises(XaikitConfigError, match="closed"):
        cam(images)
    multi = X.Explainer(zoo_multiclass, method=["gradcam", "hirescam"])
    assert set(multi(images)) == {"gradcam", "hirescam"}


def test_unknown_method_and_option_are_config_errors(zoo_multiclass, images):
    with pytest.raises(XaikitConfigError, match="unknown method"):
        X.explain(zoo_multiclass, images, method="gradcam+++")
    with pytest.raises(XaikitConfigError, match="unknown option"):
        X.explain(zoo_multiclass, images, method="scorecam", topk=3)
    with pytest.raises(XaikitConfigError, match="top_k must be"):
        X.explain(zoo_multiclass, images, method="scorecam-fast", top_k=0)


def test_the_package_itself_is_callable(zoo_multiclass, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(X(zoo_multiclass, images), X.explain(zoo_multiclass, images))


def test_a_registered_cam_method_runs_on_the_shared_capture(
    conv_flat_net, tiny_images, monkeypatch
):
    def abs_gradcam(a, g, _k):
        return X.cam.weighted_sum(a, g.abs().flatten(3).mean(dim=-1))

    monkeypatch.setitem(X.CAM_METHODS, "abs-gradcam", X.CamMethod("abs-gradcam", "-", abs_gradcam))
    both = X.explain(
        conv_flat_net,
        tiny_images,
        method=["gradcam", "abs-gradcam"],
        target=1,
        layer="act",
        return_result=True,
    )
    weights = conv_flat_net.fc.weight.detach()[1].reshape(3, 16).abs().mean(dim=1)  # (C,)
    for n in range(3):
        acts = conv_by_hand(conv_flat_net, tiny_images[n])
        expected = (weights[:, None, None] * acts).sum(dim=0)
        torch.testing.assert_close(both["abs-gradcam"].raw[n, 0], expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(XaikitConfigError, match="already registered"):
        X.register_cam_method(X.CAM_METHODS["gradcam"])
