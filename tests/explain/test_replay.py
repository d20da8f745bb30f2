"""LIME and Kernel SHAP run an input's perturbation passes once for all its targets, with the
same numbers as one call per target."""

from __future__ import annotations

import pytest
import torch

import xaikit
from xaikit.explain.captum_methods import kernelshap, lime
from xaikit.explain.replay import ReplayedForward


class _Counting(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0  # inputs seen, over all calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)


@pytest.mark.parametrize("method", [lime, kernelshap])
def test_every_target_of_an_input_shares_its_forward_passes(zoo_multiclass, images, method):
    targets = torch.tensor([[1, 4, 0], [3, 0, 2]])
    x = images[:2]
    model = _Counting(zoo_multiclass)
    options = dict(seed=3, segments=16, n_samples=30, internal_batch_size=7)
    together = method(model, x, targets, **options)
    passes_together = model.images

    model.images = 0
    rows = []
    for i in range(2):
        maps = [
            method(model, x[i : i + 1], targets[i : i + 1, j : j + 1], first_index=i, **options)
            for j in range(3)
        ]
        rows.append(torch.cat(maps, dim=1)[0])
    one_by_one = torch.stack(rows)
    assert torch.equal(together, one_by_one)  # the same numbers, bit for bit
    assert bool((together[:, 0] != together[:, 1]).any())  # targets differ
    assert model.images * 1 == passes_together * 3  # a third of the images through the model


def test_explain_with_several_labels_runs_the_perturbations_once(zoo_multilabel, images):
    model = _Counting(zoo_multilabel)
    options = dict(method="lime", n_samples=20, seed=0)
    result = xaikit.explain(
        model, images[:1], target=torch.tensor([[0, 2, 5]]), return_result=True, **options
    )
    assert result.maps.shape[1] == 3
    single = _Counting(zoo_multilabel)
    xaikit.explain(single, images[:1], target=0, **options)
    # explain's own forward pass plus one target's perturbations, for three targets
    assert model.images == single.images


def test_a_different_input_or_generator_state_is_computed_not_replayed():
    seen = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x.flatten(1)[:, :3] * 2

    replay = ReplayedForward(forward)
    a, b = torch.rand(2, 4), torch.rand(2, 4)
    first = [replay(a), replay(b)]
    replay.next_target()
    nudged = a.clone()
    nudged[1, 3] = torch.nextafter(a[1, 3], torch.tensor(2.0))  # one float step, at call 0
    assert torch.equal(replay(nudged), nudged[:, :3] * 2)
    assert replay.computed == 3 and replay.replayed == 0
    replay.next_target()
    assert torch.equal(replay(a), first[0]) and replay.replayed == 1
    assert len(seen) == 3
    replay.next_target()
    torch.rand(1)  # the global generator moved on since the first call: computed
    replay(a)
    assert replay.computed == 4 and replay.replayed == 1
    replay.next_target()
    wider = torch.rand(3, 4)
    assert torch.equal(replay(wider), wider[:, :3] * 2)  # another shape there: computed
    assert replay.computed == 5


def test_a_forward_that_draws_gets_the_same_numbers_as_one_call_per_target():
    """Dropout in training mode draws from torch's generator in every pass: a replayed pass
    moves the generator on as running it would, so later perturbations are the same."""
    torch.manual_seed(0)
    weights = torch.randn(3 * 8 * 8, 6)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(x.flatten(1) @ weights, 0.5, training=True)

    x = torch.rand(1, 3, 8, 8)
    options = dict(seed=3, segments=4, n_samples=12, internal_batch_size=4)
    for method in (lime, kernelshap):
        together = method(forward, x, torch.tensor([[1, 4, 2]]), **options)
        alone = torch.cat(
            [method(forward, x, torch.tensor([[t]]), **options) for t in (1, 4, 2)], dim=1
        )
        assert torch.equal(together, alone)
