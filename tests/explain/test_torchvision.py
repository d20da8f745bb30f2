"""torchvision classifiers work as they come: auto layer, in-place ReLUs, borrowed state."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import LayerGradCam

import xaikit.explain as X
from xaikit.explain.hooks import hook_count

pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")

ARCHS = [
    ("resnet18", "layer4"),
    pytest.param("densenet121", "features.norm5", marks=pytest.mark.slow),
    ("mobilenet_v3_small", "features.12"),
    pytest.param("efficientnet_b0", "features.8", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("arch", "layer"), ARCHS)
def test_torchvision_auto_layer_and_gradcam(arch, layer):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    result = X.explain(model, x, target=[[1, 4]] * 2, return_result=True)
    assert result.layer == layer
    assert result.maps.shape == (2, 2, 64, 64)
    assert torch.isfinite(result.maps).all()
    assert result.maps.min() >= 0 and result.maps.max() <= 1
    assert hook_count(model) == 0 and not model.training
    # The same numbers as captum's LayerGradCam at that layer (in-place ReLUs after it).
    module = dict(model.named_modules())[layer]
    for k, cls in enumerate([1, 4]):
        reference = LayerGradCam(model, module).attribute(x, target=cls)[:, 0]
        torch.testing.assert_close(result.raw[:, k], reference, atol=1e-5, rtol=1e-4)
