"""Determinism: the same seed gives bit-identical trained weights, heatmaps (every method,
SmoothGrad included), maximization images and evaluation figures on the CPU; the global
RNG is never touched."""

from __future__ import annotations

import json

import pytest
import torch

import xaikit
from xaikit.explain import METHODS
from xaikit.explain.attention import ATTENTION_METHODS


def _fit(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # initial weights
    model = xaikit.create_model(
        "simple_cnn", num_classes=6, widths=(4, 8), input_size=16, dropout=0.3
    )
    data = xaikit.data.load("shapes", "train", n=96, size=16, seed=1)
    trainer = xaikit.Trainer(
        model, optimizer="adamw", lr=3e-3, scheduler="cosine", batch_size=16, seed=seed,
        quiet=True, device="cpu",
    )  # fmt: skip
    trainer.fit(data, epochs=2)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_same_seed_trains_identical_weights_and_another_seed_others():
    first, second, other = _fit(0), _fit(0), _fit(1)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_training_leaves_the_global_rng_untouched():
    model = xaikit.create_model("simple_cnn", num_classes=6, widths=(4, 8), dropout=0.3)
    data = xaikit.data.load("shapes", "train", n=32, size=16)
    trainer = xaikit.Trainer(model, quiet=True, device="cpu", batch_size=16, seed=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    trainer.fit(data, epochs=1)
    trainer.evaluate(data)
    assert torch.equal(torch.rand(3), expected)


def _tiny_vit() -> torch.nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3
    ).eval()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_identical_heatmaps_and_leaves_the_global_rng(model, images, method):
    if method in ATTENTION_METHODS:
        model = _tiny_vit()  # attention methods need attention: a CNN is refused
    options = {"samples": 4} if method == "smoothgrad" else {}
    state = torch.get_rng_state()
    first = xaikit.explain(model, images, method=method, target="all", seed=7, **options)
    assert torch.equal(torch.get_rng_state(), state)
    model.train()  # explaining forces eval mode: dropout/BatchNorm cannot change the maps
    second = xaikit.explain(model, images, method=method, target="all", seed=7, **options)
    model.eval()
    assert torch.equal(first, second)


def test_smoothgrad_depends_on_its_seed_only(model, images):
    runs = [
        xaikit.explain(model, images, method="smoothgrad", seed=seed, samples=4)
        for seed in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    torch.manual_seed(999)  # the global RNG plays no part
    assert torch.equal(
        xaikit.explain(model, images, method="smoothgrad", seed=0, samples=4), runs[0]
    )


def test_maximization_gives_identical_images_for_the_same_seed(model):
    def run(seed: int) -> torch.Tensor:
        return xaikit.filters.maximize(
            model, "features.block2", [0, 3], steps=6, size=16, seed=seed, quiet=True
        ).images

    state = torch.get_rng_state()
    first, second, other = run(5), run(5), run(6)
    assert torch.equal(torch.get_rng_state(), state)
    assert first.shape == (2, 3, 16, 16)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_evaluation_figures_are_identical_for_the_same_seed(model, images):
    def run(seed: int):
        report = xaikit.evaluate.evaluate_methods(
            model, images.sigmoid(), ["gradcam", "smoothgrad"], steps=4, seed=seed, quiet=True
        )
        return json.dumps(report.to_dict(), sort_keys=True)  # NaN compares equal as text

    first = run(3)
    assert '"gradcam"' in first and first == run(3)
