"""Errors that say what to do, raised before any backward pass.

A misconfiguration (a layer that never runs, a target of the wrong shape, inputs the model
cannot take) raises :class:`~xaikit.XaikitConfigError` whose message names the fix. A custom
autograd function spliced into the model's output counts backward passes: it must not have
run when the error is raised.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit

ALL_METHODS = ["gradcam", "scorecam", "saliency", "ig", "guided-backprop", "occlusion"]


class _Record(torch.autograd.Function):
    """Identity whose backward counts its calls."""

    backward_calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        _Record.backward_calls += 1
        return grad


@pytest.fixture
def recorded(model):
    """The tiny CNN with a backward counter on its logits (and one on its input)."""
    handles = [
        model.head.fc.register_forward_hook(lambda _m, _i, out: _Record.apply(out)),
        model.features.register_forward_pre_hook(lambda _m, args: (_Record.apply(args[0]),)),
    ]
    _Record.backward_calls = 0
    yield model
    for handle in handles:
        handle.remove()


def test_the_backward_counter_sees_a_normal_call(recorded, images):
    xaikit.explain(recorded, images, method="gradcam")
    assert _Record.backward_calls >= 1
    _Record.backward_calls = 0
    xaikit.explain(recorded, images, method="saliency")
    assert _Record.backward_calls >= 1


def _refused(model, images, match: str | None, **kwargs) -> str:
    with pytest.raises(xaikit.XaikitConfigError, match=match) as info:
        xaikit.explain(model, images, **kwargs)
    assert _Record.backward_calls == 0, "a backward pass ran before the error"
    return str(info.value)


@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam", "guided-gradcam"])
def test_a_layer_that_never_runs_names_the_fix(recorded, images, method):
    recorded.spare = nn.Conv2d(8, 8, 1)  # registered, never called by forward
    message = _refused(
        recorded, images, "never ran in the forward pass", method=method, layer="spare"
    )
    assert "spare" in message and "choose a layer that the model calls" in message
    assert "xaikit layers" in message


@pytest.mark.parametrize(
    "target, expected",
    [
        (torch.tensor([0, 1, 2]), "one class per input, shape (2,)"),
        (torch.ones(2, 5), "must be (2, 3)"),
        (torch.zeros(3, 2, dtype=torch.long), "must be (2, K)"),
        (torch.zeros(2, 1, 1, dtype=torch.long), "(2,) or (2, K) tensor of class indices"),
        ([0, 1, 2], "one entry per input (2)"),
        (torch.tensor([[0, 5], [1, 2]]), "out of range"),
        ("hexagon", "pass class_names=[...]"),
        (lambda logits: logits[:, :2], "must be (2, 3)"),
    ],
)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_target_of_the_wrong_shape_names_the_expected_shape(
    recorded, images, method, target, expected
):
    assert expected in _refused(recorded, images, None, method=method, target=target)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_an_image_of_the_wrong_channel_count_names_the_fix(recorded, method):
    grey = torch.rand(2, 1, 16, 16)
    message = _refused(recorded, grey, "built for 3 input channels; got 1", method=method)
    assert "channels=3" in message and "in_channels=1" in message


@pytest.mark.parametrize(
    "images, match, fix",
    [
        (torch.rand(3, 16, 16), r"batch shaped \(N, C, H, W\)", "(N, C, H, W)"),
        (torch.rand(2, 3, 1, 1), "at least 2 pixels per side", "pools"),
        (torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8), "floating-point", "float"),
        ([[0.5]], "explained input must be a batch tensor", "(N, C, *S)"),
    ],
)
def test_inputs_the_model_cannot_take_name_what_it_needs(recorded, images, match, fix):
    message = _refused(recorded, images, match, method="gradcam")
    assert fix in message


def test_a_cuda_model_takes_inputs_from_the_cpu(model, images):
    """Documented: inputs are moved to the model's device. Without CUDA this runs the same
    check between the CPU and the ``meta`` device in the test below."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    expected = xaikit.explain(model, images)
    on_gpu = xaikit.explain(model.cuda(), images)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), expected, atol=1e-5, rtol=1e-4)


def test_inputs_on_a_device_without_data_are_refused_naming_the_devices(recorded, images):
    message = _refused(recorded, images.to("meta"), "meta", method="gradcam")
    assert "cpu" in message


def test_a_model_without_data_is_refused_naming_the_fix(model, images):
    with pytest.raises(xaikit.XaikitConfigError, match="meta"):
        xaikit.explain(model.to("meta"), images)
