"""Options of every CAM method: augmentation smoothing and eigen smoothing against
pytorch-grad-cam's ``aug_smooth`` / ``eigen_smooth``, and several layers fused.

Agreement is the per-image Pearson correlation of the heatmaps, >= 0.99. Eigen smoothing
agrees up to the principal component's sign, which pytorch-grad-cam leaves to the SVD and
xaikit orients along the unsmoothed map (checked too).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM, GradCAMElementWise, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.explain.postprocess import normalize_maps, to_heatmaps

pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")
os.environ.setdefault("XAIKIT_QUIET", "1")

SIZE = 64


def pearson(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    assert a.std() > 0 and b.std() > 0, "a constant map proves nothing"
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def predicted(resnet, pictures) -> list[int]:
    with torch.no_grad():
        return resnet(pictures).argmax(1).tolist()


def _explain(model, x, method, targets, layer, **options):
    return xaikit.explain(
        model, x, method=method, target=targets, layer=layer, return_result=True, **options
    )


PGC = {"gradcam": GradCAM, "layercam": LayerCAM, "gradcam++": GradCAMPlusPlus}


@pytest.mark.parametrize("method", list(PGC))
def test_aug_smooth_agrees_with_pytorch_grad_cam(resnet, pictures, predicted, method):
    with PGC[method](resnet, [resnet.layer3]) as cam:
        reference = cam(pictures, [ClassifierOutputTarget(t) for t in predicted], aug_smooth=True)
        plain = cam(pictures, [ClassifierOutputTarget(t) for t in predicted])
    result = _explain(resnet, pictures, method, predicted, "layer3", aug_smooth=True)
    assert result.raw.shape[-2:] == (4, 4)  # kept at the layer's resolution
    for i in range(3):
        assert pearson(result.heatmap[i], reference[i]) >= 0.99, i
    # Smoothing changes the map: the plain map is further from the smoothed reference.
    assert min(pearson(plain[i], reference[i]) for i in range(3)) < 0.99


@pytest.mark.parametrize(
    ("method", "cls"),
    [("gradcam", GradCAM), ("layercam", LayerCAM), ("gradcam-elementwise", GradCAMElementWise)],
)
def test_eigen_smooth_agrees_with_pytorch_grad_cam_up_to_sign(
    resnet, pictures, predicted, method, cls
):
    with cls(resnet, [resnet.layer3]) as cam:
        reference = cam(pictures, [ClassifierOutputTarget(t) for t in predicted], eigen_smooth=True)
    result = _explain(resnet, pictures, method, predicted, "layer3", eigen_smooth=True)
    plain = _explain(resnet, pictures, method, predicted, "layer3")
    flipped, _ = to_heatmaps(-result.raw, (SIZE, SIZE), relu=True)
    for i in range(3):
        best = max(pearson(result.heatmap[i], reference[i]), pearson(flipped[i, 0], reference[i]))
        assert best >= 0.99, i
        # The sign rule: the component correlates positively with the unsmoothed map.
        assert float((result.raw[i, 0] * plain.raw[i, 0]).sum()) > 0
        assert not torch.allclose(result.raw[i, 0], plain.raw[i, 0])


def test_eigen_smooth_applies_to_channel_weights_of_perturbation_methods(resnet, pictures):
    plain = _explain(resnet, pictures[:1], "ablationcam", 3, "layer4")
    smooth = _explain(resnet, pictures[:1], "ablationcam", 3, "layer4", eigen_smooth=True)
    assert smooth.raw.shape == plain.raw.shape
    assert float((smooth.raw * plain.raw).sum()) > 0
    assert pearson(smooth.raw, plain.raw) < 0.9999


# ------------------------------------------------------------------ several layers


@pytest.mark.parametrize("fuse", ["mean", "max", "product"])
def test_fused_layers_equal_the_hand_fused_single_layer_maps(resnet, pictures, predicted, fuse):
    layers = ["layer2", "layer3", "layer4"]
    methods = ["gradcam", "layercam", "ablationcam"]
    fused = xaikit.explain(
        resnet,
        pictures,
        method=methods,
        target=predicted,
        layer=layers,
        fuse=fuse,
        return_result=True,
    )
    for method in methods:
        result = fused[method]
        singles = [_explain(resnet, pictures, method, predicted, la).maps for la in layers]
        assert result.layer == "layer2+layer3+layer4"
        assert list(result.layer_maps) == layers
        for layer, single in zip(layers, singles):
            torch.testing.assert_close(result.layer_maps[layer], single, atol=1e-5, rtol=1e-4)
        stacked = torch.stack(singles)
        hand = {"mean": stacked.mean(0), "max": stacked.amax(0), "product": stacked.prod(0)}[fuse]
        expected, _ = normalize_maps(hand)
        torch.testing.assert_close(result.maps, expected, atol=1e-5, rtol=1e-4)
        assert result.raw.shape[-2:] == (SIZE, SIZE)
        # Fusing is no copy of one layer: each layer's map differs from the fused one.
        assert all(pearson(result.maps[0, 0], s[0, 0]) < 0.999 for s in singles)


def test_fused_layers_agree_with_pytorch_grad_cam_mean(resnet, pictures, predicted):
    with GradCAM(resnet, [resnet.layer3, resnet.layer4]) as cam:
        reference = cam(pictures, [ClassifierOutputTarget(t) for t in predicted])
    result = _explain(resnet, pictures, "gradcam", predicted, ["layer3", "layer4"])
    for i in range(3):
        assert pearson(result.heatmap[i], reference[i]) >= 0.99, i


def test_fused_layers_survive_chunking(resnet, pictures, predicted):
    whole = _explain(resnet, pictures, "gradcam", predicted, ["layer3", "layer4"])
    chunked = _explain(
        resnet, pictures, "gradcam", predicted, ["layer3", "layer4"], memory_budget="6M"
    )
    torch.testing.assert_close(chunked.maps, whole.maps, atol=1e-5, rtol=1e-4)
    for layer in ("layer3", "layer4"):
        torch.testing.assert_close(
            chunked.layer_maps[layer], whole.layer_maps[layer], atol=1e-5, rtol=1e-4
        )


def test_bad_options_are_refused(resnet, pictures):
    with pytest.raises(XaikitConfigError, match="fuse must be one of"):
        _explain(resnet, pictures[:1], "gradcam", 1, ["layer3", "layer4"], fuse="median")
    with pytest.raises(XaikitConfigError, match="aug_smooth must be True or False"):
        _explain(resnet, pictures[:1], "gradcam", 1, "layer4", aug_smooth="yes")
    with pytest.raises(XaikitConfigError, match="unknown option"):
        _explain(resnet, pictures[:1], "eigencam", 1, "layer4", eigen_smooth=True)
    with pytest.raises(XaikitConfigError, match="empty list"):
        _explain(resnet, pictures[:1], "gradcam", 1, [])
