"""Feature maps: the captured outputs, stopped at the layer, ordered by mean activation."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.explain.hooks import hook_count
from xaikit.filters import activations


def _model():
    torch.manual_seed(0)
    return xaikit.create_model("simple_cnn", num_classes=3, input_size=16, widths=(6, 8, 10))


def test_maps_equal_a_hand_forward_through_the_blocks():
    model = _model().eval()
    x = torch.rand(4, 3, 16, 16)
    maps = activations(model, x, ["features.block1", "features.block2.conv"])
    assert list(maps) == ["features.block1", "features.block2.conv"]
    with torch.no_grad():
        block1 = model.features.block1(x)
        conv2 = model.features.block2.conv(block1)
    torch.testing.assert_close(maps["features.block1"], block1)
    torch.testing.assert_close(maps["features.block2.conv"], conv2)
    assert not maps["features.block1"].requires_grad


def test_the_forward_pass_stops_at_the_last_layer(monkeypatch):
    model = _model().eval()

    def boom(*_args):
        raise AssertionError("ran past the requested layer")

    monkeypatch.setattr(model.features.block3, "forward", boom)
    maps = activations(model, torch.rand(2, 3, 16, 16), "features.block2")
    assert maps["features.block2"].shape == (2, 8, 4, 4)


def test_normalization_is_applied_before_the_model():
    model = _model().eval()
    x = torch.rand(2, 3, 16, 16)
    norm = {"mean": [0.2, 0.4, 0.6], "std": [0.5, 0.25, 0.1]}
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    got = activations(model, x, "features.block1", normalization=norm)["features.block1"]
    expect = activations(model, (x - mean) / std, "features.block1")["features.block1"]
    torch.testing.assert_close(got, expect)


def test_order_is_by_decreasing_mean_activation_and_the_figure_follows_it():
    model = _model().eval()
    maps = activations(model, torch.rand(3, 3, 16, 16), "features.block2")
    means = maps["features.block2"][1].mean(dim=(1, 2))
    order = maps.order("features.block2", sample=1)
    assert torch.equal(order, torch.argsort(means, descending=True, stable=True))
    assert (means[order][:-1] >= means[order][1:]).all()
    fig = maps.figure(sample=1)
    assert isinstance(fig, Figure)
    labels = [t.get_text().split(":")[0] for t in fig.axes[0].texts]
    assert labels == [str(int(c)) for c in order]


def test_model_state_is_borrowed_and_hooks_removed():
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    activations(model, torch.rand(2, 3, 16, 16), ["features.block1", "features.block3"])
    assert model.training and hook_count(model) == 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_unknown_layer_names_raise():
    with pytest.raises(XaikitConfigError, match="no layer named"):
        activations(_model(), torch.rand(1, 3, 16, 16), "features.block7")


def test_in_place_operations_after_a_layer_do_not_change_its_stored_maps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(inplace=True), torch.nn.Conv2d(3, 2, 3)
    ).eval()
    x = torch.randn(2, 1, 8, 8)
    maps = activations(model, x, ["0", "2"])
    with torch.no_grad():
        torch.testing.assert_close(maps["0"], model[0](x))
    assert (maps["0"] < 0).any()
