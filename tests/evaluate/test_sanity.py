"""Sanity checks (Adebayo et al., 2018): cascading randomization and class contrast."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from evaluate_toys import IgnoresInput, input_gradient
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.evaluate import (
    cascade_layers,
    class_contrast,
    random_explainer,
    randomization_check,
    randomize_layer,
    sanity_check,
)
from xaikit.explain.hooks import hook_count

BAR_CASCADE = [
    "head.fc",
    "features.block2.bn",
    "features.block2.conv",
    "features.block1.bn",
    "features.block1.conv",
]


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    )


def assert_unchanged(model: nn.Module, before) -> None:
    state, modes, flags = before
    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert hook_count(model) == 0


def test_cascade_runs_from_the_head_down(bar_model, bar_test):
    images, _, _ = bar_test
    assert cascade_layers(bar_model, images[:1]) == BAR_CASCADE


def test_gradcam_maps_decorrelate_when_the_top_layers_are_random(bar_model, bar_test):
    images, _, _ = bar_test
    result = randomization_check(bar_model, images, "gradcam", seed=0)
    assert result.layers == BAR_CASCADE
    assert result.spearman.shape == (5, 32) and result.ssim.shape == (5, 32)
    means = result.spearman.mean(dim=1)
    assert means[1] < 0.5 and means[-1] < 0.5  # after 2 layers, and fully random
    assert result.ssim.mean(dim=1)[-1] < 0.5
    assert result.score == pytest.approx(float(means[1]))
    assert result.verdict == "pass" and result.top_layers == 2
    summary = result.to_dict()
    assert [row["layer"] for row in summary["cascade"]] == BAR_CASCADE
    assert summary["metric"]["higher_is_better"] is False


def test_input_gradient_explainer_also_decorrelates(bar_model, bar_test):
    images, _, _ = bar_test
    result = randomization_check(bar_model, images, input_gradient, max_layers=3, seed=0)
    assert len(result.layers) == 3
    assert float(result.spearman[-1].mean()) < 0.5


def test_the_users_model_is_bit_identical_afterwards(bar_test):
    images, _, _ = bar_test
    model = xaikit.create_model("simple_cnn", num_classes=4, widths=(8, 16), input_size=16)
    model.train()  # a model mid-training: mode and flags must come back as they were
    model.features.block1.conv.weight.requires_grad_(False)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        randomization_check(model, images[:8], "gradcam")
        randomization_check(model, images[:8], input_gradient, layer=model.features.block2)
        class_contrast(model, images[:8], "gradcam")
        class_contrast(model, images[:8], input_gradient)
    assert_unchanged(model, before)


def test_seeds_reproduce_and_the_global_rng_is_untouched(bar_model, bar_test):
    images, _, _ = bar_test
    rng = torch.get_rng_state()
    a = randomization_check(bar_model, images[:8], "gradcam", seed=3)
    b = randomization_check(bar_model, images[:8], "gradcam", seed=3)
    c = randomization_check(bar_model, images[:8], "gradcam", seed=4)
    class_contrast(bar_model, images[:8], "gradcam")
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(a.spearman, b.spearman) and torch.equal(a.ssim, b.ssim)
    assert not torch.equal(a.spearman, c.spearman)


def test_randomize_layer_draws_from_a_seeded_generator():
    conv = nn.Conv2d(3, 4, 3)
    first = nn.Conv2d(3, 4, 3)
    randomize_layer(conv, torch.Generator().manual_seed(7))
    randomize_layer(first, torch.Generator().manual_seed(7))
    assert torch.equal(conv.weight, first.weight) and torch.equal(conv.bias, first.bias)
    bound = 1 / math.sqrt(3 * 3 * 3)
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
    bn = nn.BatchNorm2d(4)
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(9.0)
    randomize_layer(bn, torch.Generator().manual_seed(7))
    assert torch.equal(bn.running_mean, torch.zeros(4))
    assert torch.equal(bn.running_var, torch.ones(4))
    assert bn.weight.abs().max() <= 1 and not torch.equal(bn.weight, torch.ones(4))
    with pytest.raises(XaikitConfigError, match="cannot randomize"):
        randomize_layer(nn.Embedding(3, 2), torch.Generator())


def test_class_contrast_passes_on_a_trained_model(bar_model, bar_test):
    images, _, _ = bar_test
    result = class_contrast(bar_model, images, "gradcam", k=3)
    assert result.classes.shape == (32, 3)
    assert result.dissimilarity.shape == (32, 3) and result.l1.shape == (32, 3)
    with torch.no_grad():
        top = bar_model(images).argsort(dim=1, descending=True)[:, 0]
    assert torch.equal(result.classes[:, 0], top)
    assert result.score > 0.5 and result.verdict == "pass"


@pytest.mark.parametrize("method", ["gradcam", "saliency", input_gradient])
def test_a_model_that_ignores_its_input_fails_class_contrast(method):
    model = IgnoresInput()
    images = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # explain warns about the all-zero maps
        result = class_contrast(model, images, method)
    assert result.score == 0.0 and float(result.l1.mean()) == 0.0
    assert result.verdict == "fail"


def test_model_independent_maps_fail_both_checks(bar_model, bar_test):
    images, _, _ = bar_test
    control = random_explainer(seed=1)
    randomization = randomization_check(bar_model, images[:8], control)
    contrast = class_contrast(bar_model, images[:8], control)
    assert randomization.score == 1.0 and randomization.verdict == "fail"
    assert contrast.score == 0.0 and contrast.verdict == "fail"


def test_sanity_check_combines_both_verdicts(bar_model, bar_test):
    images, _, _ = bar_test
    result = sanity_check(bar_model, images[:16], "gradcam")
    assert result.randomization.verdict == result.contrast.verdict == "pass"
    assert result.verdict == "pass"
    assert set(result.to_dict()) == {"verdict", "randomization", "class_contrast"}
    failing = sanity_check(bar_model, images[:16], random_explainer())
    assert failing.verdict == "fail"


def test_bad_arguments_raise_clear_errors(bar_model, bar_test):
    images, _, _ = bar_test
    with pytest.raises(XaikitConfigError, match="k >= 2"):
        class_contrast(bar_model, images[:2], "gradcam", k=5)
    with pytest.raises(XaikitConfigError, match="top_layers"):
        randomization_check(bar_model, images[:2], "gradcam", top_layers=0)
    with pytest.raises(XaikitConfigError, match="unknown method"):
        randomization_check(bar_model, images[:2], "grad-cam")
    with pytest.raises(XaikitConfigError, match="not part of this model"):
        randomization_check(bar_model, images[:2], "gradcam", layer=nn.Conv2d(1, 1, 1))
