"""Capture passes the layer's output on uncopied, and copies only for layers whose output the
rest of the network modifies in place (autograd error or version counter)."""

from __future__ import annotations

import torch
from torch import nn

import xaikit
from xaikit.explain.hooks import _MODIFIED_IN_PLACE, Capture


class Recorder(nn.Module):
    """Identity that remembers the tensor it was given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x


class InPlaceUnderNoGrad(nn.Module):
    """Modifies its input in place where autograd cannot see it (no error, version moves)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x.clamp_(min=0)
        return x


def _net(after: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        after,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def _conv_output(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net[0](x)


def test_output_goes_on_uncopied_when_nothing_modifies_it():
    net = _net(Recorder())
    x = torch.randn(2, 3, 8, 8)
    with Capture(net, {"0": net[0]}, grad=True) as capture:
        capture.run(x)
    stored = capture.activations["0"]
    assert net[1].seen is stored  # no copy: the leaf itself went on
    assert stored.is_leaf and stored.requires_grad
    assert net[0] not in _MODIFIED_IN_PLACE


def test_inplace_relu_after_the_layer_reruns_with_a_copy_and_is_remembered():
    net = _net(nn.ReLU(inplace=True))
    x = torch.randn(2, 3, 8, 8)
    expected = _conv_output(net, x)
    assert (expected < 0).any()
    calls = []
    handle = net[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        with Capture(net, {"0": net[0]}, grad=True) as capture:
            logits = capture.run(x)
        torch.testing.assert_close(capture.activations["0"], expected, rtol=0, atol=0)
        assert len(calls) == 2  # the first pass hit autograd's in-place error
        assert net[0] in _MODIFIED_IN_PLACE
        (grad,) = torch.autograd.grad(logits[:, 1].sum(), capture.activations["0"])
        # d logit / d A = relu'(A) * w / (h * w): zero where the conv output was negative
        assert torch.equal(grad[expected < 0], torch.zeros_like(grad[expected < 0]))
        calls.clear()
        with Capture(net, {"0": net[0]}, grad=True) as capture:
            capture.run(x)
        assert len(calls) == 1  # remembered: copied from the start
        torch.testing.assert_close(capture.activations["0"], expected, rtol=0, atol=0)
    finally:
        handle.remove()


def test_inplace_change_autograd_cannot_see_is_caught_by_the_version_counter():
    for grad in (True, False):
        net = _net(InPlaceUnderNoGrad())
        x = torch.randn(2, 3, 8, 8)
        expected = _conv_output(net, x)
        with Capture(net, {"0": net[0]}, grad=grad) as capture:
            capture.run(x)
        torch.testing.assert_close(capture.activations["0"], expected, rtol=0, atol=0)
        assert net[0] in _MODIFIED_IN_PLACE


def test_gradcam_is_the_same_with_an_inplace_relu_after_the_layer():
    plain, inplace = _net(nn.ReLU()), _net(nn.ReLU(inplace=True))
    inplace.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 8, 8)
    a = xaikit.explain(plain, x, method="gradcam", target=1, layer="0", return_result=True)
    b = xaikit.explain(inplace, x, method="gradcam", target=1, layer="0", return_result=True)
    c = xaikit.explain(inplace, x, method="gradcam", target=1, layer="0", return_result=True)
    torch.testing.assert_close(b.raw, a.raw, rtol=0, atol=0)
    torch.testing.assert_close(c.raw, a.raw, rtol=0, atol=0)
    assert (a.raw < 0).any()  # the layer's map is signed: the ReLU did not touch it
