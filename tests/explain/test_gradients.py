"""Gradient and perturbation attributions: agree with captum's classes called directly, answer
K targets like K single-target calls, keep completeness, are seeded without touching the global
RNG, and handle in-place / functional ReLUs for guided backprop."""

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import (
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
)
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.gradients import (
    GRADIENT_METHODS,
    gaussian_blur,
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    make_baseline,
    occlusion,
    reduce_channels,
    saliency,
    smoothgrad,
)
from xaikit.explain.hooks import hook_count

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def small_cnn(relu: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        relu(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        relu(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 5 * 6, 5),
    ).eval()


class InplaceNet(nn.Module):
    """ReLU modules in place, and a functional in-place ReLU (DenseNet style)."""

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = F.relu(self.conv2(x), inplace=self.inplace)
        return self.fc(x.mean(dim=(2, 3)))


class ModuleReluNet(nn.Module):
    """The same computation as InplaceNet with out-of-place ReLU *modules* only (captum's
    GuidedBackprop sees every ReLU here)."""

    def __init__(self, source: InplaceNet) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = source.conv1, source.conv2, source.fc
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 10, 12, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def targets() -> torch.Tensor:
    return torch.tensor([0, 3, 4, 1])


# --------------------------------------------------------------------------- captum agreement


def test_saliency_is_captum_saliency_max_over_channels(images, targets):
    model = small_cnn()
    ours = saliency(model, images, targets)
    ref = Saliency(model).attribute(images.clone().requires_grad_(), target=targets)
    ref = ref.abs().amax(dim=1)
    assert ours.shape == (4, 1, 10, 12)
    assert pearson(ours[:, 0], ref) >= 0.999
    torch.testing.assert_close(ours[:, 0], ref)


def test_input_x_gradient_is_captum_summed_over_channels(images, targets):
    model = small_cnn()
    ours = input_x_gradient(model, images, targets)
    ref = InputXGradient(model).attribute(images.clone().requires_grad_(), target=targets)
    assert pearson(ours[:, 0], ref.sum(dim=1)) >= 0.999
    torch.testing.assert_close(ours[:, 0], ref.sum(dim=1))


def test_integrated_gradients_is_captum_summed_over_channels(images, targets):
    model = small_cnn()
    ours = integrated_gradients(model, images, targets, steps=16)
    ref = IntegratedGradients(model).attribute(images, target=targets, n_steps=16)
    assert pearson(ours[:, 0], ref.sum(dim=1)) >= 0.999
    torch.testing.assert_close(ours[:, 0], ref.sum(dim=1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("window", "stride"), [(3, 2), ((2, 4), (1, 3))])
def test_occlusion_is_captum_occlusion(images, targets, window, stride):
    model = small_cnn()
    ours = occlusion(model, images, targets, window=window, stride=stride)
    win = (window, window) if isinstance(window, int) else window
    step = (stride, stride) if isinstance(stride, int) else stride
    ref = Occlusion(model).attribute(
        images, sliding_window_shapes=(3, *win), strides=(3, *step), target=targets
    )
    # the window covers every channel, so every channel holds the same value
    torch.testing.assert_close(ref[:, 0], ref[:, 2])
    torch.testing.assert_close(ours[:, 0], ref[:, 0], rtol=1e-4, atol=1e-6)


def test_guided_backprop_is_captum_guided_backprop_on_relu_modules(images, targets):
    model = small_cnn()
    ours = guided_backprop(model, images, targets, channel_reduce="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum announces its ReLU hooks
        ref = GuidedBackprop(model).attribute(images.clone().requires_grad_(), target=targets)
    torch.testing.assert_close(ours[:, 0], ref)
    torch.testing.assert_close(guided_backprop(model, images, targets)[:, 0], ref.sum(dim=1))


# --------------------------------------------------------------------------- K targets


@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_k_targets_equal_k_single_target_calls(method, images):
    model = small_cnn()
    fn = GRADIENT_METHODS[method]
    opts = {"seed": 7, "samples": 4} if method == "smoothgrad" else {}
    if method == "ig":
        opts = {"steps": 8}
    many = torch.tensor([[0, 2, 4], [1, 1, 3], [4, 0, 2], [3, 2, 1]])
    together = fn(model, images, many, **opts)
    assert together.shape == (4, 3, 10, 12)
    for k in range(3):
        alone = fn(model, images, many[:, k], **opts)
        torch.testing.assert_close(together[:, k], alone[:, 0], rtol=1e-5, atol=1e-7)
    # different classes give different maps
    assert not torch.allclose(together[:, 0], together[:, 2])


def test_batched_call_equals_per_image_calls(images, targets):
    model = small_cnn()
    cases = ((saliency, {}), (integrated_gradients, {"steps": 8}), (occlusion, {"window": 3}))
    for fn, opts in cases:
        batch = fn(model, images, targets, **opts)
        for i in range(images.shape[0]):
            single = fn(model, images[i : i + 1], targets[i : i + 1], **opts)
            torch.testing.assert_close(batch[i], single[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fn", [integrated_gradients, occlusion])
def test_internal_batch_size_does_not_change_the_result(fn, images, targets):
    model = small_cnn()
    opts = {"steps": 12} if fn is integrated_gradients else {"window": 3, "stride": 2}
    reference = fn(model, images, targets, internal_batch_size=1, **opts)
    for size in (7, 64, 10_000):
        torch.testing.assert_close(
            fn(model, images, targets, internal_batch_size=size, **opts),
            reference,
            rtol=1e-5,
            atol=1e-6,
        )


# --------------------------------------------------------------------------- IG & baselines


class SmoothNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def test_black_baseline_is_normalized_zeros():
    x = torch.rand(2, 3, 4, 5)
    base = make_baseline(x, "black", normalization=IMAGENET)
    mean = torch.tensor(IMAGENET["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET["std"]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(base, ((torch.zeros_like(x) - mean) / std).expand_as(x))
    torch.testing.assert_close(make_baseline(x, "black"), torch.zeros_like(x))


def test_ig_completeness_with_a_pixel_space_black_baseline():
    model = SmoothNet().eval()
    mean = torch.tensor(IMAGENET["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET["std"]).reshape(1, 3, 1, 1)
    x = (torch.rand(3, 3, 8, 8) - mean) / std  # normalized images
    t = torch.tensor([[0, 2], [1, 0], [2, 1]])
    attr = integrated_gradients(model, x, t, steps=64, normalization=IMAGENET)
    with torch.no_grad():
        gap = model(x) - model((torch.zeros_like(x) - mean) / std)
    expected = gap.gather(1, t)
    total = attr.sum(dim=(2, 3))
    assert torch.all((total - expected).abs() <= 0.01 * expected.abs())


def test_mean_and_blur_baselines_are_defined_in_pixel_space():
    x = torch.rand(2, 3, 9, 7)
    mean = torch.tensor(IMAGENET["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET["std"]).reshape(1, 3, 1, 1)
    normalized = (x - mean) / std
    for kind in ("mean", "blur"):
        torch.testing.assert_close(
            make_baseline(normalized, kind), (make_baseline(x, kind) - mean) / std
        )
    flat = make_baseline(x, "mean")
    torch.testing.assert_close(flat[:, :, 0, 0], x.mean(dim=(2, 3)))
    assert torch.all(flat == flat[:, :, :1, :1])
    blurred = make_baseline(x, "blur", blur_sigma=1.5)
    assert blurred.std() < x.std()
    torch.testing.assert_close(blurred.mean(), x.mean(), atol=0.02, rtol=0)


def test_gaussian_blur_of_a_constant_is_the_constant_and_of_an_impulse_sums_to_one():
    const = torch.full((1, 2, 6, 5), 0.3)
    torch.testing.assert_close(gaussian_blur(const, 2.0), const)
    impulse = torch.zeros(1, 1, 31)
    impulse[0, 0, 15] = 1.0
    blurred = gaussian_blur(impulse, 2.0)
    torch.testing.assert_close(blurred.sum(), torch.tensor(1.0))
    assert blurred.argmax() == 15


def test_tensor_and_constant_baselines_broadcast(images, targets):
    model = small_cnn()
    ref = Occlusion(model).attribute(
        images, sliding_window_shapes=(3, 3, 3), strides=(3, 3, 3), target=targets, baselines=0.5
    )
    ours_float = occlusion(model, images, targets, window=3, stride=3, baseline=0.5)
    ours_tensor = occlusion(
        model, images, targets, window=3, stride=3, baseline=torch.full((3, 10, 12), 0.5)
    )
    torch.testing.assert_close(ours_float[:, 0], ref[:, 0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours_tensor, ours_float)


# --------------------------------------------------------------------------- SmoothGrad


def test_smoothgrad_leaves_the_global_rng_untouched(images, targets):
    model = small_cnn()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    smoothgrad(model, images, targets, seed=5, samples=3)
    smoothgrad(model, images, targets, seed=None, samples=3)
    assert torch.equal(torch.get_rng_state(), before)


def test_smoothgrad_seed_reproduces_and_different_seeds_differ(images, targets):
    model = small_cnn()
    first = smoothgrad(model, images, targets, seed=11, samples=5)
    again = smoothgrad(model, images, targets, seed=11, samples=5)
    other = smoothgrad(model, images, targets, seed=12, samples=5)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_smoothgrad_without_noise_is_saliency(images, targets):
    model = small_cnn()
    torch.testing.assert_close(
        smoothgrad(model, images, targets, seed=0, samples=3, stdev=0.0),
        saliency(model, images, targets),
    )


def test_smoothgrad_noise_is_relative_to_each_inputs_range(images, targets):
    """Scaling an input by c and the model by 1/c scales the noise by c: maps scale by 1/c."""
    model = small_cnn()
    for i, scale in enumerate((10.0, 0.1)):
        one, target = images[i : i + 1], targets[i : i + 1]

        def rescaled(x: torch.Tensor, scale: float = scale) -> torch.Tensor:
            return model(x / scale)

        plain = smoothgrad(model, one, target, seed=3, samples=6)
        scaled = smoothgrad(rescaled, one * scale, target, seed=3, samples=6)
        torch.testing.assert_close(scaled, plain / scale, rtol=1e-4, atol=1e-7)


def test_smoothgrad_averages_out_noise_towards_a_smoother_map(images, targets):
    model = small_cnn()
    vanilla = saliency(model, images, targets)
    smooth = smoothgrad(model, images, targets, seed=0, samples=16, stdev=0.2)
    assert smooth.shape == vanilla.shape
    assert pearson(smooth, vanilla) > 0.3  # related to the gradient ...
    assert not torch.allclose(smooth, vanilla)  # ... but not equal to it


# --------------------------------------------------------------------------- guided backprop


def test_guided_backprop_handles_inplace_and_functional_relus(images):
    model = InplaceNet().eval()
    targets = torch.tensor([0, 3, 2, 1])
    reference_model = ModuleReluNet(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = guided_backprop(model, images, targets, channel_reduce="none")[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GuidedBackprop(reference_model).attribute(
            images.clone().requires_grad_(), target=targets
        )
    torch.testing.assert_close(ours, ref)
    vanilla = saliency(model, images, targets, channel_reduce="none")[:, 0]
    assert not torch.allclose(ours, vanilla, atol=1e-4)
    assert hook_count(model) == 0
    # the model still computes plain ReLUs afterwards
    torch.testing.assert_close(model(images), reference_model(images))


def test_guided_backprop_on_densenet121_differs_from_the_gradient():
    model = torchvision.models.densenet121(weights=None, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([[0, 3], [1, 2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guided = guided_backprop(model, x, t, channel_reduce="none")
    vanilla = saliency(model, x, t, channel_reduce="none")
    assert guided.shape == (2, 2, 3, 32, 32)
    assert torch.isfinite(guided).all() and guided.abs().sum() > 0
    assert pearson(guided, vanilla) < 0.99
    assert hook_count(model) == 0


# --------------------------------------------------------------------------- contract


def test_model_state_and_inputs_are_left_as_they_were(images, targets):
    model = small_cnn().train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    original = images.clone()
    for name, fn in GRADIENT_METHODS.items():
        fn(model, images, targets, **({"samples": 2} if name == "smoothgrad" else {}))
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(images, original) and not images.requires_grad
    assert hook_count(model) == 0


def test_methods_work_inside_no_grad_on_a_frozen_model(images, targets):
    model = small_cnn()
    expected = saliency(model, images, targets)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        got = saliency(model, images, targets)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_every_method_explains_1d_signals(method):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    x = torch.randn(3, 2, 40)
    out = GRADIENT_METHODS[method](model, x, torch.tensor([[0, 1], [2, 0], [1, 1]]))
    assert out.shape == (3, 2, 40)
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_reduce_channels_rules():
    a = torch.tensor([1.0, -3.0, 2.0]).reshape(1, 1, 3, 1)
    assert reduce_channels(a, "sum").item() == 0.0
    assert reduce_channels(a, "mean").item() == 0.0
    assert reduce_channels(a, "max_abs").item() == 3.0
    assert reduce_channels(a, "sum_abs").item() == 6.0
    assert reduce_channels(a, "none").shape == a.shape


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: saliency(m, x, torch.tensor([0, 1])), "(N, K) = (4, K)"),
        (lambda m, x: saliency(m, x, torch.tensor([0, 1, 2, 9])), "target index 9"),
        (lambda m, x: saliency(m, x, torch.tensor([0.0, 1, 2, 3])), "integer"),
        (lambda m, x: saliency(m, x[0, 0], torch.tensor([0])), "(N, C, *S)"),
        (lambda m, x: saliency(m, x, torch.zeros(4).long(), steps=3), "unknown option(s) steps"),
        (lambda m, x: saliency(m, x, torch.zeros(4).long(), channel_reduce="x"), "max_abs"),
        (lambda m, x: integrated_gradients(m, x, torch.zeros(4).long(), baseline="grey"), "blur"),
        (lambda m, x: integrated_gradients(m, x, torch.zeros(4).long(), steps=0), "positive"),
        (lambda m, x: occlusion(m, x, torch.zeros(4).long(), window=50), "larger"),
        (lambda m, x: occlusion(m, x, torch.zeros(4).long(), window=(2, 2, 2)), "2 positive"),
        (
            lambda m, x: integrated_gradients(
                m, x, torch.zeros(4).long(), normalization={"mean": [0.5, 0.5]}
            ),
            "'mean' and 'std'",
        ),
        (lambda m, x: saliency(lambda z: m(z)[:, None], x, torch.zeros(4).long()), "(N, num_"),
    ],
)
def test_misconfiguration_raises_a_clear_config_error(images, call, message):
    with pytest.raises(XaikitConfigError, match=None) as info:
        call(small_cnn(), images)
    assert message in str(info.value)
