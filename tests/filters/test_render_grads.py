"""The render form's own backward passes: the same gradients as the layers' own, and the
reused gradient buffer never handed out while something still holds it."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xaikit.filters.render_grads import GradientBuffer, PooledReLU, _pixel_shuffle

POOLS = [
    nn.MaxPool2d(3, 2, 1),  # a ResNet stem's
    nn.MaxPool2d(2),  # stride None: the kernel
    nn.MaxPool2d(3, 2, 0, ceil_mode=True),
    nn.MaxPool2d((3, 2), (1, 2), (1, 0), dilation=(2, 1)),
]


def _input(layout: torch.memory_format) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 5, 11, 10).contiguous(memory_format=layout)


@pytest.mark.parametrize("pool", POOLS, ids=repr)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("rectify", [True, False])
def test_the_pooled_relu_gives_the_layers_own_values_and_gradients(pool, layout, rectify):
    x = _input(layout).requires_grad_(True)
    expected = F.relu(pool(x)) if rectify else pool(x)
    weights = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)

    got = PooledReLU.apply(x, pool, GradientBuffer(), rectify)
    (grad,) = torch.autograd.grad((got * weights).sum(), x)

    assert torch.equal(got, expected)
    assert torch.equal(grad, expected_grad)  # bit for bit: the same kernels
    assert grad.stride() == x.stride()
    if rectify:
        assert bool((got >= 0).all()) and bool((got == 0).any())


def _backward(x: torch.Tensor, buffer: GradientBuffer, scale: float) -> None:
    y = PooledReLU.apply(x * 1, POOLS[0], buffer)
    (y * scale).sum().backward()


def test_the_buffer_is_reused_step_after_step():
    x = _input(torch.channels_last).requires_grad_(True)
    buffer = GradientBuffer()
    pointers = set()
    for step in range(3):
        _backward(x, buffer, float(step + 1))
        pointers.add(buffer._tensor.data_ptr())
    assert len(pointers) == 1
    # the leaf's gradient is accumulated into its own tensor, not the buffer
    assert x.grad.data_ptr() not in pointers
    expected = x.detach().requires_grad_(True)
    (6 * F.relu(POOLS[0](expected))).sum().backward()
    assert torch.equal(x.grad, expected.grad)


def test_a_gradient_someone_kept_is_not_overwritten():
    x = _input(torch.channels_last).requires_grad_(True)
    buffer = GradientBuffer()
    kept = []
    hooked = x * 1
    hooked.register_hook(kept.append)  # keeps the pooling's input gradient itself
    PooledReLU.apply(hooked, POOLS[0], buffer).sum().backward()
    assert kept[0] is buffer._tensor
    before = kept[0].clone()

    _backward(x, buffer, 3.0)
    assert torch.equal(kept[0], before)
    assert buffer._tensor.data_ptr() != kept[0].data_ptr()

    view = buffer._tensor[0]  # a view of the buffer holds its memory
    before = view.clone()
    _backward(x, buffer, 5.0)
    assert torch.equal(view, before)

    del kept[:], view
    held = buffer._tensor.data_ptr()
    _backward(x, buffer, 7.0)  # released: reused again
    assert buffer._tensor.data_ptr() == held


def test_a_new_shape_gets_a_new_buffer():
    buffer = GradientBuffer()
    first = buffer.like(torch.empty(2, 3, 4, 4)).data_ptr()
    assert buffer.like(torch.empty(2, 3, 4, 4)).data_ptr() == first  # nobody held it
    held = buffer.like(torch.empty(2, 3, 4, 4))
    assert buffer.like(torch.empty(2, 3, 4, 4)) is not held  # the caller still holds it
    strided = buffer.like(torch.empty(2, 3, 4, 4).contiguous(memory_format=torch.channels_last))
    assert strided.stride() == (48, 1, 12, 3)
    assert buffer.like(torch.empty(2, 3, 4, 4, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("shape", "s"), [((2, 12, 5, 7), 2), ((1, 27, 4, 4), 3), ((3, 4, 1, 1), 2)]
)
def test_the_channels_last_pixel_shuffle_is_pixel_shuffle(shape, s):
    n, c, h, w = shape
    phases = torch.randn(n, h, w, c).permute(0, 3, 1, 2)  # channels-last, as oneDNN gives
    assert torch.equal(_pixel_shuffle(phases, s), F.pixel_shuffle(phases, s))
    assert torch.equal(_pixel_shuffle(phases.contiguous(), s), F.pixel_shuffle(phases, s))


def test_a_second_derivative_goes_through_the_plain_ops():
    """With ``create_graph=True`` the backward runs the pooling's differentiable op (no
    reused buffer, which autograd cannot record): the same second derivative as PyTorch's."""
    x = _input(torch.channels_last).requires_grad_(True)
    weights = torch.randn(2, 5, 6, 5)
    results = []
    for layer in (
        lambda t: F.relu(POOLS[0](t)),
        lambda t: PooledReLU.apply(t, POOLS[0], GradientBuffer()),
    ):
        (grad,) = torch.autograd.grad((layer(x * x) * weights).sum(), x, create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), x)
        results.append((grad, second))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=1e-6)
    assert float(results[1][1].abs().max()) > 0


def test_without_the_reference_queries_nothing_is_reused(monkeypatch):
    def handed_out_twice() -> bool:
        buffer = GradientBuffer()
        first = weakref.ref(buffer.like(torch.empty(2, 3, 4, 4)))  # only the buffer holds it
        return buffer.like(torch.empty(2, 3, 4, 4)) is first()

    assert handed_out_twice()
    monkeypatch.delattr(torch._C, "_storage_Use_Count")  # an older torch
    assert not handed_out_twice()


def test_a_render_through_the_pooled_relu_is_the_render_through_the_layers_own_ops(
    monkeypatch,
):
    """maximize on a ResNet stem in its fast form, with and without the buffered pooling:
    the same images, bit for bit, over the redirected-ReLU steps and the plain ones, and the
    pooling's gradient buffer is used (one allocation for all steps)."""
    import torchvision

    import xaikit.filters.render_form as form
    from xaikit.filters import maximize

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    model = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1)
    options = dict(steps=6, size=48, seed=0, quiet=True, redirect_relu=3)
    allocations = []
    real_like = GradientBuffer.like

    def counted(self, x):
        before = id(self._tensor)  # no reference kept: one would block the reuse
        out = real_like(self, x)
        if id(out) != before:  # a new tensor (made while the old one was still held)
            allocations.append(out.shape)
        return out

    monkeypatch.setattr(GradientBuffer, "like", counted)
    buffered = maximize(model, "4", [0, 3, 5], **options).images
    assert allocations == [torch.Size([3, 64, 24, 24])]  # once, then reused

    def plain(x, pool, buffer, rectify=True):  # the layers' own ops, autograd's backward
        pooled = nn.MaxPool2d.forward(pool, x)
        return torch.relu(pooled) if rectify else pooled

    monkeypatch.setattr(form.PooledReLU, "apply", plain)
    assert torch.equal(maximize(model, "4", [0, 3, 5], **options).images, buffered)
