"""Every figure for one or more heatmap methods at once, next to the random and centred-Gaussian
baselines: what ``xaikit evaluate`` prints and writes.

:func:`evaluate_methods` computes the maps with :func:`xaikit.explain.explain` (or any
explainer callable) and scores them with the tensor metrics of this package: deletion and
insertion AUC, the pointing game and its energy variant when ground-truth masks are given, and
the sanity checks. :meth:`EvaluationReport.table` renders a plain-text table with direction
arrows; :meth:`EvaluationReport.to_dict` is the JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xaikit._names import DEFAULT_BASELINES
from xaikit.errors import XaikitConfigError
from xaikit.evaluate._common import (
    Explainer,
    Normalization,
    TargetSpec,
    check_inputs,
    compute_maps,
    layer_name,
    make_explainer,
    method_name,
    model_inputs,
    resolve_targets,
)
from xaikit.evaluate.baselines import gaussian_explainer, random_explainer
from xaikit.evaluate.metadata import METRICS
from xaikit.evaluate.perturbation import DEFAULT_STEPS, deletion_curve, insertion_curve
from xaikit.evaluate.pointing import energy_pointing_game, pointing_game
from xaikit.evaluate.sanity import class_contrast, randomization_check
from xaikit.explain.adapter import ExplainWarning
from xaikit.explain.state import model_device


def summarize(values: torch.Tensor) -> dict[str, float | int]:
    """``{"mean", "std", "n"}`` over the finite entries of ``values`` (NaN = not applicable)."""
    flat = values.detach().reshape(-1).double().cpu()
    flat = flat[torch.isfinite(flat)]
    n = int(flat.numel())
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(flat.std()) if n > 1 else 0.0
    return {"mean": float(flat.mean()), "std": std, "n": n}


@dataclass
class EvaluationReport:
    """Figures per method (baselines included), the sanity checks and how to read them.

    Attributes:
        scores: ``{method: {metric: {"mean", "std", "n"}}}``; the pointing-game entries also
            hold ``"per_class"`` means.
        sanity: ``{method: {"randomization": ..., "class_contrast": ...}}`` (see
            :class:`~xaikit.evaluate.sanity.RandomizationResult` and ``ContrastResult``).
        settings: the options used (steps, baselines, tolerance, seed, ...).
    """

    scores: dict[str, dict[str, dict[str, Any]]]
    sanity: dict[str, dict[str, Any]]
    settings: dict[str, Any]

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: scores, sanity checks, settings and every used metric's metadata."""
        used = {metric for row in self.scores.values() for metric in row}
        if self.sanity:
            used |= {"randomization_spearman", "randomization_ssim", "class_contrast"}
            used |= {"class_contrast_l1"}
        return {
            "settings": self.settings,
            "metrics": {name: METRICS[name].to_dict() for name in METRICS if name in used},
            "scores": self.scores,
            "sanity": self.sanity,
        }

    def table(self) -> str:
        """A plain-text table: one row per metric with its arrow (↑ higher is better,
        ↓ lower is better), one column per method; sanity rows end in pass/fail."""
        methods = self.methods
        rows: list[tuple[str, list[str]]] = []
        for name, info in METRICS.items():
            if not any(name in self.scores[m] for m in methods):
                continue
            cells = [_fmt(self.scores[m].get(name, {}).get("mean")) for m in methods]
            title = info.title
            if name == "pointing_game" and self.settings.get("tolerance"):
                title += f" (±{self.settings['tolerance']} px)"
            rows.append((f"{title} {info.arrow}", cells))
            if name == "pointing_game":
                rows.extend(self._per_class_rows(name))
        if self.sanity:
            top = next(iter(self.sanity.values()))["randomization"]["top_layers"]
            info = METRICS["randomization_spearman"]
            rows.append(
                (
                    f"randomization ρ (top {top}) {info.arrow}",
                    [self._sanity_cell(m, "randomization") for m in methods],
                )
            )
            info = METRICS["class_contrast"]
            rows.append(
                (
                    f"{info.title} {info.arrow}",
                    [self._sanity_cell(m, "class_contrast") for m in methods],
                )
            )
        label_width = max([len("metric")] + [len(label) for label, _ in rows])
        widths = [
            max([len(m)] + [len(cells[i]) for _, cells in rows]) for i, m in enumerate(methods)
        ]

        def line(label: str, cells: list[str]) -> str:
            padded = [f"{cell:>{width}}" for cell, width in zip(cells, widths)]
            return "  ".join([f"{label:<{label_width}}", *padded])

        lines = [line("metric", methods)] + [line(label, cells) for label, cells in rows]
        lines.append("↑ higher is better, ↓ lower is better")
        return "\n".join(lines)

    def _per_class_rows(self, metric: str) -> list[tuple[str, list[str]]]:
        """One indented row per class (per label for multi-label data) of ``metric``."""
        per_class = [self.scores[m].get(metric, {}).get("per_class", {}) for m in self.methods]
        classes = list(dict.fromkeys(k for entry in per_class for k in entry))
        return [(f"  {name}", [_fmt(entry.get(name)) for entry in per_class]) for name in classes]

    def _sanity_cell(self, method: str, check: str) -> str:
        entry = self.sanity.get(method, {}).get(check)
        if entry is None:
            return "-"
        return f"{_fmt(entry['score'])} {entry['verdict']}"


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def _explainer(
    method: str | Explainer, *, layer: str, seed: int, options: dict[str, Any]
) -> Explainer:
    if method == "random":
        return random_explainer(seed)
    if method == "gaussian":
        return gaussian_explainer()
    if isinstance(method, str):
        return make_explainer(method, layer=layer, seed=seed, **options)
    return make_explainer(method)


def _localization_items(
    masks: torch.Tensor, labels: torch.Tensor | None, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image index (M,), class (M,), mask (M, H, W))`` for every map the games score."""
    if masks.shape[0] != n or masks.dim() not in (3, 4):
        raise XaikitConfigError(
            f"masks must be (N, H, W) or per-class (N, K, H, W) with N = {n}; got "
            f"{tuple(masks.shape)}"
        )
    if masks.dim() == 4:
        present = masks.flatten(2).ne(0).any(dim=2)  # (N, K)
        image, cls = present.nonzero(as_tuple=True)
        return image, cls, masks[image, cls]
    if labels is None or labels.dim() != 1:
        raise XaikitConfigError("(N, H, W) masks need labels (N,): the class each mask belongs to")
    return torch.arange(n, device=masks.device), labels, masks


def evaluate_methods(
    model: nn.Module,
    inputs: torch.Tensor,
    methods: str | Explainer | Sequence[str | Explainer] = "gradcam",
    *,
    labels: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    target: TargetSpec = "predicted",
    baselines: Sequence[str] = DEFAULT_BASELINES,
    steps: int = DEFAULT_STEPS,
    deletion_baseline: str | float = "zeros",
    insertion_start: str | float = "blur",
    tolerance: int = 0,
    sanity: bool = True,
    layer: str | nn.Module = "auto",
    seed: int = 0,
    batch_size: int = 64,
    normalization: Normalization | None = None,
    class_names: Sequence[str] | None = None,
    quiet: bool | None = None,
    **options: Any,
) -> EvaluationReport:
    """Score heatmap methods and the random / centred-Gaussian baselines on one batch.

    Args:
        model: the classifier (borrowed, never modified).
        inputs: ``(N, C, H, W)`` images before ``normalization``.
        methods: one or more method names for :func:`xaikit.explain.explain`, or explainer
            callables ``(model, inputs, target (N,)) -> (N, H, W)``.
        labels: ``(N,)`` ground-truth classes, used with ``(N, H, W)`` masks.
        masks: ground-truth masks for the pointing games: per class ``(N, K, H, W)`` (each
            class present in an image - non-empty mask - is explained and scored against its
            own mask: per-label for multi-label data) or ``(N, H, W)`` with ``labels``.
        target: the class deletion/insertion explain (default: the predicted class, as in
            RISE).
        baselines: control maps to add as columns (``"random"``, ``"gaussian"``).
        steps, deletion_baseline, insertion_start: see
            :func:`~xaikit.evaluate.perturbation.deletion_curve` / ``insertion_curve``.
        tolerance: pointing-game tolerance in pixels (Zhang et al. allow 15 px at 224x224,
            i.e. 4 px at 64x64); above 0 the exact game (0 px) is reported beside it as
            ``pointing_game_exact``.
        sanity: also run the randomization and class-contrast checks.
        layer: the explained layer for CAM methods.
        seed: for the random baseline, stochastic methods and the randomization check.
        batch_size: rows per forward pass of the perturbation curves.
        normalization: per-channel ``mean``/``std`` the model expects (applied after
            perturbing).
        class_names: names for the per-class pointing-game figures.
        quiet: hide progress bars.
        **options: passed to ``explain`` for every named method.

    Returns:
        :class:`EvaluationReport`.
    """
    check_inputs(inputs)
    device = model_device(model)
    inputs = inputs.to(device)
    n = inputs.shape[0]
    listed = [methods] if isinstance(methods, str) or callable(methods) else list(methods)
    for extra in baselines:
        if extra not in ("random", "gaussian"):
            raise XaikitConfigError(f"unknown baseline {extra!r}; choose 'random' or 'gaussian'")
    names = [method_name(m) for m in listed] + list(baselines)
    if len(set(names)) != len(names):
        raise XaikitConfigError(f"methods must be distinct, got {names}")
    layer = layer_name(model, layer)
    x = model_inputs(inputs, normalization)
    targets = resolve_targets(model, x, target, batch_size=batch_size)
    if targets.dim() != 1:
        raise XaikitConfigError("evaluate_methods takes one target per input, (N,)")
    items = None
    if masks is not None:
        lab = None if labels is None else torch.as_tensor(labels, device=device).long()
        items = _localization_items(masks.to(device), lab, n)

    curve_kw = {"steps": steps, "batch_size": batch_size, "normalization": normalization}
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    checks: dict[str, dict[str, Any]] = {}
    for method, name in zip([*listed, *baselines], names):
        explainer = _explainer(method, layer=layer, seed=seed, options=options)
        maps = compute_maps(explainer, model, x, targets)
        row: dict[str, dict[str, Any]] = {}
        deletion = deletion_curve(
            model, inputs, maps, targets, baseline=deletion_baseline, quiet=quiet, **curve_kw
        )
        insertion = insertion_curve(
            model, inputs, maps, targets, start=insertion_start, quiet=quiet, **curve_kw
        )
        row["deletion_auc"] = summarize(deletion.auc)
        row["insertion_auc"] = summarize(insertion.auc)
        if items is not None:
            image, cls, item_masks = items
            item_maps = compute_maps(explainer, model, x[image], cls)
            hits = pointing_game(item_maps, item_masks, tolerance=tolerance)
            energy = energy_pointing_game(item_maps, item_masks)
            row["pointing_game"] = {
                **summarize(hits),
                "per_class": _per_class(hits, cls, class_names),
            }
            if tolerance:  # the strict figure beside the tolerant one, so both are seen
                exact = pointing_game(item_maps, item_masks)
                row["pointing_game_exact"] = {
                    **summarize(exact),
                    "per_class": _per_class(exact, cls, class_names),
                }
            row["energy_pointing_game"] = {
                **summarize(energy),
                "per_class": _per_class(energy, cls, class_names),
            }
        scores[name] = row
        if sanity:
            randomization = randomization_check(
                model, x, explainer, targets, seed=seed, quiet=quiet
            )
            with warnings.catch_warnings():
                # The method's maps of these images were computed (and warned about) above.
                warnings.simplefilter("ignore", ExplainWarning)
                contrast = class_contrast(model, x, explainer)
            checks[name] = {
                "randomization": {**randomization.to_dict(), "method": name},
                "class_contrast": {**contrast.to_dict(), "method": name},
            }
    settings = {
        "n": n,
        "methods": names,
        "target": target if isinstance(target, (str, int)) else "per-input",
        "steps": steps,
        "deletion_baseline": deletion_baseline,
        "insertion_start": insertion_start,
        "tolerance": tolerance,
        "layer": layer,
        "seed": seed,
        "normalization": None if normalization is None else dict(normalization),
        "options": {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool))},
    }
    return EvaluationReport(scores=scores, sanity=checks, settings=settings)


def _per_class(
    values: torch.Tensor, classes: torch.Tensor, class_names: Sequence[str] | None
) -> dict[str, float]:
    """Mean of ``values`` per class, NaN entries left out: ``{name or index: mean}``."""
    out: dict[str, float] = {}
    for k in torch.unique(classes).tolist():
        key = class_names[k] if class_names is not None and k < len(class_names) else str(k)
        out[key] = summarize(values[classes == k])["mean"]
    return out
