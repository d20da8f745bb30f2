"""Memory-bounded explanations: chunked calls equal one call, and batches stay bounded.

A float matrix product on the CPU is not batch-size invariant (BLAS blocks ``M`` rows
differently: the logits of 3 and of 10 images differ at 1e-8), so "identical to one call" is
tested on models whose arithmetic is exact: weights and inputs on a grid of multiples of
1/8 and batch norm set to an exact identity. Every sum is then exact in any order, and any
difference left is the chunking's (slicing, padding, noise, normalization).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import xaikit.explain as X
from xaikit.errors import XaikitConfigError
from xaikit.explain.adapter import ModelAdapter
from xaikit.explain.engine import (
    DEFAULT_MEMORY_BUDGET,
    MEMORY_BUDGET_ENV,
    parse_memory_budget,
    sample_bytes,
)
from xaikit.explain.state import borrowed

FIELDS = ("maps", "raw", "targets", "valid", "scores", "probabilities", "degenerate", "logits")

#: Per method: options given to both calls (the same ``internal_batch_size`` for the methods
#: whose summation order follows it, so only the input chunking differs).
CASES: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "scorecam-fast": {"top_k": 4, "quiet": True},
    "saliency": {},
    "ig": {"steps": 4, "internal_batch_size": 8},
    "smoothgrad": {"samples": 4, "seed": 3},
    "occlusion": {"window": 8, "stride": 4, "internal_batch_size": 16},
}


def budget_for(model: nn.Module, x: torch.Tensor, rows: int) -> int:
    """The memory budget under which ``explain`` runs chunks of ``rows`` inputs."""
    adapter = ModelAdapter(model, x)
    with borrowed(adapter.model):
        return rows * sample_bytes(adapter)


def exact(model: nn.Module) -> nn.Module:
    """``model`` with weights on the 1/8 grid and exact identity batch norms (in place)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                w.copy_(torch.randint(-3, 4, w.shape, generator=gen).to(w.dtype) / 8)
                if module.bias is not None:
                    module.bias.copy_((module.bias * 8).round() / 8)
            elif isinstance(module, nn.BatchNorm2d):
                module.eps = 0.0
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                module.weight.fill_(1.0)
                module.bias.zero_()
    return model


@pytest.fixture
def exact_multiclass(zoo_multiclass: nn.Module) -> nn.Module:
    return exact(zoo_multiclass)


@pytest.fixture
def exact_multilabel(zoo_multilabel: nn.Module) -> nn.Module:
    model = exact(zoo_multilabel)
    with torch.no_grad():  # each label positive for a few images: ragged counts
        model.head.fc.bias.zero_()
        high = model(make_images()).quantile(0.85, dim=0)
        model.head.fc.bias.copy_(-(high * 8).round() / 8 + 1 / 16)
    return model


def make_images() -> torch.Tensor:
    """Ten 16x16 RGB images on the 1/8 grid."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(-8, 9, (10, 3, 16, 16), generator=gen).float() / 8


@pytest.fixture
def images() -> torch.Tensor:
    return make_images()


def assert_same(a: X.Explanation, b: X.Explanation) -> None:
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("single", "layer", "normalize", "options", "layout"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("normalize", ["minmax", "global"])
@pytest.mark.parametrize("method", list(CASES))
def test_chunked_call_equals_one_call(
    exact_multiclass: nn.Module, images: torch.Tensor, method: str, normalize: str
) -> None:
    options = CASES[method]
    budget = budget_for(exact_multiclass, images, 3)
    calls: list[int] = []
    handle = exact_multiclass.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        whole = X.explain(
            exact_multiclass, images, method, normalize=normalize, return_result=True, **options
        )
        calls.clear()
        chunked = X.explain(
            exact_multiclass,
            images,
            method,
            normalize=normalize,
            memory_budget=budget,
            return_result=True,
            **options,
        )
    finally:
        handle.remove()
    assert 3 in calls and 10 not in calls  # chunks of 3 (3 + 3 + 3 + 1), never the batch
    assert_same(chunked, whole)
    with torch.no_grad():  # the logits of the explained forward pass are the model's
        torch.testing.assert_close(chunked.logits, exact_multiclass(images), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "ig", "smoothgrad"])
def test_chunked_call_matches_on_a_plain_model(zoo_multiclass: nn.Module, method: str) -> None:
    x = torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    options = {k: v for k, v in CASES[method].items() if k != "internal_batch_size"}
    budget = budget_for(zoo_multiclass, x, 2)
    whole = X.explain(zoo_multiclass, x, method, normalize=None, **options)
    chunked = X.explain(zoo_multiclass, x, method, normalize=None, memory_budget=budget, **options)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-6)


def test_ragged_positive_targets_are_padded_across_chunks(
    exact_multilabel: nn.Module, images: torch.Tensor
) -> None:
    budget = budget_for(exact_multilabel, images, 3)
    methods = ["gradcam", "saliency"]
    whole = X.explain(exact_multilabel, images, methods, "positive", return_result=True)
    chunked = X.explain(
        exact_multilabel, images, methods, "positive", memory_budget=budget, return_result=True
    )
    counts = whole["gradcam"].valid.sum(dim=1)
    per_chunk = [int(counts[i : i + 3].max()) for i in range(0, 10, 3)]
    assert len(set(per_chunk)) > 1  # the chunks really have different K
    for name in methods:
        assert_same(chunked[name], whole[name])


def test_per_input_targets_are_sliced(exact_multiclass: nn.Module, images: torch.Tensor) -> None:
    budget = budget_for(exact_multiclass, images, 4)
    target = [i % 5 for i in range(10)]
    whole = X.explain(exact_multiclass, images, "gradcam", target, return_result=True)
    chunked = X.explain(
        exact_multiclass, images, "gradcam", target, memory_budget=budget, return_result=True
    )
    assert_same(chunked, whole)
    assert chunked.targets[:, 0].tolist() == target


def test_ig_internal_batch_is_bounded_by_the_budget(
    exact_multiclass: nn.Module, images: torch.Tensor
) -> None:
    x = images[:4]
    rows = 5
    budget = budget_for(exact_multiclass, x, rows)
    seen: list[int] = []
    handle = exact_multiclass.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        X.explain(exact_multiclass, x, "ig", steps=32, memory_budget=budget)
    finally:
        handle.remove()
    assert max(seen) <= rows  # not 4 x 32 = 128 rows in one pass


def test_smoothgrad_noise_follows_the_input_not_the_chunk(
    exact_multiclass: nn.Module, images: torch.Tensor
) -> None:
    for rows in (1, 4):
        budget = budget_for(exact_multiclass, images, rows)
        maps = [
            X.explain(exact_multiclass, images, "smoothgrad", seed=s, samples=3, memory_budget=b)
            for s, b in ((5, budget), (5, None))
        ]
        assert torch.equal(maps[0], maps[1])


def test_memory_budget_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    assert parse_memory_budget(None) == DEFAULT_MEMORY_BUDGET == 1 << 30
    assert parse_memory_budget("512M") == 512 << 20
    assert parse_memory_budget("1.5GiB") == 3 << 29
    assert parse_memory_budget(4096) == 4096
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "2g")
    assert parse_memory_budget(None) == 2 << 30
    for bad in ("lots", 0, -1, True):
        with pytest.raises(XaikitConfigError):
            parse_memory_budget(bad)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("gradientshap", {"n_samples": 3}),
        ("deepliftshap", {"baselines": 3}),
        ("lime", {"n_samples": 12, "segments": 4}),
        ("kernelshap", {"n_samples": 12, "segments": 4}),
    ],
)
def test_sampled_attributions_follow_the_input_not_the_chunk(
    zoo_multiclass: nn.Module, method: str, options: dict
) -> None:
    """Their samples are seeded by ``(seed, index of the input in the call)``: a call split in
    chunks draws what one call draws (it used to restart the draws in every chunk)."""
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    budget = budget_for(zoo_multiclass, x, 2)
    whole = X.explain(zoo_multiclass, x, method, seed=3, normalize=None, **options)
    chunked = X.explain(
        zoo_multiclass, x, method, seed=3, normalize=None, memory_budget=budget, **options
    )
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-6)
