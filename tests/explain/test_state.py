"""Hooks and model state are borrowed: after any call the model is exactly as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit
import xaikit.explain as X
from xaikit.explain.hooks import hook_count

pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")
METHODS = ["gradcam", "gradcam++", "layercam", "eigencam", "scorecam-fast", "saliency"]


def _snapshot(model: nn.Module) -> dict:
    return {
        "hooks": hook_count(model),
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    }


def _assert_same(before: dict, model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["hooks"] == before["hooks"] == 0
    assert after["modes"] == before["modes"]
    assert after["flags"] == before["flags"]
    for a, b in zip(after["params"], before["params"]):
        assert torch.equal(a, b)
    for a, b in zip(after["buffers"], before["buffers"]):
        assert torch.equal(a, b)  # BatchNorm running statistics untouched
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)


def _mixed_state(model: nn.Module) -> nn.Module:
    """Train mode in part, some frozen parameters, some existing .grad."""
    model.train()
    model.features.block1.eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 7.0)
    return model


def test_every_method_leaves_no_hooks_and_restores_modes_flags_params_and_grads(images):
    model = _mixed_state(
        xaikit.create_model("simple_cnn", num_classes=5, widths=(8, 16), dropout=0.3)
    )
    before = _snapshot(model)
    X.explain(model, images, method=METHODS, target="all")
    _assert_same(before, model)


class Boom(RuntimeError):
    pass


def test_state_is_restored_after_an_exception_inside_forward(images):
    model = _mixed_state(xaikit.create_model("simple_cnn", num_classes=5, widths=(8, 16)))
    calls = []

    def explode(_module, _inputs, _output):
        calls.append(1)
        if len(calls) > 1:  # let the auto-layer trace pass, fail the explanation's forward
            raise Boom("inside forward")

    handle = model.head.register_forward_hook(explode)
    before = {**_snapshot(model), "hooks": 0}
    with pytest.raises(Boom):
        X.explain(model, images, method=["gradcam", "scorecam"])
    assert hook_count(model) == 1  # only the user's own hook remains
    handle.remove()
    _assert_same(before, model)


def test_no_grad_frozen_train_mode_call_equals_the_normal_eval_call(images):
    model = xaikit.create_model("simple_cnn", num_classes=5, widths=(8, 16), dropout=0.5)
    model.eval()
    reference = X.explain(model, images, method=METHODS, target="all", seed=0)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    before = _snapshot(model)
    with torch.no_grad():
        inside = X.explain(model, images, method=METHODS, target="all", seed=0)
    with torch.inference_mode():
        inference = X.explain(model, images, method=METHODS, target="all", seed=0)
    _assert_same(before, model)
    assert model.training
    for name in METHODS:
        torch.testing.assert_close(inside[name], reference[name])
        torch.testing.assert_close(inference[name], reference[name])


def test_two_explainers_used_in_turn_equal_each_alone(zoo_multiclass, images):
    alone_a = X.explain(zoo_multiclass, images, method="gradcam++", target=1)
    alone_b = X.explain(zoo_multiclass, images, method="layercam", target=3)
    a = X.GradCAMPlusPlus(zoo_multiclass)
    b = X.LayerCAM(zoo_multiclass, layer="features.block1")
    for _ in range(2):
        torch.testing.assert_close(a(images, target=1), alone_a)
        b(images, target=3)
    b = X.LayerCAM(zoo_multiclass)
    torch.testing.assert_close(b(images, target=3), alone_b)
    assert hook_count(zoo_multiclass) == 0


def test_gradients_never_reach_parameters(zoo_multiclass, images):
    for p in zoo_multiclass.parameters():
        assert p.grad is None
    X.explain(zoo_multiclass, images, method=["gradcam", "saliency"])
    assert all(p.grad is None for p in zoo_multiclass.parameters())
    assert all(p.requires_grad for p in zoo_multiclass.parameters())
