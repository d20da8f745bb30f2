"""captum's other attributions as xaikit methods (xaikit.explain.captum_methods): they agree with
captum's classes called directly on the same model, inputs, baselines, masks and seeds, answer
K targets like K single calls, are seeded, refuse models captum would get wrong, and leave the
model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    KernelShap,
    Lime,
)
from torch import nn

import xaikit
import xaikit.explain as X
from xaikit.errors import XaikitConfigError
from xaikit.explain.captum_methods import (
    CAPTUM_METHODS,
    deconvolution,
    deeplift,
    deepliftshap,
    feature_ablation,
    gradientshap,
    grid_segments,
    kernelshap,
    lime,
    slic_segments,
    superpixels,
)
from xaikit.explain.gradients import GRADIENT_METHODS, noise_seed
from xaikit.explain.hooks import hook_count

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning"),
]

SIZE = 64
TARGETS = torch.tensor([[1, 4], [3, 0]])


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def assert_agrees(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Per image and target: Pearson >= 0.999 and equal up to float rounding."""
    assert ours.shape == theirs.shape
    for n in range(ours.shape[0]):
        for k in range(ours.shape[1]):
            assert theirs[n, k].abs().max() > 0, "a blank reference map proves nothing"
            assert pearson(ours[n, k], theirs[n, k]) >= 0.999
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, atol=1e-5 * scale, rtol=1e-4)


@pytest.fixture(scope="module")
def shapes_model() -> nn.Module:
    return xaikit.load_model("shapes-multiclass")[0].eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _model(request, arch: str) -> nn.Module:
    return request.getfixturevalue("shapes_model" if arch == "zoo" else "resnet")


def _per_target(captum_call, targets: torch.Tensor) -> torch.Tensor:
    """Stack a captum call over the K target columns: ``(N, K, C, H, W)``."""
    return torch.stack([captum_call(targets[:, k]) for k in range(targets.shape[1])], dim=1)


def _seeded_per_input(captum_call, x: torch.Tensor, targets: torch.Tensor, seed: int):
    """captum per (input, target) under the documented seed ``noise_seed(seed, i)``."""
    rows = []
    for i in range(x.shape[0]):
        maps = []
        for k in range(targets.shape[1]):
            s = noise_seed(seed, i)
            torch.manual_seed(s)
            np.random.seed(s % (1 << 32))
            maps.append(captum_call(x[i : i + 1], int(targets[i, k]))[0])
        rows.append(torch.stack(maps))
    return torch.stack(rows)


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("arch", ["zoo", "resnet18"])
def test_deconvolution_and_feature_ablation_match_captum(request, arch, pictures):
    model = _model(request, arch)
    result = X.explain(model, pictures, method="deconvolution", target=TARGETS, return_result=True)
    theirs = _per_target(lambda t: Deconvolution(model).attribute(pictures, target=t), TARGETS)
    assert_agrees(result.raw, theirs.sum(2))  # documented rule: channel sum
    # ResNet reuses each block's nn.ReLU: fine for deconvolution (no stored activations).

    mask = grid_segments((SIZE, SIZE), 16)[None, None]
    ours = feature_ablation(model, pictures, TARGETS, segments=16)
    theirs = _per_target(
        lambda t: FeatureAblation(model).attribute(
            pictures, baselines=0.0, target=t, feature_mask=mask
        ),
        TARGETS,
    )
    assert_agrees(ours, theirs.mean(2))
    # one real number: the first cell's score drop, by hand
    ablated = pictures.clone()
    ablated[:, :, :16, :16] = 0
    with torch.no_grad():
        drop = model(pictures)[0, 1] - model(ablated)[0, 1]
    torch.testing.assert_close(ours[0, 0, 0, 0], drop, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["zoo", "resnet18"])
def test_gradientshap_matches_captum_under_the_same_seed(request, arch, pictures):
    model = _model(request, arch)
    refs = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    ours = gradientshap(model, pictures, TARGETS, seed=11, baselines=refs, n_samples=6, stdevs=0.05)
    theirs = _seeded_per_input(
        lambda x, t: GradientShap(model).attribute(
            x, baselines=refs, target=t, n_samples=6, stdevs=0.05
        ),
        pictures,
        TARGETS,
        11,
    )
    assert torch.equal(ours, theirs.sum(2))  # the same draws: bit-identical


@pytest.mark.parametrize("arch", ["zoo", "resnet18"])
def test_lime_and_kernelshap_match_captum_under_the_same_seed(request, arch, pictures):
    model = _model(request, arch)
    x, targets = pictures[:1], TARGETS[:1]
    mask = grid_segments((SIZE, SIZE), 16)[None, None]
    for ours_fn, make in (
        (lime, lambda: Lime(model, interpretable_model=SkLearnLinearRegression())),
        (kernelshap, lambda: KernelShap(model)),
    ):
        ours = ours_fn(model, x, targets, seed=2, segments=16, n_samples=40)
        theirs = _seeded_per_input(
            lambda xi, t, make=make: make().attribute(
                xi, baselines=torch.zeros_like(xi), target=t, feature_mask=mask, n_samples=40
            ),
            x,
            targets,
            2,
        )
        assert_agrees(ours, theirs.mean(2))
        assert len(torch.unique(ours[0, 0])) <= 16  # one value per superpixel


def test_deeplift_matches_captum_and_sums_to_the_score_difference(shapes_model, pictures):
    model = shapes_model
    result = X.explain(model, pictures, method="deeplift", target=TARGETS, return_result=True)
    zeros = torch.zeros_like(pictures)
    theirs = _per_target(
        lambda t: DeepLift(model).attribute(pictures, baselines=zeros, target=t), TARGETS
    )
    assert_agrees(result.raw, theirs.sum(2))
    assert hook_count(model) == 0
    assert not any(hasattr(m, "input") or hasattr(m, "output") for m in model.modules())


def test_deepliftshap_matches_captum_on_given_and_on_documented_baselines(shapes_model, pictures):
    model = shapes_model
    refs = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    ours = deepliftshap(model, pictures, TARGETS, baselines=refs)
    theirs = _per_target(
        lambda t: DeepLiftShap(model).attribute(pictures, baselines=refs, target=t), TARGETS
    )
    assert_agrees(ours, theirs.sum(2))

    # the default distribution: 3 black baselines + 0.1 * range * N(0, 1), seeded per input
    ours = deepliftshap(model, pictures, TARGETS, baselines=3, seed=4)
    for i in range(2):
        gen = torch.Generator().manual_seed(noise_seed(4, i))
        span = pictures[i].max() - pictures[i].min()
        dist = 0.1 * span * torch.randn((3, 3, SIZE, SIZE), generator=gen)
        theirs = DeepLiftShap(model).attribute(
            pictures[i : i + 1].expand(2, -1, -1, -1), baselines=dist, target=TARGETS[i]
        )
        assert_agrees(ours[i : i + 1], theirs.sum(1)[None])


def test_deeplift_and_deepliftshap_sum_to_the_score_differences_without_max_pooling():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()
    gen = torch.Generator().manual_seed(1)
    x, refs = torch.rand(2, 3, 16, 16, generator=gen), torch.rand(3, 3, 16, 16, generator=gen)
    ref = refs[0]
    with torch.no_grad():
        scores, ref_scores = model(x).gather(1, TARGETS), model(refs)
    one = deeplift(model, x, TARGETS, baseline=ref)
    torch.testing.assert_close(
        one.sum(dim=(2, 3)), scores - ref_scores[0][TARGETS], atol=1e-5, rtol=1e-4
    )
    shap = deepliftshap(model, x, TARGETS, baselines=refs)
    expected = scores - ref_scores.mean(0)[TARGETS]
    torch.testing.assert_close(shap.sum(dim=(2, 3)), expected, atol=1e-5, rtol=1e-4)


def test_deeplift_on_resnet18_reused_relus_are_refused(resnet, pictures):
    # captum itself: the second call of a block's nn.ReLU overwrites the first call's stored
    # input/output, its backward deletes them, and the first call's backward then raises.
    with pytest.raises(RuntimeError, match="used more than once"):
        DeepLift(resnet).attribute(pictures, baselines=0.0, target=1)
    for module in resnet.modules():  # ... and captum leaves its attributes behind
        for name in ("input", "output"):
            if name in module.__dict__:
                delattr(module, name)
    for method in ("deeplift", "deepliftshap"):
        with pytest.raises(XaikitConfigError, match=r"layer1\.0\.relu.*several times"):
            X.explain(resnet, pictures, method=method, target=1)
    assert hook_count(resnet) == 0
    assert not any("input" in m.__dict__ or "output" in m.__dict__ for m in resnet.modules())


# --------------------------------------------------------------------------- contract


def small(relu: str = "module") -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 4 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            h = self.act(h) if relu == "module" else F.relu(h)
            return self.fc(self.pool(h).flatten(1))

    torch.manual_seed(1)
    return Net().eval()


@pytest.mark.parametrize("method", sorted(CAPTUM_METHODS))
def test_k_targets_in_one_call_equal_k_single_calls(method):
    model = small()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    many = torch.tensor([[0, 2], [4, 1], [3, 3]])
    options = {"n_samples": 12} if method in ("lime", "kernelshap", "gradientshap") else {}
    fn = GRADIENT_METHODS[method]
    together = fn(model, x, many, seed=3, **options)
    assert together.shape == (3, 2, 8, 8)
    for k in range(2):
        alone = fn(model, x, many[:, k], seed=3, **options)
        torch.testing.assert_close(together[:, k], alone[:, 0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together[0, 0], together[0, 1])


@pytest.mark.parametrize("method", ["deepliftshap", "gradientshap", "lime", "kernelshap"])
def test_stochastic_methods_depend_on_their_seed_only(method):
    model = small()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    options = {"n_samples": 12} if method != "deepliftshap" else {}
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    a = X.explain(model, x, method=method, target=1, seed=5, return_result=True, **options).raw
    torch.manual_seed(123)  # the global RNG plays no part
    b = X.explain(model, x, method=method, target=1, seed=5, return_result=True, **options).raw
    c = X.explain(model, x, method=method, target=1, seed=6, return_result=True, **options).raw
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    torch_state = torch.get_rng_state()
    X.explain(model, x, method=method, target=1, seed=5, **options)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(u, v) for u, v in zip(np.random.get_state(), numpy_state))


def test_functional_relus_and_prob_scores_are_refused_for_hooked_methods():
    x = torch.randn(2, 3, 8, 8)
    for method in ("deeplift", "deepliftshap", "deconvolution"):
        with pytest.raises(XaikitConfigError, match="relu as function calls"):
            X.explain(small("functional"), x, method=method, target=0)
    with pytest.raises(XaikitConfigError, match="score='logit'"):
        X.explain(small(), x, method="deeplift", target=0, score="prob")
    with pytest.raises(XaikitConfigError, match="needs the nn.Module"):
        deeplift(lambda v: small()(v), x, torch.tensor([0, 1]))
    # the other methods take any forward, functional ReLUs included
    assert gradientshap(small("functional"), x, torch.tensor([0, 1])).abs().sum() > 0
    model = small()
    assert deconvolution(model, x, torch.tensor([0, 1])).abs().sum() > 0
    assert hook_count(model) == 0


def test_model_state_is_restored():
    model = small().train()
    model.conv.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    for name, fn in CAPTUM_METHODS.items():
        fn(
            model,
            x,
            torch.tensor([0, 1]),
            **({"n_samples": 8} if name in ("gradientshap", "lime", "kernelshap") else {}),
        )
    assert model.training and [p.requires_grad for p in model.parameters()] == [
        False,
        True,
        True,
        True,
    ]
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert hook_count(model) == 0
    assert not any("input" in m.__dict__ or "output" in m.__dict__ for m in model.modules())


# --------------------------------------------------------------------------- superpixels


def test_grid_segments_count_and_layout():
    grid = grid_segments((64, 64), 16)
    assert grid.shape == (64, 64) and int(grid.max()) == 15
    assert torch.equal(grid[::16, ::16], torch.arange(16).reshape(4, 4))
    assert torch.equal(torch.bincount(grid.flatten()), torch.full((16,), 256))
    assert int(grid_segments((10, 40), 16).max()) + 1 == 2 * 8  # cells follow the aspect
    assert int(grid_segments((40,), 64).max()) == 39  # capped at one position per cell


def test_user_segments_and_wrong_shapes(shapes_model, pictures):
    halves = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    halves[:, :, SIZE // 2 :] = 7  # labels need not be consecutive
    ours = feature_ablation(shapes_model, pictures, TARGETS[:, :1], segments=halves)
    right = pictures.clone()
    right[:, :, :, SIZE // 2 :] = 0
    with torch.no_grad():
        drop = shapes_model(pictures)[:, 1] - shapes_model(right)[:, 1]
    torch.testing.assert_close(ours[0, 0, 0, -1], drop[0], atol=1e-5, rtol=1e-4)
    assert len(torch.unique(ours[0, 0])) == 2
    for wrong in (torch.zeros(SIZE, SIZE + 1, dtype=torch.long), torch.zeros(3, SIZE, SIZE)):
        with pytest.raises(XaikitConfigError, match="segments must"):
            X.explain(shapes_model, pictures, method="lime", target=0, segments=wrong)
    with pytest.raises(XaikitConfigError, match=r"shaped \(N, \*S\) = \(2, 64, 64\)"):
        superpixels(pictures, torch.zeros(2, 32, 32, dtype=torch.long))


def test_slic_follows_colour_edges_that_the_grid_cuts():
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, :, 12:] = 1.0  # an edge at column 12, inside the grid's second cell column
    slic = slic_segments(image, 16)
    assert torch.equal(slic, slic_segments(image, 16))  # deterministic
    assert int(slic.max()) + 1 <= 16
    left, right = set(slic[0, :, :12].unique().tolist()), set(slic[0, :, 12:].unique().tolist())
    assert not left & right
    grid = grid_segments((32, 32), 16)
    assert set(grid[:, :12].unique().tolist()) & set(grid[:, 12:].unique().tolist())
    labels = superpixels(image, 16, "slic")
    assert torch.equal(labels, slic)
    with pytest.raises(XaikitConfigError, match="segmentation"):
        superpixels(image, 16, "watershed")
