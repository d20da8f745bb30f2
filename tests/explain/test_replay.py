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


def test_a_different_input_is_computed_not_replayed():
    seen = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x.flatten(1)[:, :3] * 2

    replay = ReplayedForward(forward)
    a, b = torch.rand(2, 4), torch.rand(2, 4)
    first = [replay(a), replay(b)]
    replay.next_target()
    again = replay(a)
    changed = replay(a + 1e-7)  # one value moved by one ulp-ish step: computed
    assert torch.equal(again, first[0]) and torch.equal(changed, (a + 1e-7)[:, :3] * 2)
    assert replay.computed == 3 and replay.replayed == 1 and len(seen) == 3
    replay.next_target()
    wider = torch.rand(3, 4)
    assert torch.equal(replay(wider), wider[:, :3] * 2)  # another shape there: computed
    assert replay.computed == 4 and replay.replayed == 1
