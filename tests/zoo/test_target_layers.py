"""``layer="auto"`` picks the last spatial layer; names resolve or list the valid ones;
the capture hook mechanism removes every hook it adds."""

import pytest
import torch
import torchvision
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.explain.hooks import Capture, hook_count
from xaikit.explain.layers import auto_layer, resolve_layer


@pytest.mark.parametrize(
    ("arch", "shape", "expected"),
    [
        ("simple_cnn", (3, 32, 32), "features.block3"),
        ("vgg_small", (3, 32, 32), "features.stage3"),
        ("resnet_small", (3, 32, 32), "features.stage3"),
        ("simple_cnn1d", (1, 40), "features.block3"),
    ],
)
def test_auto_layer_is_the_last_block_of_features(arch, shape, expected):
    model = xaikit.create_model(arch, in_channels=shape[0])
    assert auto_layer(model, torch.zeros(1, *shape)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", "layer4"),
        ("vgg11", "features.20"),
        ("densenet121", "features.norm5"),
        ("mobilenet_v3_small", "features.12"),
        ("efficientnet_b0", "features.8"),
    ],
)
def test_auto_layer_on_torchvision_classifiers(name, expected):
    model = torchvision.models.get_model(name, num_classes=5)
    assert auto_layer(model, torch.zeros(1, 3, 64, 64)) == expected


def test_auto_layer_skips_a_logits_convolution():
    class LogitsConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.logits = nn.Conv2d(8, 4, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return self.pool(self.logits(self.body(x))).flatten(1)

    assert auto_layer(LogitsConvNet(), torch.zeros(1, 3, 16, 16)) == "body"


def test_auto_layer_does_not_change_the_model():
    model = xaikit.create_model("simple_cnn", widths=(4, 8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    auto_layer(model, torch.randn(1, 3, 16, 16))
    assert model.training and hook_count(model) == 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_wrong_layer_name_lists_the_closest_valid_ones():
    model = xaikit.create_model("simple_cnn")
    with pytest.raises(XaikitConfigError, match="closest: features.block3"):
        resolve_layer(model, "features.blok3")


def test_module_and_name_resolve_to_the_same_layer():
    model = xaikit.create_model("simple_cnn")
    assert resolve_layer(model, model.features.block2) == ("features.block2", model.features.block2)
    assert resolve_layer(model, "features.block2")[1] is model.features.block2
    with pytest.raises(XaikitConfigError, match="not part of this model"):
        resolve_layer(model, nn.Conv2d(1, 1, 1))


def test_capture_stops_the_forward_and_removes_its_hooks():
    model = xaikit.create_model("simple_cnn", widths=(4, 8)).eval()
    ran_head = []
    model.head.register_forward_hook(lambda *_: ran_head.append(True))
    hooks_before = hook_count(model)
    with Capture(model, {"b1": model.features.block1}, stop=True) as cap:
        assert cap.run(torch.randn(2, 3, 16, 16)) is None
        assert cap.activations["b1"].shape == (2, 4, 8, 8)
    assert not ran_head
    assert hook_count(model) == hooks_before


def test_capture_gradients_stop_at_the_layer_and_leave_parameters_alone():
    model = xaikit.create_model("simple_cnn", widths=(4, 8)).eval()
    x = torch.randn(2, 3, 16, 16)
    with Capture(model, {"f": model.features}, grad=True) as cap:
        logits = cap.run(x)
        (grads,) = torch.autograd.grad(logits[:, 1].sum(), cap.activations["f"])
    # Reference: the same gradient through the head alone.
    feats = model.features(x).detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(model.head(feats)[:, 1].sum(), feats)
    assert torch.allclose(grads, expected)
    assert all(p.grad is None for p in model.parameters())


def test_capture_survives_inplace_relu_after_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8, 1))
    x = torch.randn(1, 1, 4, 4)
    with Capture(model, {"conv": model[0]}, grad=True) as cap:
        out = cap.run(x)
        (grads,) = torch.autograd.grad(out.sum(), cap.activations["conv"])
    pre = model[0](x)
    assert torch.equal(cap.activations["conv"].detach(), pre.detach())  # not modified in place
    assert torch.allclose(grads, (pre > 0).float() * model[3].weight.reshape(1, 2, 2, 2))


def test_layer_that_never_runs_is_reported():
    model = xaikit.create_model("simple_cnn", widths=(4, 8))
    model.unused = nn.Conv2d(3, 3, 1)
    with (
        Capture(model, {"unused": model.unused}) as cap,
        pytest.raises(XaikitConfigError, match="never ran"),
    ):
        cap.run(torch.randn(1, 3, 8, 8))
    assert hook_count(model) == 0


def test_stored_activations_survive_inplace_ops_after_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Conv2d(2, 1, 1))
    x = torch.randn(1, 1, 5, 5)
    with Capture(model, {"conv": model[0]}) as cap:
        cap.run(x)
    with torch.no_grad():
        expected = model[0](x)
    assert (expected < 0).any()
    assert torch.equal(cap.activations["conv"], expected)


def test_keep_graph_capture_differentiates_back_to_the_input():
    model = xaikit.create_model("simple_cnn", widths=(4, 8)).eval()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    with Capture(model, {"b1": model.features.block1}, keep_graph=True, stop=True) as cap:
        cap.run(x)
        (grad,) = torch.autograd.grad(cap.activations["b1"][:, 1].sum(), x)
    reference = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model.features.block1(reference)[:, 1].sum(), reference)
    assert torch.allclose(grad, expected)
    assert hook_count(model) == 0
