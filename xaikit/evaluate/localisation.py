"""Localisation metrics against ground-truth masks, batched: does the relevance sit on the object?

Each function takes ``(attributions (N, H, W) or (N, 1, H, W), masks (N, H, W))`` and returns
per-sample values ``(N,)``; an empty mask scores NaN. Definitions follow Quantus 0.6 (which
takes the attributions as given: ``normalise`` divides each map by its max |a|, ``abs`` takes
absolute values, each metric's default being Quantus's).
"""

from __future__ import annotations

import torch

from xaikit.errors import XaikitConfigError
from xaikit.evaluate._batched import preprocess


def _flat(attributions: torch.Tensor, masks: torch.Tensor, normalise: bool, absolute: bool):
    a = attributions.double()
    if a.dim() == 3:
        a = a.unsqueeze(1)
    a = preprocess(a, normalise=normalise, absolute=absolute)
    s = masks.to(a.device)
    if s.dim() == 3:
        s = s.unsqueeze(1)
    if s.shape[0] != a.shape[0] or s.shape[2:] != a.shape[2:]:
        raise XaikitConfigError(
            f"masks {tuple(masks.shape)} do not match attributions {tuple(attributions.shape)}"
        )
    s = s.expand_as(a).bool()
    n = a.shape[0]
    return a.reshape(n, -1), s.reshape(n, -1)


def _nan_if_empty(values: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.where(s.sum(1) == 0, torch.nan, values).float()


def attribution_localisation(
    attributions: torch.Tensor,
    masks: torch.Tensor,
    *,
    weighted: bool = False,
    positive_attributions: bool = False,
    normalise: bool = True,
    abs: bool = True,
) -> torch.Tensor:
    """Attribution localisation (Kohlbrenner et al., 2020, IJCNN): the share of the total
    attribution that falls inside the mask (``weighted``: times the mask's share of the image).
    Higher is better, in [0, 1]."""
    a, s = _flat(attributions, masks, normalise, abs)
    if positive_attributions:
        a = a.clamp(min=0)
    ratio = (a * s).sum(1) / (a.sum(1) + 1e-9)
    ratio = torch.where(ratio > 1, torch.nan, ratio)
    if weighted:
        ratio = ratio * s.sum(1) / s.shape[1]
    return _nan_if_empty(ratio, s)


def top_k_intersection(
    attributions: torch.Tensor,
    masks: torch.Tensor,
    *,
    k: int = 1000,
    concept_influence: bool = False,
    normalise: bool = True,
    abs: bool = False,
) -> torch.Tensor:
    """Top-k intersection (Theiner et al., 2021, "Interpretable Semantic Photo Geolocalization"):
    the fraction of the ``k`` most relevant pixels that lie inside the mask (``concept_
    influence``: divided by the mask's share of the image). Higher is better, in [0, 1]."""
    a, s = _flat(attributions, masks, normalise, abs)
    if not 0 < k <= a.shape[1]:
        raise XaikitConfigError(f"k must lie in [1, {a.shape[1]}], got {k}")
    top = torch.argsort(a, dim=1, descending=True, stable=True)[:, :k]
    tki = s.gather(1, top).double().mean(1)
    if concept_influence:
        tki = tki * s.shape[1] / s.sum(1)
    return _nan_if_empty(tki, s)


def relevance_rank_accuracy(
    attributions: torch.Tensor,
    masks: torch.Tensor,
    *,
    normalise: bool = True,
    abs: bool = False,
) -> torch.Tensor:
    """Relevance rank accuracy (Arras, Osman & Samek, 2022, "CLEVR-XAI"): with ``K`` mask pixels,
    the fraction of the ``K`` most relevant pixels that lie inside the mask. Higher is better,
    in [0, 1]."""
    a, s = _flat(attributions, masks, normalise, abs)
    size = s.sum(1)
    order = torch.argsort(a, dim=1, descending=True, stable=True)
    inside = s.gather(1, order)
    first = torch.arange(a.shape[1], device=a.device)[None] < size[:, None]
    value = (inside & first).sum(1).double() / size.clamp(min=1)
    return _nan_if_empty(value, s)


def relevance_mass_accuracy(
    attributions: torch.Tensor,
    masks: torch.Tensor,
    *,
    normalise: bool = True,
    abs: bool = False,
) -> torch.Tensor:
    """Relevance mass accuracy (Arras, Osman & Samek, 2022): the relevance inside the mask over
    the total relevance. Higher is better, in [0, 1] for non-negative maps."""
    a, s = _flat(attributions, masks, normalise, abs)
    value = (a * s).sum(1) / a.sum(1)
    return _nan_if_empty(value, s)


def auc(
    attributions: torch.Tensor,
    masks: torch.Tensor,
    *,
    normalise: bool = True,
    abs: bool = False,
) -> torch.Tensor:
    """ROC AUC of the attributions as a detector of the mask pixels (Fawcett, 2006, Pattern
    Recognition Letters), computed exactly as the Mann-Whitney statistic with ties counted one
    half (what ``sklearn.metrics.roc_curve`` + ``auc`` give). Higher is better, in [0, 1]; 0.5
    is chance. NaN for an empty or a full mask."""
    from xaikit.evaluate._batched import average_ranks

    a, s = _flat(attributions, masks, normalise, abs)
    ranks = average_ranks(a)
    pos = s.sum(1).double()
    neg = s.shape[1] - pos
    u = (ranks * s).sum(1) - pos * (pos + 1) / 2
    value = u / (pos * neg)
    value = torch.where(neg == 0, torch.nan, value)
    return _nan_if_empty(value, s)
