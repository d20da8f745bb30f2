"""Canonizers of xaikit.lrp: BatchNorm merging leaves the model bit-identical (also when the
call raises), the merged model computes the original function, residual sums split in
proportion, and what LRP cannot explain is refused with the module named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.lrp import Composite, Flat, ZPlus, lrp, make_composite, plan, residual_sum


def conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
        nn.BatchNorm1d(4),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict(keep_vars=True)
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key].detach(), value), key  # bit-identical
        assert after[key].dtype == value.dtype
    for module in model.modules():
        assert "forward" not in module.__dict__  # no override left behind
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_merge_keeps_parameters_bit_identical_and_the_function() -> None:
    net = conv_bn_net().train()  # training mode and requires_grad are given back too
    before = snapshot(net)
    flags = [p.requires_grad for p in net.parameters()]
    x = torch.randn(3, 3, 8, 8)
    out = lrp(net, x, [[0, 1, 2]] * 3, composite="epsilon-plus", canonize=True)
    assert_untouched(net, before)
    assert net.training and all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == flags
    # the canonized forward (merged layers, identity BatchNorms) gives the original logits
    net.eval()
    torch.testing.assert_close(out.scores, net(x)[:, :3].detach(), rtol=1e-5, atol=1e-5)
    # merging changes the relevance (BatchNorm no longer passes it through unchanged)
    unmerged = lrp(net, x, [[0, 1, 2]] * 3, composite="epsilon-plus", canonize=False)
    assert not torch.allclose(out.relevance, unmerged.relevance, atol=1e-4)
    torch.testing.assert_close(unmerged.scores, out.scores, rtol=1e-5, atol=1e-5)


def test_parameters_restored_when_the_call_raises() -> None:
    net = conv_bn_net().eval()
    before = snapshot(net)
    x = torch.randn(2, 3, 8, 8)

    def failing(batch: torch.Tensor) -> torch.Tensor:
        net(batch)
        raise RuntimeError("boom inside the explained forward")

    with pytest.raises(RuntimeError, match="boom"):
        lrp(net, x, 0, forward=failing, composite="epsilon-gamma-box", low=-4.0, high=4.0)
    assert_untouched(net, before)
    with pytest.raises(XaikitConfigError, match="out of range"):  # after the forward pass
        lrp(net, x, 9)
    assert_untouched(net, before)
    # and the model still explains normally afterwards
    assert lrp(net, x, 0).relevance.shape == (2, 1, 3, 8, 8)


def test_merge_formula() -> None:
    net = conv_bn_net().eval()
    p = plan(net, make_composite("epsilon-plus"), canonize=True)
    w, b = p.merged[net[0]]
    bn = net[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(w, net[0].weight * scale[:, None, None, None])
    torch.testing.assert_close(b, (0 - bn.running_mean) * scale + bn.bias)
    assert p.describe()["1"] == "merged" and p.describe()["0"] == "zplus"
    assert p.describe()["9"] == "epsilon" and p.describe()["10"] == "merged"
    assert p.describe()["7"] == "norm" and p.describe()["2"] == "pass"
    assert "3" not in p.describe()  # max-pooling: its gradient (winner takes all)


def test_residual_sum_splits_in_proportion() -> None:
    a = torch.tensor([1.0, 3.0, -2.0], requires_grad=True)
    b = torch.tensor([2.0, 1.0, 4.0], requires_grad=True)
    out = residual_sum(a, b, stabilizer=1e-12)
    assert torch.equal(out, torch.tensor([3.0, 4.0, 2.0]))
    ga, gb = torch.autograd.grad(out, (a, b), torch.tensor([6.0, 8.0, 1.0]))
    # R_a = a / (a + b) * R: [1/3 * 6, 3/4 * 8, -2/2 * 1]
    torch.testing.assert_close(ga, torch.tensor([2.0, 6.0, -1.0]))
    torch.testing.assert_close(gb, torch.tensor([4.0, 2.0, 2.0]))


def test_known_residual_blocks_are_split() -> None:
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(num_classes=3).eval()
    described = plan(resnet, make_composite("epsilon-plus")).describe()
    assert described["layer1.0"] == "residual-norm" and described["layer4.1"] == "residual-norm"
    assert described["layer2.0.downsample.1"] == "merged"
    zoo = xaikit.create_model("resnet_small", num_classes=4, input_size=16, blocks_per_stage=1)
    zoo.eval()
    before = snapshot(zoo)
    x = torch.rand(2, 3, 16, 16)
    out = lrp(zoo, x, [[0, 3]] * 2, composite="epsilon-plus", epsilon=1e-9, stabilizer=1e-9)
    torch.testing.assert_close(out.scores, zoo(x)[:, [0, 3]].detach(), rtol=1e-5, atol=1e-5)
    assert_untouched(zoo, before)


class UnknownResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return h * torch.sigmoid(h)


class WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.attn(x, x, x)[0].mean(1))


class MisorderedBN(nn.Module):
    """Registers conv then bn, but the BatchNorm reads the input, not the conv's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def head(features: nn.Module) -> nn.Module:
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()


def test_refusals_name_the_module() -> None:
    x = torch.rand(2, 3, 6, 6)
    net = head(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1))).eval()
    merged = r"BatchNorm '0\.0' \(BatchNorm2d\) cannot be merged"
    with pytest.raises(XaikitConfigError, match=merged):
        lrp(net, x, 0)
    assert lrp(net, x, 0, canonize=False).relevance.shape == (2, 1, 3, 6, 6)  # passes through
    net = head(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.BatchNorm2d(3)))
    with pytest.raises(XaikitConfigError, match=r"it follows '0\.1' \(ReLU\)"):
        lrp(net, x, 0)
    with pytest.raises(XaikitConfigError, match=r"'0' \(UnknownResidual\).*residual connection"):
        lrp(head(UnknownResidual()), x, 0)
    with pytest.raises(XaikitConfigError, match=r"'0' \(Gated\).*product of two computed"):
        lrp(head(Gated()), x, 0)
    with pytest.raises(XaikitConfigError, match=r"does not read the output of '0\.conv'"):
        lrp(head(MisorderedBN()), x, 0)
    with pytest.raises(XaikitConfigError, match=r"attention module 'attn' \(MultiheadAttention\)"):
        lrp(WithAttention().eval(), torch.rand(2, 5, 4), 0)
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)).eval()
    with pytest.raises(XaikitConfigError, match=r"no rule for '1' \(LayerNorm\)"):
        lrp(net, torch.rand(2, 4), 0)


def test_densenet_batchnorm_after_concatenation_is_refused() -> None:
    torchvision = pytest.importorskip("torchvision")
    densenet = torchvision.models.densenet121(num_classes=3).eval()
    with pytest.raises(
        XaikitConfigError,
        match=r"'features\.denseblock1\.denselayer1\.norm1' \(BatchNorm2d\) cannot be merged: "
        r"it follows 'features\.pool0' \(MaxPool2d\)",
    ):
        lrp(densenet, torch.rand(1, 3, 32, 32), 0)


def test_user_composite_by_name_and_type() -> None:
    net = conv_bn_net().eval()
    comp = Composite({"4": Flat(), nn.Conv2d: ZPlus(), nn.Linear: "epsilon"}, name="mine")
    described = plan(net, comp).describe()
    assert described["4"] == "flat" and described["0"] == "zplus" and described["9"] == "epsilon"
    x = torch.rand(2, 3, 8, 8)
    ours = lrp(net, x, 1, composite=comp).relevance
    # a plain mapping is a user composite too; the same rules give the same relevance
    mapped = lrp(net, x, 1, composite={"4": "flat", nn.Conv2d: "zplus", nn.Linear: "epsilon"})
    torch.testing.assert_close(ours, mapped.relevance)
    assert not torch.allclose(ours, lrp(net, x, 1, composite="epsilon-plus").relevance)
    # functional gating inside a layer-less forward is refused as well
    with pytest.raises(XaikitConfigError, match="product of two computed"):
        lrp(head(_FunctionalSilu()), torch.rand(1, 3, 4, 4), 0)


class _FunctionalSilu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return h * F.sigmoid(h)
