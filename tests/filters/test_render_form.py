"""The fast form of a network for renders: the same function, the model given back."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xaikit.filters import maximize
from xaikit.filters.param import COLOR_DECORRELATION, _decorrelate
from xaikit.filters.render_form import find_pairs, render_form
from xaikit.filters.render_grads import ChannelSparseGrad, SpaceToDepth
from xaikit.filters.transforms import _affine_grid


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_given_back(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
        assert after[name].is_contiguous(), name  # the layout of the parameters is kept
    assert not any("forward" in m.__dict__ for m in model.modules())


def _randomized_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
    return model.eval().requires_grad_(False)


def _resnet18_trunk() -> nn.Sequential:
    torch.manual_seed(0)
    m = _randomized_bn(torchvision.models.resnet18(weights=None))
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3)


def test_resnet18_in_its_fast_form_computes_the_same_and_is_given_back():
    trunk = _resnet18_trunk()
    before = _state(trunk)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = trunk(x)
    with render_form(trunk, lambda: {"out": trunk(x[:2])}) as counts:
        with torch.no_grad():
            got = trunk(x)
        # every conv + BN pair of the trunk (stem, 2 x 2 x 3 blocks, 2 downsamples)
        assert counts == {"folded": 15, "channels_last": 15, "space_to_depth": 1, "pooled": 1}
        assert isinstance(trunk[1].__dict__.get("forward"), type(lambda: 0))
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= 1e-5 * scale
    assert got.shape == expected.shape
    _assert_given_back(trunk, before)


def test_only_what_runs_takes_the_form():
    """A render stopped at layer2 never runs layer3, layer4 or the head: their
    convolutions are not copied into a fast form."""
    from xaikit.explain.hooks import Capture

    torch.manual_seed(0)
    model = _randomized_bn(torchvision.models.resnet18(weights=None))
    x = torch.rand(2, 3, 64, 64)
    with Capture(model, {"layer2": model.layer2}, stop=True) as capture:

        def read():
            capture.run(x)
            return dict(capture.activations)

        with render_form(model, read) as counts:
            overridden = {m for m in model.modules() if "forward" in m.__dict__}
    # stem + layer1's 4 + layer2's 4 and its downsample: 10 convolutions, 10 BatchNorms
    assert counts == {"folded": 10, "channels_last": 10, "space_to_depth": 1, "pooled": 1}
    assert len(overridden) == 22  # and the stem's ReLU and max pooling
    assert not overridden & set(model.layer3.modules())


def test_the_model_is_given_back_when_the_render_raises():
    trunk = _resnet18_trunk()
    before = _state(trunk)
    x = torch.rand(2, 3, 32, 32)
    with (
        pytest.raises(RuntimeError, match="stopped"),
        render_form(trunk, lambda: {"out": trunk(x)}) as counts,
    ):
        assert counts["folded"] == 15
        raise RuntimeError("stopped")
    _assert_given_back(trunk, before)


class _Smooth(nn.Module):
    """A stem of stride 2 on 3 channels, BatchNorms and smooth activations (no ReLU or max
    pooling, whose gradients jump where float rounding moves a value past a tie)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.bn0(self.stem(x)))
        x = F.elu(self.bn1(self.conv(x)))
        return F.avg_pool2d(self.down(x), 2)


@pytest.mark.parametrize("options", [{}, {"channels_last": False}, {"fold": False}])
def test_the_input_gradient_is_the_networks(options):
    torch.manual_seed(0)
    model = _randomized_bn(_Smooth())
    x = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(2))

    def gradient() -> torch.Tensor:
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(leaf).pow(2).sum(), leaf)
        return grad

    expected = gradient()
    with render_form(model, lambda: {"out": model(x[:2])}, **options) as counts:
        got = gradient()
    assert counts["folded"] == (0 if options.get("fold") is False else 2)
    assert counts["space_to_depth"] == 1
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize(
    "channels,kernel,stride,padding,size",
    [
        (3, 7, 2, 3, (64, 64)),  # a ResNet stem
        (3, 3, 2, 1, (33, 21)),  # odd sides
        (1, 5, 3, 2, (31, 40)),
        (3, 4, 4, 0, (32, 32)),  # a patchify stem (ConvNeXt, ViT)
        (2, 3, 2, 0, (16, 16)),
    ],
)
def test_the_space_to_depth_gradient_equals_the_convolutions(
    channels, kernel, stride, padding, size
):
    torch.manual_seed(3)
    conv = nn.Conv2d(channels, 6, kernel, stride=stride, padding=padding).requires_grad_(False)
    x = torch.randn(2, channels, *size)
    with torch.no_grad():
        out = conv(x)
    grad = torch.randn_like(out)
    expected = torch.nn.grad.conv2d_input(
        x.shape, conv.weight, grad, stride=stride, padding=padding
    )
    form = SpaceToDepth.of(conv, conv.weight.detach())
    assert form is not None
    got = form.input_grad(grad, x.shape)
    assert got is not None and got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_a_geometry_that_needs_a_crop_falls_back_to_the_layers_own_backward():
    conv = nn.Conv2d(3, 4, 2, stride=2)  # a 5-pixel side: its last row is never read
    x = torch.randn(2, 3, 5, 5)
    form = SpaceToDepth.of(conv, conv.weight.detach())
    assert form is not None and form.input_grad(torch.ones(2, 4, 2, 2), x.shape) is None
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(conv(leaf).sum(), leaf)
    with render_form(conv, lambda: {"out": conv(x)}, channels_last=False) as counts:
        assert counts["space_to_depth"] == 1
        leaf = x.clone().requires_grad_(True)
        (got,) = torch.autograd.grad(conv(leaf).sum(), leaf)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("read", ["one", "two", "all"])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_the_sparse_input_gradient_equals_the_dense_one(read, stride, padding):
    """One (or two) channels per image get a gradient, as a channel objective gives them;
    ``all``: a dense gradient takes the dense backward."""
    torch.manual_seed(5)
    conv = nn.Conv2d(8, 32, 3, stride=stride, padding=padding).requires_grad_(False)
    x = torch.randn(4, 8, 11, 11)
    units = torch.tensor([3, 0, 31, 3])

    def objective(out: torch.Tensor) -> torch.Tensor:
        if read == "all":
            return out.pow(2).sum()
        rows = torch.arange(4)
        picked = out[rows, units].mean(dim=(1, 2))
        if read == "two":
            picked = picked + 0.5 * out[rows, (units + 7) % 32].sum(dim=(1, 2))
        return picked.sum()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return conv._conv_forward(x, conv.weight, conv.bias)

    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(objective(conv(leaf)), leaf)
    leaf = x.clone().requires_grad_(True)
    out = ChannelSparseGrad.apply(leaf, forward, conv, conv.weight)
    assert torch.equal(out, conv(x))
    (got,) = torch.autograd.grad(objective(out), leaf)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))


def test_pooling_before_the_relu_gives_the_same_values_and_gradients():
    """max(relu(x)) = relu(max(x)), and the gradient goes to the same place (to zero where a
    window holds no positive value): bit for bit, the ReLU on a quarter of the values."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(6, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    ).requires_grad_(False)  # fmt: skip
    model[0].bias.fill_(-1.0)  # many windows with no positive value
    x = torch.randn(3, 3, 24, 24)

    def values_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        leaf = x.clone().requires_grad_(True)
        out = model(leaf)
        (grad,) = torch.autograd.grad((out * torch.arange(out.shape[1])).sum(), leaf)
        return out.detach(), grad

    expected = values_and_gradient()
    options = dict(fold=False, channels_last=False, space_to_depth=False)
    with render_form(model, lambda: {"out": model(x[:2])}, **options) as counts:
        assert counts["pooled"] == 2
        got = values_and_gradient()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    with torch.no_grad():  # windows with no positive value, where the max moves
        assert float((F.max_pool2d(model[0](x), 3, 2, 1) <= 0).float().mean()) > 0.2


def test_a_relu_whose_output_is_also_read_elsewhere_keeps_its_place():
    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu, self.pool = nn.ReLU(), nn.MaxPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(x)
            return self.pool(y).sum(dim=(2, 3)) + y.mean(dim=(2, 3))

    model = Both()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    with render_form(model, lambda: {"out": model(x)}) as counts:
        assert counts["pooled"] == 0  # refused by the check: y.mean would read x unrectified
        assert torch.equal(model(x), expected)


def test_only_plain_strided_convolutions_on_few_channels_take_the_form():
    assert SpaceToDepth.of(nn.Conv2d(3, 4, 3, stride=1), torch.zeros(4, 3, 3, 3)) is None
    assert SpaceToDepth.of(nn.Conv2d(16, 4, 3, stride=2), torch.zeros(4, 16, 3, 3)) is None
    assert SpaceToDepth.of(nn.Conv2d(3, 6, 3, stride=2, groups=3), torch.zeros(6, 1, 3, 3)) is None
    assert SpaceToDepth.of(nn.Conv2d(3, 4, 3, stride=(2, 1)), torch.zeros(4, 3, 3, 3)) is None
    assert (
        SpaceToDepth.of(nn.Conv2d(3, 4, 3, stride=2, dilation=2), torch.zeros(4, 3, 3, 3)) is None
    )


class _SharedOutput(nn.Module):
    """The convolution's output feeds its BatchNorm and a second branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_fold_that_would_change_the_function_is_refused_by_the_check():
    model = _randomized_bn(_SharedOutput())
    x = torch.randn(2, 3, 16, 16)
    assert find_pairs(model, lambda: model(x)) == {model.conv: model.bn}  # found by the trace
    with torch.no_grad():
        expected = model(x)
    with render_form(model, lambda: {"out": model(x)}, channels_last=False) as counts:
        assert counts == {"folded": 0, "channels_last": 0, "space_to_depth": 0, "pooled": 0}
        assert not any("forward" in m.__dict__ for m in model.modules())
        with torch.no_grad():
            assert torch.equal(model(x), expected)


def test_only_the_change_that_alters_the_function_is_dropped():
    """A block whose fold would change the function beside blocks whose folds do not, and
    a ReLU read beside its pooling: the check drops those two changes and keeps the rest."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = _SharedOutput()  # its fold is refused
            self.relu, self.pool = nn.ReLU(), nn.MaxPool2d(2)  # its swap is refused
            self.body = nn.Sequential(
                nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.shared(x))
            return self.body(self.pool(y)) + y.mean()

    model = _randomized_bn(Mixed())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    with render_form(model, lambda: {"out": model(x)}, channels_last=False) as counts:
        assert counts == {"folded": 2, "channels_last": 0, "space_to_depth": 0, "pooled": 0}
        overridden = {m for m in model.modules() if "forward" in m.__dict__}
        assert overridden == {model.body[0], model.body[1], model.body[3], model.body[4]}
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_changes_that_pass_alone_but_not_together_are_all_dropped(monkeypatch):
    import xaikit.filters.render_form as form

    model = _randomized_bn(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    )
    x = torch.randn(2, 3, 12, 12)
    checks = []
    real = form._same

    def same(reference, now):  # as if the two folds only failed together
        checks.append(sum("forward" in m.__dict__ for m in model.modules()))
        return real(reference, now) and checks[-1] < 4

    monkeypatch.setattr(form, "_same", same)
    with render_form(model, lambda: {"out": model(x)}, channels_last=False) as counts:
        assert counts["folded"] == 0
        assert not any("forward" in m.__dict__ for m in model.modules())
    assert checks == [4, 2, 2]  # all, then each alone: both pass, so together they fail


def test_what_is_read_training_norms_and_subclasses_are_not_folded():
    class Standardized(nn.Conv2d):  # a weight-standardized convolution (timm's StdConv2d)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
            return self._conv_forward(x, w, self.bias)

    model = _randomized_bn(
        nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),  # read by the render: kept as it is
            nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),  # training mode: batch statistics
            Standardized(4, 4, 3), nn.BatchNorm2d(4),  # its own forward
            nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),  # folded
        )
    )  # fmt: skip
    model[3].train()
    x = torch.randn(2, 3, 20, 20)
    pairs = find_pairs(model, lambda: model(x), keep=[model[0]])
    assert pairs == {model[6]: model[7]}


def test_the_faster_transforms_equal_torchs():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    for height, width in ((128, 128), (7, 13), (1, 32)):
        expected = F.affine_grid(theta, [5, 3, height, width], align_corners=False)
        got = _affine_grid(theta, height, width)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    image = torch.randn(4, 3, 9, 11)
    assert torch.equal(
        _decorrelate(image), torch.einsum("bchw,dc->bdhw", image, COLOR_DECORRELATION)
    )


def test_a_render_in_the_fast_form_follows_the_plain_one():
    """On a smooth network float rounding is not amplified: the same images and scores."""
    torch.manual_seed(0)
    model = _randomized_bn(_Smooth())
    before = _state(model)
    common = dict(steps=8, size=40, seed=0, quiet=True)
    fast = maximize(model, "bn1", [0, 5, 9], **common)
    plain = maximize(model, "bn1", [0, 5, 9], fuse=False, **common)
    torch.testing.assert_close(fast.images, plain.images, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.score, plain.score, rtol=1e-5, atol=1e-6)
    _assert_given_back(model, before)


def test_a_resnet_render_in_the_fast_form_reaches_the_same_activations():
    """ReLU and max pooling make the gradient jump where rounding moves a value past a tie
    (as batching does), so images drift apart; the activations reached agree."""
    torch.manual_seed(0)
    model = _randomized_bn(torchvision.models.resnet18(weights=None))
    before = _state(model)
    common = dict(steps=24, size=64, seed=0, quiet=True)
    fast = maximize(model, "layer2", list(range(8)), **common)
    plain = maximize(model, "layer2", list(range(8)), fuse=False, **common)
    ratio = fast.score / plain.score
    assert float(ratio.median()) == pytest.approx(1.0, abs=0.01)
    assert float((ratio - 1).abs().max()) < 0.03
    assert bool((fast.gain > 0).all()) and not bool(fast.flat.any())  # the renders worked
    _assert_given_back(model, before)


def test_a_reflect_padded_last_convolution_keeps_its_own_backward():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(),
        nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect"),
    ).requires_grad_(False)  # fmt: skip
    x = torch.randn(2, 3, 12, 12)

    def gradient() -> torch.Tensor:
        leaf = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(leaf)[:, 3].sum(), leaf)[0]

    expected = gradient()
    with render_form(model, lambda: {"out": model(x)}):
        got = gradient()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))


def test_a_same_padded_last_convolution_renders_in_the_fast_form():
    """``padding="same"`` has no transposed form: the sparse gradient is not used there (it
    raised in the backward pass, which the forward-only probe check never runs)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding="same"), nn.Tanh(),
    ).eval()  # fmt: skip
    common = dict(steps=3, size=16, seed=0, quiet=True)
    fast = maximize(model, "3", [0, 4], **common)
    plain = maximize(model, "3", [0, 4], fuse=False, **common)
    torch.testing.assert_close(fast.images, plain.images, rtol=0, atol=1e-5)


def test_the_redirected_relu_keeps_its_place_before_the_pooling():
    """In a render's first steps a dead channel's gradient is let through the ReLU where it
    pushes towards firing; which input gets it depends on the ReLU coming first, so under
    that mode the swap is undone (it moved the gradient by 0.56 of 0.30)."""
    from xaikit.filters._relu import RedirectedReLU

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()
    model.requires_grad_(False)
    model[0].bias[0] = -50.0  # channel 0 is dead everywhere
    x = torch.randn(1, 3, 8, 8)

    def gradient() -> torch.Tensor:
        leaf = x.clone().requires_grad_(True)
        with RedirectedReLU():
            out = model(leaf)
        return torch.autograd.grad(-out[:, 0].sum(), leaf)[0]

    expected = gradient()
    assert float(expected.abs().max()) > 0  # the redirect reached the dead channel
    options = dict(channels_last=False, space_to_depth=False, sparse_grad=False)
    probe = torch.randn(2, 3, 8, 8)
    with render_form(model, lambda: {"out": model(probe)}, **options) as c:
        assert c["pooled"] == 1
        got = gradient()
    assert torch.equal(got, expected)


def test_a_convolution_the_render_reads_is_traced_though_the_pass_stops_at_it():
    from xaikit.explain.hooks import Capture
    from xaikit.filters.render_form import _trace

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3),
    ).eval()  # fmt: skip
    with Capture(model, {"2": model[2]}, stop=True) as capture:
        trace = _trace(model, lambda: capture.run(torch.randn(2, 3, 16, 16)), [model[2]])
    assert trace.ran == [model[0], model[2]] and trace.last is model[2]
