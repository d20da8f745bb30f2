"""The gradient methods of xaikit.explain.gradients, wired into explain()."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import xaikit.explain as X
from xaikit.errors import XaikitConfigError
from xaikit.explain.gradients import GRADIENT_METHODS

pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")


@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_explain_returns_the_gradient_methods_raw_maps(zoo_multiclass, images, method):
    options = {
        "ig": {"steps": 4},
        "smoothgrad": {"samples": 3, "seed": 1},
        "occlusion": {"window": 4},
    }.get(method, {})
    result = X.explain(
        zoo_multiclass,
        images,
        method=method,
        target=[[1, 3]] * 4,
        return_result=True,
        **options,
    )
    direct = GRADIENT_METHODS[method](zoo_multiclass, images, torch.tensor([[1, 3]] * 4), **options)
    torch.testing.assert_close(result.raw, direct, atol=1e-5, rtol=1e-4)
    assert result.maps.shape == (4, 2, 16, 16) and result.layer is None
    assert result.maps.min() >= 0 and result.maps.max() <= 1


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_gradcam(zoo_multiclass, images):
    both = X.explain(
        zoo_multiclass,
        images,
        method=["guided-gradcam", "guided-backprop", "gradcam"],
        target=2,
        return_result=True,
    )
    cam = F.interpolate(
        both["gradcam"].raw.clamp_min(0), size=(16, 16), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(
        both["guided-gradcam"].raw, both["guided-backprop"].raw * cam, atol=1e-6, rtol=1e-5
    )
    assert both["guided-gradcam"].layer == "features.block2"
    alone = X.explain(zoo_multiclass, images, method="guided-gradcam", target=2)
    torch.testing.assert_close(alone, both["guided-gradcam"].heatmap)


def test_cam_and_gradient_methods_in_one_call_equal_separate_calls(zoo_multilabel, images):
    methods = ["gradcam", "saliency", "ig", "layercam"]
    together = X.explain(zoo_multilabel, images, method=methods, target="all", steps=4)
    for name in methods:
        options = {"steps": 4} if name == "ig" else {}
        alone = X.explain(zoo_multilabel, images, method=name, target="all", **options)
        torch.testing.assert_close(together[name], alone, atol=1e-5, rtol=1e-4)


def test_options_go_to_the_methods_that_take_them(zoo_multiclass, images):
    maps = X.explain(
        zoo_multiclass,
        images,
        method=["ig", "occlusion", "scorecam-fast"],
        steps=2,
        window=8,
        top_k=4,
    )
    assert set(maps) == {"ig", "occlusion", "scorecam-fast"}
    with pytest.raises(XaikitConfigError, match="unknown option"):
        X.explain(zoo_multiclass, images, method="saliency", steps=2)


def test_smoothgrad_is_seeded_and_leaves_the_global_rng_alone(zoo_multiclass, images):
    state = torch.get_rng_state()
    a = X.explain(zoo_multiclass, images, method="smoothgrad", samples=3, seed=5)
    b = X.explain(zoo_multiclass, images, method="smoothgrad", samples=3, seed=5)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_gradient_methods_work_through_the_output_selector(zoo_multiclass, images):
    class TupleOut(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = zoo_multiclass

        def forward(self, x):
            return {"logits": self.inner(x), "aux": x.mean()}

    wrapped = TupleOut().eval()
    for method in ("saliency", "inputxgrad", "guided-backprop"):
        torch.testing.assert_close(
            X.explain(wrapped, images, method=method, target=1),
            X.explain(zoo_multiclass, images, method=method, target=1),
        )
