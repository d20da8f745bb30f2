"""Repeated use: no hook or memory is left behind, an exception inside the model's forward
leaves the model exactly as it was, and explainers used in turn do not affect each other."""

from __future__ import annotations

import gc
import os

import pytest
import torch
from torch import nn

import xaikit
from xaikit.explain import METHODS
from xaikit.explain.attention import ATTENTION_METHODS
from xaikit.explain.hooks import hook_count


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _snapshot(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "hooks": hook_count(model),
    }


def _assert_same(before: dict, model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["flags"] == before["flags"]
    assert after["hooks"] == before["hooks"]
    for name in ("params", "buffers"):
        for old, new in zip(before[name], after[name], strict=True):
            assert torch.equal(old, new), name
    for old, new in zip(before["grads"], after["grads"], strict=True):
        assert (old is None and new is None) or torch.equal(old, new)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_a_thousand_calls_leave_no_hooks_and_no_memory_behind(model):
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    methods = ["gradcam", "saliency", "layercam", "inputxgrad"]
    for i in range(20):  # warm-up: allocator pools, lazily built kernels
        xaikit.explain(model, images, method=methods[i % len(methods)])
    gc.collect()
    start = _rss_mb()
    for i in range(1000):
        heat = xaikit.explain(model, images, method=methods[i % len(methods)], target=i % 3)
        assert hook_count(model) == 0
    del heat
    gc.collect()
    growth = _rss_mb() - start
    assert growth < 50, f"resident memory grew by {growth:.1f} MB over 1,000 calls"
    assert all(p.grad is None for p in model.parameters())


def test_an_explainer_object_called_many_times_keeps_no_graph(model, images):
    cam = xaikit.explain.GradCAM(model)
    outputs = [cam(images, target=1) for _ in range(50)]
    assert hook_count(model) == 0
    for heat in outputs:
        assert not heat.requires_grad and heat.grad_fn is None
        assert torch.equal(heat, outputs[0])


class Boom(RuntimeError):
    pass


class Tripwire(nn.Module):
    """Passes its input on; raises :class:`Boom` on the ``fail_at``-th call."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Boom(f"forward call {self.calls}")
        return x


def _mixed_state_model(fail_at: int) -> nn.Module:
    """A zoo CNN in a state explaining must not disturb: train mode except one block, one
    frozen parameter, existing ``.grad`` on another, dropout and BatchNorm; with a tripwire
    inside ``features`` that raises on its ``fail_at``-th forward."""
    torch.manual_seed(0)
    model = xaikit.create_model(
        "simple_cnn", num_classes=3, widths=(4, 8), input_size=16, dropout=0.3
    )
    model.features.block2.add_module("tripwire", Tripwire(fail_at))
    model.train()
    model.features.block1.eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 7.0)
    return model


CNN_METHODS = [m for m in METHODS if m not in ATTENTION_METHODS]


def _mixed_state_vit(fail_at: int) -> nn.Module:
    """A tiny timm ViT in the same mixed state, the tripwire inside its first block."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3
    )
    model.blocks[0].add_module("tripwire", Tripwire(fail_at))
    model.blocks[0].ls1 = nn.Sequential(model.blocks[0].ls1, model.blocks[0].tripwire)
    model.train()
    model.blocks[1].eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 7.0)
    return model


@pytest.mark.parametrize("fail_at", [1, 2])
@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_an_exception_inside_a_transformer_forward_restores_it(images, method, fail_at):
    model = _mixed_state_vit(fail_at)
    fused = [getattr(block.attn, "fused_attn", None) for block in model.blocks]
    before = _snapshot(model)
    try:
        xaikit.explain(model, images, method=method, target="all")
    except Boom:
        pass
    else:
        assert model.blocks[0].tripwire.calls < fail_at
    _assert_same(before, model)
    assert [getattr(block.attn, "fused_attn", None) for block in model.blocks] == fused


@pytest.mark.parametrize("fail_at", [1, 2, 3])
@pytest.mark.parametrize("method", CNN_METHODS)
def test_an_exception_inside_forward_leaves_the_model_exactly_as_it_was(images, method, fail_at):
    model = _mixed_state_model(fail_at)
    before = _snapshot(model)
    options = {"steps": 4} if method == "ig" else {}
    options = {"samples": 3} if method == "smoothgrad" else options
    try:
        xaikit.explain(model, images, method=method, target="all", seed=0, **options)
    except Boom:
        pass
    else:  # the method ran fewer forward passes than fail_at: nothing was interrupted
        assert model.features.block2.tripwire.calls < fail_at
    _assert_same(before, model)


def test_an_exception_inside_the_target_callable_leaves_the_model_as_it_was(images):
    model = _mixed_state_model(fail_at=0)
    before = _snapshot(model)

    def target(_logits):
        raise Boom("in the target callable")

    with pytest.raises(Boom):
        xaikit.explain(model, images, method=["gradcam", "saliency"], target=target)
    _assert_same(before, model)


def test_two_explainer_objects_used_in_turn_give_what_each_gives_alone(model, images):
    alone_cam = xaikit.explain.GradCAM(model)(images, target=1)
    alone_saliency = xaikit.explain.Saliency(model)(images, target=2)
    cam = xaikit.explain.GradCAM(model)
    saliency = xaikit.explain.Saliency(model)
    for _ in range(3):
        assert torch.equal(cam(images, target=1), alone_cam)
        assert torch.equal(saliency(images, target=2), alone_saliency)
    assert hook_count(model) == 0


def test_methods_and_layers_interleaved_give_what_each_gives_alone(model, images):
    settings = [
        ("gradcam", "auto", 0),
        ("layercam", "features.block1", 1),
        ("guided-backprop", "auto", 2),
        ("scorecam", "features.block2", 0),
        ("smoothgrad", "auto", 1),
        ("gradcam++", "features.block1.conv", 2),
    ]
    alone = {}
    for method, layer, target in settings:
        fresh = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
        fresh.load_state_dict(model.state_dict())
        alone[method] = xaikit.explain(
            fresh.eval(), images, method=method, layer=layer, target=target, seed=3
        )
    for _ in range(2):
        for method, layer, target in reversed(settings):
            heat = xaikit.explain(model, images, method=method, layer=layer, target=target, seed=3)
            assert torch.equal(heat, alone[method]), method
    assert hook_count(model) == 0
