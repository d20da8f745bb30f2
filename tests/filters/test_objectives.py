"""Objectives: each scores one number per batch element, and they compose with arithmetic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xaikit.errors import XaikitConfigError
from xaikit.filters.objectives import (
    Context,
    Objective,
    channel,
    class_logit,
    diversity,
    l2,
    neuron,
    tv,
)

LAYER = "features.block2"


def _context() -> Context:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 5, 4, 4, generator=gen)
    return Context(
        activations={LAYER: acts},
        output=torch.randn(3, 7, generator=gen),
        images=torch.rand(3, 3, 6, 6, generator=gen),
        units=torch.tensor([4, 0, 2]),
        max_unit=4,
    )


def test_unit_objectives_pick_each_elements_own_unit_or_a_fixed_one():
    ctx = _context()
    acts = ctx.activations[LAYER]
    torch.testing.assert_close(channel(LAYER)(ctx), acts[[0, 1, 2], [4, 0, 2]].mean(dim=(1, 2)))
    torch.testing.assert_close(channel(LAYER, 3)(ctx), acts[:, 3].mean(dim=(1, 2)))
    torch.testing.assert_close(neuron(LAYER)(ctx), acts[[0, 1, 2], [4, 0, 2], 2, 2])
    torch.testing.assert_close(neuron(LAYER, 1, (0, 3))(ctx), acts[:, 1, 0, 3])
    torch.testing.assert_close(class_logit()(ctx), ctx.output[[0, 1, 2], [4, 0, 2]])
    assert class_logit().needs_output and not channel(LAYER).needs_output


def test_image_regularizers_match_their_formulas():
    ctx = _context()
    x = ctx.images
    expect_tv = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3)) + (
        x[..., 1:, :] - x[..., :-1, :]
    ).abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(tv()(ctx), expect_tv)
    torch.testing.assert_close(l2()(ctx), (x - 0.5).pow(2).mean(dim=(1, 2, 3)).sqrt())


def test_diversity_is_minus_the_mean_gram_similarity_to_the_other_elements():
    ctx = _context()
    acts = ctx.activations[LAYER]
    grams = [F.normalize((a.flatten(1) @ a.flatten(1).T).flatten(), dim=0) for a in acts]
    expect = torch.stack(
        [-sum(grams[i] @ grams[j] for j in range(3) if j != i) / 2 for i in range(3)]
    )
    torch.testing.assert_close(diversity(LAYER)(ctx), expect)


def test_arithmetic_composes_scores_layers_and_names():
    ctx = _context()
    combined = channel(LAYER, 1) - 0.05 * tv() + 2 * l2() / 4
    torch.testing.assert_close(
        combined(ctx), channel(LAYER, 1)(ctx) - 0.05 * tv()(ctx) + 0.5 * l2()(ctx)
    )
    assert combined.layers == {LAYER}
    assert combined.name == "channel(features.block2, 1) - 0.05*tv() + 0.25*2*l2()"
    total = sum(channel(LAYER, c) for c in range(3))
    assert isinstance(total, Objective)
    torch.testing.assert_close(total(ctx), sum(channel(LAYER, c)(ctx) for c in range(3)))
    torch.testing.assert_close((-channel(LAYER))(ctx), -channel(LAYER)(ctx))
    torch.testing.assert_close((1 - tv())(ctx), 1 - tv()(ctx))


def test_out_of_range_units_and_bad_shapes_raise():
    ctx = _context()
    with pytest.raises(XaikitConfigError, match="unit 7 is out of range"):
        channel(LAYER, 7)(ctx)
    ctx.max_unit = 5
    with pytest.raises(XaikitConfigError, match="unit 5"):
        channel(LAYER)(ctx)
    with pytest.raises(XaikitConfigError, match="outside"):
        neuron(LAYER, 0, (4, 0))(_context())
    bad = Objective(lambda c: torch.zeros(2), name="bad")
    with pytest.raises(XaikitConfigError, match="one score per batch element"):
        bad(_context())
