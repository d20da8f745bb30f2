"""The catalogue of batched explanation-quality metrics: name -> function, family, kind.

:data:`CATALOGUE` maps each metric name (the key of its :class:`~xaikit.evaluate.metadata.
MetricInfo` in :data:`~xaikit.evaluate.metadata.METRICS`) to a :class:`MetricSpec`;
:func:`run_metric` calls any of them with one signature::

    values = run_metric("pixel_flipping", model, x, maps, targets, explainer=..., masks=...)

``x`` is what the model takes (already normalized), ``maps`` ``(N, H, W)`` or ``(N, C, H, W)``,
``targets`` ``(N,)``; ``explainer(model, x, targets) -> maps`` is needed by the robustness,
randomisation and input-invariance metrics, ``masks`` ``(N, H, W)`` by the localisation ones.
Values are per sample ``(N,)`` except sensitivity-n (one per subset size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.evaluate import (
    axiomatic,
    complexity,
    faithfulness,
    localisation,
    randomisation_metrics,
    robustness,
)

FAMILIES = (
    "faithfulness",
    "robustness",
    "localisation",
    "complexity",
    "randomisation",
    "axiomatic",
)


@dataclass(frozen=True)
class MetricSpec:
    """One catalogue entry.

    Attributes:
        name: the metric's key (``"pixel_flipping"``).
        function: the batched implementation.
        family: one of :data:`FAMILIES`.
        stochastic: ``True`` when the value depends on a random draw (``seed``).
        needs: what the function takes besides the maps: ``"model"``, ``"explainer"`` (re-
            explains with ``explain_fn(x, targets)``), ``"model_explainer"`` (re-explains with
            ``explain_fn(model, x, targets)``), ``"masks"`` or ``"maps"`` (the maps alone).
        per_sample: ``False`` for sensitivity-n, whose values are per subset size.
    """

    name: str
    function: Callable[..., Any]
    family: str
    stochastic: bool
    needs: str
    per_sample: bool = True


def _spec(function, family, stochastic, needs, name=None, per_sample=True) -> MetricSpec:
    return MetricSpec(name or function.__name__, function, family, stochastic, needs, per_sample)


CATALOGUE: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _spec(faithfulness.faithfulness_correlation, "faithfulness", True, "model"),
        _spec(faithfulness.faithfulness_estimate, "faithfulness", False, "model"),
        _spec(faithfulness.monotonicity, "faithfulness", False, "model"),
        _spec(faithfulness.monotonicity_correlation, "faithfulness", True, "model"),
        _spec(faithfulness.pixel_flipping, "faithfulness", False, "model"),
        _spec(faithfulness.region_perturbation, "faithfulness", False, "model"),
        _spec(faithfulness.selectivity, "faithfulness", False, "model"),
        _spec(faithfulness.sensitivity_n, "faithfulness", False, "model", per_sample=False),
        _spec(faithfulness.infidelity, "faithfulness", False, "model"),
        _spec(faithfulness.irof, "faithfulness", False, "model"),
        _spec(faithfulness.road, "faithfulness", True, "model"),
        _spec(robustness.max_sensitivity, "robustness", True, "explainer"),
        _spec(robustness.avg_sensitivity, "robustness", True, "explainer"),
        _spec(robustness.local_lipschitz_estimate, "robustness", True, "explainer"),
        _spec(robustness.relative_input_stability, "robustness", True, "explainer"),
        _spec(robustness.relative_output_stability, "robustness", True, "explainer"),
        _spec(robustness.relative_representation_stability, "robustness", True, "explainer"),
        _spec(localisation.attribution_localisation, "localisation", False, "masks"),
        _spec(localisation.top_k_intersection, "localisation", False, "masks"),
        _spec(localisation.relevance_rank_accuracy, "localisation", False, "masks"),
        _spec(localisation.relevance_mass_accuracy, "localisation", False, "masks"),
        _spec(localisation.auc, "localisation", False, "masks", name="localisation_auc"),
        _spec(complexity.sparseness, "complexity", False, "maps"),
        _spec(complexity.complexity, "complexity", False, "maps"),
        _spec(complexity.effective_complexity, "complexity", False, "maps"),
        _spec(
            randomisation_metrics.model_parameter_randomisation,
            "randomisation",
            False,
            "model_explainer",
            name="mprt",
        ),
        _spec(
            randomisation_metrics.smooth_model_parameter_randomisation,
            "randomisation",
            True,
            "model_explainer",
            name="smooth_mprt",
        ),
        _spec(
            randomisation_metrics.efficient_model_parameter_randomisation,
            "randomisation",
            False,
            "model_explainer",
            name="efficient_mprt",
        ),
        _spec(randomisation_metrics.random_logit, "randomisation", False, "model_explainer"),
        _spec(axiomatic.completeness, "axiomatic", False, "model"),
        _spec(axiomatic.non_sensitivity, "axiomatic", False, "model"),
        _spec(axiomatic.input_invariance, "axiomatic", False, "model_explainer"),
    )
}


def metric_spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` of ``name``."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise XaikitConfigError(
            f"unknown metric {name!r}; choose from {', '.join(CATALOGUE)}"
        ) from None


def _default(fn: Callable[..., Any], name: str) -> Any:
    """The default value of ``fn``'s keyword ``name`` (None without one)."""
    import inspect

    parameter = inspect.signature(fn).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def run_metric(
    name: str,
    model: nn.Module | None,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    explainer: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    masks: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
    **options: Any,
) -> torch.Tensor:
    """Compute metric ``name`` with one signature for all (see the module docstring);
    ``options`` go to the metric function (e.g. ``features_in_step=``, ``nr_samples=``)."""
    spec = metric_spec(name)
    fn = spec.function
    kwargs = dict(options)
    if spec.stochastic or "seed" in fn.__code__.co_varnames:
        kwargs.setdefault("seed", seed)
    takes = fn.__code__.co_varnames[: fn.__code__.co_argcount + fn.__code__.co_kwonlyargcount]
    if "batch_size" in takes:
        kwargs.setdefault("batch_size", batch_size)
    if "quiet" in takes:
        kwargs.setdefault("quiet", quiet)
    probabilities = kwargs.get("softmax", _default(fn, "softmax")) is True
    if "softmax" in takes and model is not None and probabilities:
        from xaikit.zoo.heads import get_task

        if get_task(model).name == "multilabel":
            kwargs["softmax"] = "multilabel"  # each label's own probability, not a softmax
    if spec.needs == "maps":
        return fn(maps, **kwargs)
    if spec.needs == "masks":
        if masks is None:
            raise XaikitConfigError(f"metric {name!r} needs ground-truth masks")
        return fn(maps, masks, **kwargs)
    if model is None:
        raise XaikitConfigError(f"metric {name!r} needs the model")
    if spec.needs == "model":
        return fn(model, x, maps, targets, **kwargs)
    if explainer is None:
        raise XaikitConfigError(f"metric {name!r} re-explains inputs: pass explainer=")
    if spec.needs == "explainer":

        def explain_fn(inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return explainer(model, inputs, t)

        return fn(model, x, maps, targets, explain_fn, **kwargs)
    return fn(model, x, maps, targets, explainer, **kwargs)
