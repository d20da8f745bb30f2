"""The catalogue metrics read probabilities as the head defines them: each label's sigmoid for
a multi-label head (not a softmax across labels), ``(1 - p, p)`` for a one-logit binary head.
Checked against the same metric on the logits of a model that outputs those probabilities
itself (an independent path: the wrapper computes them, the metric reads its outputs raw)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit
from xaikit.evaluate._batched import outputs
from xaikit.evaluate.catalogue import metric_spec, run_metric


class Probabilities(nn.Module):
    """``model``'s probabilities as its outputs: sigmoid per label, or ``(1 - p, p)``."""

    def __init__(self, model: nn.Module, binary: bool = False) -> None:
        super().__init__()
        self.model, self.binary = model, binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x).sigmoid()
        return torch.cat([1 - p, p], dim=1) if self.binary else p


def _inputs(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 16, 16, generator=g), torch.rand(n, 16, 16, generator=g)


def test_a_binary_head_reads_as_two_classes() -> None:
    z = torch.tensor([[2.0], [-1.0]])
    torch.testing.assert_close(outputs(z, False), torch.tensor([[-2.0, 2.0], [1.0, -1.0]]))
    p = torch.sigmoid(z)
    torch.testing.assert_close(outputs(z, True), torch.cat([1 - p, p], 1))
    torch.testing.assert_close(outputs(z, "multilabel"), torch.cat([1 - p, p], 1))
    logits = torch.tensor([[1.0, 2.0, -3.0]])
    torch.testing.assert_close(outputs(logits, "multilabel"), logits.sigmoid())
    torch.testing.assert_close(outputs(logits, True), logits.softmax(-1))


@pytest.mark.parametrize("metric", ["pixel_flipping", "region_perturbation", "monotonicity"])
def test_a_multilabel_head_is_scored_by_each_labels_sigmoid(metric: str) -> None:
    torch.manual_seed(0)
    model = xaikit.create_model(
        "simple_cnn", num_classes=3, task="multilabel", widths=(4, 8), input_size=16
    ).eval()
    x, maps = _inputs()
    targets = torch.tensor([0, 2, 1, 2])
    options = {"features_in_step": 48} if metric != "region_perturbation" else {}
    ours = run_metric(metric, model, x, maps, targets, **options)
    reference = run_metric(metric, Probabilities(model), x, maps, targets, softmax=False, **options)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    # a softmax across the labels (the metric function's own multi-class reading, which
    # run_metric replaced) is another figure
    across = metric_spec(metric).function(model, x, maps, targets, softmax=True, **options)
    assert metric == "monotonicity" or not torch.allclose(across, ours)


def test_a_binary_head_is_scored_for_either_target() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 1))
    x, maps = _inputs()
    targets = torch.tensor([0, 1, 1, 0])
    ours = run_metric("pixel_flipping", model.eval(), x, maps, targets, features_in_step=48)
    reference = run_metric(
        "pixel_flipping", Probabilities(model, binary=True), x, maps, targets,
        softmax=False, features_in_step=48,
    )  # fmt: skip
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
