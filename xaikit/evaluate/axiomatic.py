"""Axiomatic metrics, batched: does the explanation satisfy completeness, non-sensitivity and
input invariance? Per-sample values ``(N,)`` (1.0 true / 0.0 false, or a count). Definitions
follow Quantus 0.6.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xaikit.evaluate._batched import (
    as_features,
    as_maps,
    baseline_values,
    on_device,
    preprocess,
    scores_of_rows,
    target_outputs,
)
from xaikit.evaluate.faithfulness import _check_step
from xaikit.explain.state import borrowed


def completeness(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    perturb_baseline: str | float = "black",
    atol: float = 0.0,
    return_gap: bool = False,
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = False,
) -> torch.Tensor:
    """Completeness (Sundararajan, Taly & Yan, 2017, ICML): 1 when the attributions sum to
    ``f(x) - f(baseline)`` (within ``atol``; 0, exact equality, as Quantus), else 0.
    ``return_gap`` gives ``|sum(a) - (f(x) - f(x_baseline))|`` instead (lower is better).
    Higher is better. Deterministic."""
    x, targets = on_device(model, x, targets)
    n = x.shape[0]
    a = preprocess(as_features(x, attributions), normalise=normalise, absolute=abs)
    fill = baseline_values(x, perturb_baseline).view(n, 1, 1, 1).expand_as(x)
    y = target_outputs(model, x, targets, softmax=softmax)
    yb = target_outputs(model, fill.contiguous(), targets, softmax=softmax)
    gap = (a.reshape(n, -1).sum(1) - (y - yb)).abs()
    return gap if return_gap else (gap <= atol).to(x.dtype)


def non_sensitivity(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    eps: float = 1e-5,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = True,
    softmax: bool = True,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Non-sensitivity (Nguyen & Martínez, 2020): features are set to the baseline one group of
    ``features_in_step`` at a time (in index order); counts the features where "attribution
    below ``eps``" disagrees with "output unchanged (within ``eps``)". Lower is better, in
    [0, features]. Deterministic."""
    x, targets = on_device(model, x, targets)
    _check_step(features_in_step, x)
    n = x.shape[0]
    a = preprocess(as_features(x, attributions), normalise=normalise, absolute=abs)
    a = a.reshape(n, -1)
    f = a.shape[1]
    steps = math.ceil(f / features_in_step)
    flat = x.reshape(n, -1)
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    group = torch.arange(f, device=x.device) // features_in_step
    y = target_outputs(model, x, targets, softmax=softmax)

    def make(index: torch.Tensor):
        item, step = index // steps, index % steps
        mask = group[None] == step[:, None]
        batch = torch.where(mask, fill[item].expand_as(mask).to(flat), flat[item])
        return batch.view(-1, *x.shape[1:]), targets[item]

    preds = scores_of_rows(
        model, n * steps, make, softmax=softmax, batch_size=batch_size,
        desc="non-sensitivity", quiet=quiet,
    ).view(n, steps)  # fmt: skip
    unchanged = ((preds - y[:, None]).abs() < eps)[:, group]  # per feature
    return (unchanged ^ (a < eps)).sum(1).to(x.dtype)


class _Shifted(nn.Module):
    """``model(z - shift)``: the model that sees a shifted input exactly as the original sees
    the unshifted one (Kindermans et al.'s constant input shift, compensated)."""

    def __init__(self, model: nn.Module, shift: float) -> None:
        super().__init__()
        self.model = model
        self.shift = shift

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z - self.shift)


def input_invariance(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn,
    *,
    input_shift: float = -1.0,
    atol: float = 1e-4,
) -> torch.Tensor:
    """Input invariance (Kindermans et al., 2019, "The (Un)reliability of Saliency Methods"):
    1 when the explanation of the shifted input ``x + input_shift`` on the model compensated for
    the shift (same outputs) equals the original explanation (within ``atol``), else 0. Higher
    is better. ``explain_fn(model, x, targets)``; no normalisation (as Quantus). Quantus folds the
    shift into the first layer's bias; here the compensated model is ``model(z - shift)``, the
    same function, so gradient-based methods see the same thing."""
    x, targets = on_device(model, x, targets)
    a = as_maps(x, attributions).to(x.dtype)
    with borrowed(model):  # eval mode, restored after (the wrapper must not change it first)
        shifted = _Shifted(model, input_shift)
        ap = as_maps(x, explain_fn(shifted, x + input_shift, targets).detach()).to(x.dtype)
    close = torch.isclose(a, ap, atol=atol, rtol=1e-5)
    return close.reshape(x.shape[0], -1).all(1).to(x.dtype)
