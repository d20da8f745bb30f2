"""Grad-CAM agrees with captum's LayerGradCam, an independent implementation."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam

import xaikit.explain as X


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@pytest.mark.parametrize("arch", ["zoo", "resnet18"])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gradcam_matches_captum_layergradcam(arch, zoo_multiclass):
    torch.manual_seed(0)
    if arch == "zoo":
        model, layer_name, size = zoo_multiclass, "features.block2", 16
        layer = model.features.block2
    else:
        model = torchvision.models.resnet18(num_classes=7).eval()
        layer_name, layer, size = "layer3", model.layer3, 64
    x = torch.randn(3, 3, size, size)
    target = torch.tensor([0, 3, 4])
    result = X.explain(
        model, x, method="gradcam", target=target, layer=layer_name, return_result=True
    )

    captum_raw = LayerGradCam(model, layer).attribute(x, target=target)  # (N, 1, h, w)
    torch.testing.assert_close(result.raw[:, 0], captum_raw[:, 0], atol=1e-5, rtol=1e-4)
    captum_maps = LayerAttribution.interpolate(
        captum_raw.clamp_min(0), (size, size), interpolate_mode="bilinear"
    )
    compared = 0
    for n in range(3):
        if result.degenerate[n, 0]:  # no positive evidence: captum's map is blank too
            assert captum_maps[n].max() == 0 and result.maps[n].max() == 0
            continue
        assert _pearson(result.maps[n, 0], captum_maps[n, 0]) >= 0.999
        compared += 1
    assert compared >= 2
