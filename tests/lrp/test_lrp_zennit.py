"""xaikit.lrp against zennit 0.5.1 (the reference implementation): torchvision vgg16_bn and
resnet18 (random weights and BatchNorm statistics), zoo models, a DenseNet-like graph; every
built-in composite, with and without BatchNorm canonization.

zennit's merged BatchNorm computes ``x / sqrt(1 + eps)`` where xaikit's is exactly the
identity, so canonized results differ by ~1e-4 relative (Pearson > 0.99999); without
canonization (or with ``eps`` ~ 0) the two agree to float rounding.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

zennit = pytest.importorskip("zennit")
torchvision = pytest.importorskip("torchvision")

from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import (  # noqa: E402
    AttributeCanonizer,
    SequentialMergeBatchNorm,
)
from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
)
from zennit.layer import Sum  # noqa: E402
from zennit.rules import Norm  # noqa: E402
from zennit.torchvision import (  # noqa: E402
    ResNetBasicBlockCanonizer,
    ResNetBottleneckCanonizer,
    ResNetCanonizer,
)

import xaikit  # noqa: E402
from xaikit.lrp import lrp  # noqa: E402
from xaikit.zoo import ResidualBlock  # noqa: E402
from xaikit.zoo.heads import GlobalPool  # noqa: E402

ZENNIT = {
    "epsilon-plus": EpsilonPlus,
    "epsilon-plus-flat": EpsilonPlusFlat,
    "epsilon-gamma-box": EpsilonGammaBox,
    "epsilon-alpha2-beta1": EpsilonAlpha2Beta1,
    "epsilon-alpha2-beta1-flat": EpsilonAlpha2Beta1Flat,
}
COMPOSITES = list(ZENNIT)


def randomize_batchnorm(model: nn.Module, eps: float | None = None) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so merging matters."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_((torch.rand(c, generator=gen) - 0.5) * 0.4)
                if eps is not None:
                    m.eps = eps
    return model.eval()


def zennit_relevance(model, x, targets, name, canonizers, layer_map=None):
    kwargs = {"canonizers": canonizers}
    if layer_map:
        kwargs["layer_map"] = layer_map
    if name == "epsilon-gamma-box":
        kwargs.update(low=torch.zeros(1, x.shape[1], 1, 1), high=torch.ones(1, x.shape[1], 1, 1))
    composite = ZENNIT[name](**kwargs)
    with torch.no_grad():
        outputs = model(x).shape[1]
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, torch.eye(outputs)[targets])
    return relevance


def compare(model, x, targets, name, canonize, canonizers, layer_map=None):
    """(min Pearson over images, max |difference|, max |zennit relevance|)."""
    ours = lrp(model, x, targets, composite=name, canonize=canonize, start=torch.ones(len(x), 1))
    theirs = zennit_relevance(model, x, targets, name, canonizers, layer_map)
    a, b = ours.relevance[:, 0].flatten(1), theirs.flatten(1)
    pearson = min(float(torch.corrcoef(torch.stack([a[i], b[i]]))[0, 1]) for i in range(len(x)))
    return pearson, float((a - b).abs().max()), float(b.abs().max())


def check(result, canonized):
    pearson, diff, scale = result
    assert scale > 0
    if canonized:  # zennit's merged BatchNorm is x / sqrt(1 + eps), xaikit's the identity
        assert pearson >= 0.9999, result
        assert diff <= 3e-3 * scale, result
    else:
        assert pearson >= 0.99999, result
        assert diff <= 1e-5 * scale, result


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.vgg16_bn(num_classes=10))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.resnet18(num_classes=10))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


TARGETS = torch.tensor([3, 7])


@pytest.mark.parametrize("canonize", [True, False])
@pytest.mark.parametrize("name", COMPOSITES)
def test_vgg16_bn(vgg, images, name, canonize) -> None:
    canonizers = [SequentialMergeBatchNorm()] if canonize else []
    check(compare(vgg, images, TARGETS, name, canonize, canonizers), canonize)


@pytest.mark.parametrize("canonize", [True, False])
@pytest.mark.parametrize("name", COMPOSITES)
def test_resnet18(resnet, images, name, canonize) -> None:
    if canonize:
        canonizers = [ResNetCanonizer()]
    else:  # zennit splits the residual sums only with its ResNet block canonizers
        canonizers = [ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]
    check(compare(resnet, images, TARGETS, name, canonize, canonizers), canonize)


def test_vgg16_bn_canonized_exact_when_eps_vanishes(images) -> None:
    # With eps ~ 0 zennit's merged BatchNorm is the identity too: float-rounding agreement.
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.vgg16_bn(num_classes=10), eps=1e-12)
    pearson, diff, scale = compare(
        model, images, TARGETS, "epsilon-plus", True, [SequentialMergeBatchNorm()]
    )
    assert pearson >= 0.99999 and diff <= 1e-4 * scale


class ZooResidualCanonizer(AttributeCanonizer):
    """zennit's ResNet block canonizer, written for xaikit.zoo.ResidualBlock."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name, module):
        if isinstance(module, ResidualBlock):
            return {"forward": _zoo_forward.__get__(module), "canonizer_sum": Sum()}
        return None


def _zoo_forward(self, x):
    out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
    out = self.canonizer_sum(torch.stack([out, self.shortcut(x)], dim=-1))
    return self.act2(out)


@pytest.mark.parametrize("name", COMPOSITES)
def test_zoo_shapes_model(name) -> None:
    model, _ = xaikit.load_model("shapes-multiclass")
    model.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 4])
    layer_map = [(GlobalPool, Norm())]  # zennit does not know xaikit's global average pool
    for canonize in (True, False):
        canonizers = [SequentialMergeBatchNorm()] if canonize else []
        check(compare(model, x, targets, name, canonize, canonizers, layer_map), canonize)


@pytest.mark.parametrize("name", ["epsilon-plus", "epsilon-alpha2-beta1", "epsilon-gamma-box"])
def test_zoo_resnet_small(name) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(
        xaikit.create_model("resnet_small", num_classes=5, input_size=16, blocks_per_stage=1)
    )
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 3])
    layer_map = [(GlobalPool, Norm())]
    canonizers = [SequentialMergeBatchNorm(), ZooResidualCanonizer()]
    check(compare(model, x, targets, name, True, canonizers, layer_map), True)
    check(compare(model, x, targets, name, False, [ZooResidualCanonizer()], layer_map), False)


class DenseNetLike(nn.Module):
    """Dense connectivity: every block reads the concatenation of all earlier maps."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = block(3, 8)
        self.b1 = block(8, 4)
        self.b2 = block(12, 4)
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.b1(x)], dim=1)
        x = torch.cat([x, self.b2(x)], dim=1)
        return self.fc(self.pool(x).flatten(1))


@pytest.mark.parametrize("name", COMPOSITES)
def test_densenet_like_concatenation(name) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(DenseNetLike())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([2, 4])
    check(compare(model, x, targets, name, True, [SequentialMergeBatchNorm()]), True)
    check(compare(model, x, targets, name, False, []), False)
