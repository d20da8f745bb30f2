"""Explanation quality: is a heatmap faithful to the model, does it find the object, does it
pass the sanity checks?

Tensor metrics (heatmaps in, numbers out, batched, independent of how the maps were made):

* :func:`deletion_curve` / :func:`insertion_curve` and :func:`auc` - RISE (Petsiuk et al.,
  2018); deletion AUC ↓, insertion AUC ↑.
* :func:`pointing_game` (Zhang et al., 2018) and :func:`energy_pointing_game` (Wang et al.,
  2020, Score-CAM) against ground-truth masks; both ↑.
* :func:`spearman`, :func:`ssim`, :func:`l1_distance` - map similarity.
* :func:`random_maps`, :func:`gaussian_maps` - model-independent control maps.

Checks that call a heatmap method (a name for :func:`xaikit.explain.explain`, or a callable
``(model, inputs, target) -> maps``):

* :func:`randomization_check`, :func:`class_contrast`, :func:`sanity_check` - Adebayo et al.,
  2018, "Sanity Checks for Saliency Maps".
* :func:`evaluate_methods` - every figure for some methods next to the baselines (what
  ``xaikit evaluate`` runs).

The batched catalogue of the metrics researchers cite (in agreement with Quantus 0.6; each a
function ``(model, x, attributions, targets, ...) -> (N,)`` on the model's device):
:data:`CATALOGUE` / :func:`run_metric`, by family in :mod:`~xaikit.evaluate.faithfulness`,
:mod:`~xaikit.evaluate.robustness`, :mod:`~xaikit.evaluate.localisation`,
:mod:`~xaikit.evaluate.complexity`, :mod:`~xaikit.evaluate.randomisation_metrics` and
:mod:`~xaikit.evaluate.axiomatic`; ``evaluate_methods(..., metrics=[...])`` runs any subset.

Each metric's direction, baseline, preprocessing and paper: :data:`METRICS` /
:func:`metric_info`.
"""

# The batched metric catalogue, one module per family.
from xaikit.evaluate import (
    axiomatic,
    complexity,
    faithfulness,
    localisation,
    randomisation_metrics,
    robustness,
)
from xaikit.evaluate._common import make_explainer
from xaikit.evaluate.baselines import (
    gaussian_explainer,
    gaussian_maps,
    random_explainer,
    random_maps,
)
from xaikit.evaluate.blur import gaussian_blur
from xaikit.evaluate.catalogue import CATALOGUE, MetricSpec, metric_spec, run_metric
from xaikit.evaluate.metadata import METRICS, MetricInfo, metric_info
from xaikit.evaluate.perturbation import (
    CurveResult,
    auc,
    deletion_curve,
    insertion_curve,
    pixel_ranks,
)
from xaikit.evaluate.pointing import energy_pointing_game, pointing_game
from xaikit.evaluate.randomize import cascade_layers, randomize_layer
from xaikit.evaluate.sanity import (
    ContrastResult,
    RandomizationResult,
    SanityResult,
    class_contrast,
    randomization_check,
    sanity_check,
)
from xaikit.evaluate.similarity import average_ranks, l1_distance, spearman, ssim
from xaikit.evaluate.suite import EvaluationReport, bootstrap_ci, evaluate_methods

__all__ = [
    "CATALOGUE",
    "METRICS",
    "ContrastResult",
    "CurveResult",
    "EvaluationReport",
    "MetricInfo",
    "MetricSpec",
    "RandomizationResult",
    "SanityResult",
    "auc",
    "average_ranks",
    "axiomatic",
    "bootstrap_ci",
    "cascade_layers",
    "class_contrast",
    "complexity",
    "deletion_curve",
    "energy_pointing_game",
    "evaluate_methods",
    "faithfulness",
    "gaussian_blur",
    "gaussian_explainer",
    "gaussian_maps",
    "insertion_curve",
    "l1_distance",
    "localisation",
    "make_explainer",
    "metric_info",
    "metric_spec",
    "pixel_ranks",
    "pointing_game",
    "random_explainer",
    "random_maps",
    "randomisation_metrics",
    "randomization_check",
    "randomize_layer",
    "robustness",
    "run_metric",
    "sanity_check",
    "spearman",
    "ssim",
]
