"""Constant maps are reported by one warning whose counts and layer a caller can read."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import xaikit
from xaikit.explain import DegenerateMapsWarning, ExplainWarning
from xaikit.explain.engine import degenerate_message


def _model() -> nn.Module:
    """Class 0 is evidence for every activation, class 1 against every one: class 1's
    Grad-CAM is negative everywhere, so its ReLU'd map is constant (zero)."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2, 2),
    )  # fmt: skip
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].bias.fill_(0.1)
        model[4].weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
        model[4].bias.zero_()
    return model.eval()


def test_the_warning_carries_its_counts_and_layer():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = xaikit.explain(
            _model(), x, method=["gradcam", "saliency"], target=[0, 1, 1], layer="1",
            return_result=True, quiet=True,
        )  # fmt: skip
    (warning,) = [w.message for w in caught if isinstance(w.message, ExplainWarning)]
    assert isinstance(warning, DegenerateMapsWarning)
    assert result["gradcam"].degenerate[:, 0].tolist() == [False, True, True]
    assert warning.counts == {"gradcam": (2, 3), "saliency": (0, 3)}
    assert warning.layer == "1"
    assert str(warning) == degenerate_message(warning.counts, "1")
    assert str(warning).startswith("constant heatmaps (gradcam: 2 of 3) were returned as zeros")
    assert "at layer '1'" in str(warning)


def test_a_call_in_chunks_names_the_same_layer_as_one_call():
    """The memory budget splits a call; its warning must read as the unsplit call's (a
    cached explorer view's text must not depend on how its batch was cut)."""
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    texts = []
    for budget in (None, 1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            xaikit.explain(
                _model(), x, method=["saliency", "gradcam"], target=[0, 1, 1, 0], layer="1",
                memory_budget=budget, quiet=True,
            )  # fmt: skip
        (warning,) = [w.message for w in caught if isinstance(w.message, DegenerateMapsWarning)]
        texts.append(str(warning))
        assert warning.layer == "1"
    assert texts[0] == texts[1]


def test_the_warning_survives_pickling_and_copying():
    import copy
    import pickle

    warning = DegenerateMapsWarning({"gradcam": (1, 2)}, "layer4")
    for clone in (pickle.loads(pickle.dumps(warning)), copy.copy(warning)):
        assert (clone.counts, clone.layer, str(clone)) == (warning.counts, "layer4", str(warning))
