"""Receptive fields: analytic composition, checked by hand and against gradient support."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.filters import receptive_field
from xaikit.filters.receptive_field import ReceptiveField


def _compose(chain: list[tuple[int, int, int, int]]) -> tuple[int, int, int]:
    """Hand composition of (kernel, stride, padding, dilation) layers: (size, jump, start)."""
    size, jump, start = 1, 1, 0
    for kernel, stride, padding, dilation in chain:
        size += dilation * (kernel - 1) * jump
        start -= padding * jump
        jump *= stride
    return size, jump, start


def test_simple_cnn_fields_match_the_analytic_chain():
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=16, widths=(4, 4, 4))
    x = torch.zeros(1, 3, 16, 16)
    conv, pool = (3, 1, 1, 1), (2, 2, 0, 1)
    expected = {
        "features.block1.conv": [conv],
        "features.block1": [conv, pool],
        "features.block2.conv": [conv, pool, conv],
        "features.block2": [conv, pool, conv, pool],
        "features.block3": [conv, pool, conv, pool, conv],
    }
    for layer, chain in expected.items():
        size, jump, start = _compose(chain)
        field = receptive_field(model, layer, x)
        assert field == ReceptiveField((size, size), (jump, jump), (start, start)), layer
    # written out for the deepest block: 3 -> 4 -> 8 -> 10 -> 18 pixels, jump 4, start -7
    assert receptive_field(model, "features.block3", x) == ReceptiveField(
        (18, 18), (4, 4), (-7, -7)
    )


class _Chain(nn.Module):
    """Convolutions with stride, dilation and padding, average pooling and a residual join."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=2, dilation=2)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.skip = nn.Conv2d(2, 2, 1)
        self.c = nn.Conv2d(2, 2, (3, 5), stride=(1, 2), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        joined = self.pool(self.b(a)) + self.skip(a)
        return self.c(joined)


def _support(model: nn.Module, x: torch.Tensor, position: tuple[int, int]) -> list[tuple[int, int]]:
    """Rows and columns of the input that output ``position`` depends on (gradient != 0)."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[0, 0][position], x)
    nonzero = grad[0, 0].abs() > 0
    rows = nonzero.any(dim=1).nonzero().flatten()
    cols = nonzero.any(dim=0).nonzero().flatten()
    return [(int(rows.min()), int(rows.max()) + 1), (int(cols.min()), int(cols.max()) + 1)]


def test_field_equals_the_gradient_support_through_strides_dilation_and_a_residual_join():
    torch.manual_seed(0)
    model = _Chain()
    with torch.no_grad():  # positive weights: no cancellation, the support is the whole field
        for param in model.parameters():
            param.copy_(param.abs() + 0.1)
    x = torch.rand(1, 1, 40, 40)
    field = receptive_field(model, "c", x)
    # a: k3 s2 p1; then b (k3 d2 p2) -> pool (k3 p1) in parallel with skip (k1): the larger
    # branch; then c: (k3, k5) stride (1, 2) padding (0, 1).
    rows = _compose([(3, 2, 1, 1), (3, 1, 2, 2), (3, 1, 1, 1), (3, 1, 0, 1)])
    cols = _compose([(3, 2, 1, 1), (3, 1, 2, 2), (3, 1, 1, 1), (5, 2, 1, 1)])
    assert field == ReceptiveField((rows[0], cols[0]), (rows[1], cols[1]), (rows[2], cols[2]))
    out_shape = model(x).shape[2:]
    for position in [(0, 0), (3, 2), (out_shape[0] - 1, out_shape[1] - 1), (7, 5)]:
        box = field.boxes(torch.tensor(position))
        clipped = [(max(int(lo), 0), min(int(hi), 40)) for lo, hi in box]
        assert _support(model, x, position) == clipped, position


def test_resnet_stage_field_matches_gradient_support():
    torch.manual_seed(0)
    model = xaikit.create_model("resnet_small", num_classes=3, input_size=32, blocks_per_stage=1)
    model = model.eval()
    for module in model.modules():  # linear, positive network: the support is the field
        if isinstance(module, nn.ReLU):
            module.forward = lambda t: t  # type: ignore[method-assign]
        if isinstance(module, nn.Conv2d):
            with torch.no_grad():
                module.weight.copy_(module.weight.abs() + 0.01)
    x = torch.rand(1, 3, 32, 32)
    field = receptive_field(model, "features.stage2", x)
    wrapped = nn.Sequential(model.features.stem, model.features.stage1, model.features.stage2)
    for position in [(0, 0), (5, 9), (15, 15)]:
        box = field.boxes(torch.tensor(position))
        clipped = [(max(int(lo), 0), min(int(hi), 32)) for lo, hi in box]
        assert _support(_FirstChannelSum(wrapped), x, position) == clipped, position


class _FirstChannelSum(nn.Module):
    """Sum the channels into channel 0, so the support covers every channel's field."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).sum(dim=1, keepdim=True)


def test_crop_boxes_stay_inside_the_input_and_contain_the_clipped_field():
    field = ReceptiveField((10, 10), (4, 4), (-3, -3))
    positions = torch.tensor([[0, 0], [1, 2], [3, 3]])
    boxes = field.crop_boxes(positions, (16, 16))
    # position 0 sees [-3, 7): clipped [0, 7) -> window [0, 10); position 1 sees [1, 11);
    # position 3 sees [9, 19): clipped [9, 16) -> window [6, 16)
    assert boxes.tolist() == [[[0, 10], [0, 10]], [[1, 11], [5, 15]], [[6, 16], [6, 16]]]
    small = ReceptiveField((18, 18), (4, 4), (-7, -7)).crop_boxes(torch.tensor([[1, 1]]), (8, 8))
    assert small.tolist() == [[[0, 8], [0, 8]]]


def test_untraceable_layers_raise():
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=16, widths=(4, 4))
    with pytest.raises(XaikitConfigError, match="cannot trace"):
        receptive_field(model, "head", torch.zeros(1, 3, 16, 16))
