"""Complexity metrics, batched: is the explanation concise? Maps only, no model.

Each function takes attributions ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, C, H, W)`` and returns
per-sample values ``(N,)``; by default the maps are divided by their max |a| and made absolute,
as Quantus 0.6 does (``normalise`` / ``abs``).
"""

from __future__ import annotations

import torch

from xaikit.evaluate._batched import preprocess


def _flat(attributions: torch.Tensor, normalise: bool, absolute: bool) -> torch.Tensor:
    a = preprocess(attributions.double(), normalise=normalise, absolute=absolute)
    return a.reshape(a.shape[0], -1)


def sparseness(
    attributions: torch.Tensor, *, normalise: bool = True, abs: bool = True
) -> torch.Tensor:
    """Sparseness (Chalasani et al., 2020, ICML): the Gini index of the attribution values
    (``1e-7`` added, as Quantus). Higher is better (sparser), in [0, 1]."""
    a = _flat(attributions, normalise, abs) + 1e-7
    f = a.shape[1]
    a = a.sort(dim=1).values
    k = torch.arange(1, f + 1, device=a.device, dtype=a.dtype)
    return (((2 * k - f - 1) * a).sum(1) / (f * a.sum(1))).float()


def complexity(
    attributions: torch.Tensor, *, normalise: bool = True, abs: bool = True
) -> torch.Tensor:
    """Complexity (Bhatt, Weller & Moura, 2020, IJCAI): the entropy of the attributions made a
    distribution (``a / sum |a|``). Lower is better, in [0, log(features)]."""
    a = _flat(attributions, normalise, abs)
    a = a / a.abs().sum(1, keepdim=True)
    return (-(a * torch.log(a + 1e-12)).sum(1)).float()


def effective_complexity(
    attributions: torch.Tensor, *, eps: float = 1e-5, normalise: bool = True, abs: bool = True
) -> torch.Tensor:
    """Effective complexity (Nguyen & Martínez, 2020): the number of features whose attribution
    exceeds ``eps``. Lower is better, in [0, features]."""
    a = _flat(attributions, normalise, abs)
    return (a > eps).sum(1).float()
