"""Every figure for one or more heatmap methods at once, next to the random and centred-Gaussian
baselines: what ``xaikit evaluate`` prints and writes.

:func:`evaluate_methods` computes the maps with :func:`xaikit.explain.explain` (or any
explainer callable) and scores them with the tensor metrics of this package: deletion and
insertion AUC, the pointing game and its energy variant when ground-truth masks are given, and
the sanity checks. :meth:`EvaluationReport.table` renders a plain-text table with direction
arrows; :meth:`EvaluationReport.to_dict` is the JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xaikit._names import DEFAULT_BASELINES
from xaikit.distributed import current, gather_in_order
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
from xaikit.evaluate.sanity import (
    ContrastResult,
    RandomizationResult,
    class_contrast,
    randomization_check,
)
from xaikit.explain.adapter import ExplainWarning
from xaikit.explain.state import model_device

#: The metrics of the original suite, selectable by name in ``metrics=`` too.
SUITE_METRICS = ("deletion_auc", "insertion_auc", "pointing_game", "energy_pointing_game")


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

    def comparison(self) -> dict[str, Any]:
        """Methods x metrics with ranks, the direction of each metric applied: ``{"metrics":
        [...], "methods": {method: {"means": {metric: mean}, "ranks": {metric: rank},
        "mean_rank": r}}}``; rank 1 is the best, ties share their average rank, a missing or
        NaN mean is unranked (``None``)."""
        names = [m for m in METRICS if any(m in row for row in self.scores.values())]
        names += [m for row in self.scores.values() for m in row if m not in names]
        methods = self.methods
        table: dict[str, dict[str, Any]] = {m: {"means": {}, "ranks": {}} for m in methods}
        for metric in names:
            means = {m: self.scores[m].get(metric, {}).get("mean") for m in methods}
            higher = METRICS[metric].higher_is_better if metric in METRICS else True
            ranks = _rank(means, higher)
            for m in methods:
                table[m]["means"][metric] = means[m]
                table[m]["ranks"][metric] = ranks[m]
        for m in methods:
            ranked = [r for r in table[m]["ranks"].values() if r is not None]
            table[m]["mean_rank"] = sum(ranked) / len(ranked) if ranked else None
        return {"metrics": names, "methods": table}

    def comparison_table(self) -> str:
        """The :meth:`comparison` as text: one row per metric (title and arrow), one column per
        method, each cell ``mean (rank)``; the last row is each method's mean rank."""
        view = self.comparison()
        methods = self.methods
        rows: list[tuple[str, list[str]]] = []
        for metric in view["metrics"]:
            info = METRICS.get(metric)
            label = f"{info.title} {info.arrow}" if info is not None else metric
            cells = []
            for m in methods:
                mean = view["methods"][m]["means"][metric]
                rank = view["methods"][m]["ranks"][metric]
                cells.append("-" if rank is None else f"{_fmt(mean)} ({rank:g})")
            rows.append((label, cells))
        mean_ranks = [view["methods"][m]["mean_rank"] for m in methods]
        rows.append(("mean rank", ["-" if r is None else f"{r:.2f}" for r in mean_ranks]))
        label_width = max([len("metric")] + [len(label) for label, _ in rows])
        widths = [
            max([len(m)] + [len(cells[i]) for _, cells in rows]) for i, m in enumerate(methods)
        ]

        def line(label: str, cells: list[str]) -> str:
            padded = [f"{cell:>{width}}" for cell, width in zip(cells, widths)]
            return "  ".join([f"{label:<{label_width}}", *padded])

        lines = [line("metric", methods)] + [line(label, cells) for label, cells in rows]
        lines.append("cells: mean (rank; 1 = best, the metric's direction applied)")
        lines.append("↑ higher is better, ↓ lower is better")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: scores, sanity checks, settings and every used metric's metadata (and the
        methods x metrics ``comparison`` when ``metrics=`` chose the figures)."""
        used = {metric for row in self.scores.values() for metric in row}
        if self.sanity:
            used |= {"randomization_spearman", "randomization_ssim", "class_contrast"}
            used |= {"class_contrast_l1"}
        out = {
            "settings": self.settings,
            "metrics": {name: METRICS[name].to_dict() for name in METRICS if name in used},
            "scores": self.scores,
            "sanity": self.sanity,
        }
        if self.settings.get("metrics") is not None:
            out["comparison"] = self.comparison()
        return out

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


def _rank(means: dict[str, Any], higher_is_better: bool) -> dict[str, float | None]:
    """Rank 1 = best; ties get their average rank; ``None`` / NaN stay unranked."""
    valid = {
        k: float(v) for k, v in means.items() if isinstance(v, (int, float)) and math.isfinite(v)
    }
    ordered = sorted(valid.values(), reverse=higher_is_better)
    ranks: dict[str, float | None] = {k: None for k in means}
    for k, v in valid.items():
        positions = [i + 1 for i, w in enumerate(ordered) if w == v]
        ranks[k] = sum(positions) / len(positions)
    return ranks


def bootstrap_ci(
    values: torch.Tensor, *, seed: int = 0, resamples: int = 1000, level: float = 0.95
) -> list[float]:
    """``[low, high]`` percentile bootstrap interval of the mean of the finite ``values``
    (seeded; NaN bounds for fewer than 2 values)."""
    flat = values.detach().reshape(-1).double().cpu()
    flat = flat[torch.isfinite(flat)]
    if flat.numel() < 2:
        return [math.nan, math.nan]
    gen = torch.Generator().manual_seed(int(seed))
    index = torch.randint(0, flat.numel(), (resamples, flat.numel()), generator=gen)
    means = flat[index].mean(1)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return [float(low), float(high)]


def _summary_with_values(values: torch.Tensor, seed: int) -> dict[str, Any]:
    flat = values.detach().reshape(-1).double().cpu()
    return {
        **summarize(flat),
        "ci95": bootstrap_ci(flat, seed=seed),
        "values": [float(v) if math.isfinite(v) else None for v in flat.tolist()],
    }


def metric_rows(model: nn.Module, x: torch.Tensor, memory_budget: int | str | None) -> int:
    """Rows (perturbed inputs) per forward pass that fit the memory budget (see
    :func:`xaikit.explain.engine.parse_memory_budget` and ``sample_bytes``), at most 64 on a
    CPU."""
    from xaikit.explain.adapter import ModelAdapter
    from xaikit.explain.engine import parse_memory_budget, sample_bytes

    budget = parse_memory_budget(memory_budget)
    per_row = sample_bytes(ModelAdapter(model, x[:1]))
    rows = int(max(1, min(4096, budget // max(1, per_row))))
    # On a CPU larger batches only cost cache misses: one image per row is fastest near 64.
    return rows if model_device(model).type != "cpu" else min(rows, 64)


def _catalogue_options(
    name: str, x: torch.Tensor, steps: int, options: dict[str, Any]
) -> dict[str, Any]:
    """The options metric ``name`` accepts: the given ones, plus suite defaults that keep
    per-feature metrics to about ``steps`` perturbation steps and ``k`` within the image."""
    from xaikit.evaluate.catalogue import metric_spec

    fn = metric_spec(name).function
    code = fn.__code__
    accepted = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    out = {k: v for k, v in options.items() if k in accepted}
    features = x[0].numel()
    if "features_in_step" in accepted and "features_in_step" not in out:
        out["features_in_step"] = max(1, math.ceil(features / steps))
    if name == "top_k_intersection" and "k" not in out:
        out["k"] = min(1000, math.prod(x.shape[2:]))
    if name == "faithfulness_correlation" and "subset_size" not in out:
        out["subset_size"] = min(224, features)
    return out


def check_metric_names(metrics: Sequence[str]) -> list[str]:
    """The metric names, without duplicates, each one of the suite's or the catalogue's."""
    from xaikit.evaluate.catalogue import CATALOGUE

    selected = list(dict.fromkeys(metrics))
    unknown = [m for m in selected if m not in CATALOGUE and m not in SUITE_METRICS]
    if unknown or not selected:
        raise XaikitConfigError(
            f"unknown metric {unknown[0] if unknown else '(none given)'!r}; choose from "
            f"{', '.join([*SUITE_METRICS, *CATALOGUE])}"
        )
    return selected


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
    metrics: Sequence[str] | None = None,
    metric_options: dict[str, Any] | None = None,
    memory_budget: int | str | None = None,
    **options: Any,
) -> EvaluationReport:
    """Score heatmap methods and the random / centred-Gaussian baselines on one batch.

    Every figure is computed per chunk of ``batch_size`` consecutive inputs (the batches of
    one pass) and per sample; the means, bootstrap intervals, per-class figures and sanity
    verdicts are computed from all the per-sample values. Under ``torchrun`` each rank
    scores its chunks (:meth:`xaikit.distributed.Group.chunks`, one meeting of the ranks to
    put the values back in input order), so every rank returns the report one process
    returns. Random draws are made per chunk with :func:`chunk_seed` (the first chunk keeps
    ``seed``): the random baseline and the catalogue metrics' noise and subsets. The
    randomization check re-initializes the model with ``seed`` in every chunk (one cascade,
    as in one batch). Catalogue metrics that are not per sample (sensitivity-n) are computed
    on all the inputs at once, on every rank.

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
        batch_size: rows per forward pass of the perturbation curves, and the inputs of a
            chunk (scored together; the unit the ranks of ``torchrun`` share out).
        normalization: per-channel ``mean``/``std`` the model expects (applied after
            perturbing).
        class_names: names for the per-class pointing-game figures.
        quiet: hide progress bars.
        metrics: compute only these: names of :data:`~xaikit.evaluate.catalogue.CATALOGUE`
            (faithfulness, robustness, localisation, complexity, randomisation, axiomatic)
            and/or of :data:`SUITE_METRICS`; the sanity checks are then skipped. Each entry of
            ``scores`` then also holds ``"ci95"`` (seeded bootstrap of the mean) and
            ``"values"`` (per sample), and the report a methods x metrics ``comparison``.
            ``None`` (default): the original suite. Catalogue metrics perturb what the model
            takes (the inputs after ``normalization``), as Quantus does; deletion / insertion
            keep perturbing the raw images.
        metric_options: keyword options given to every catalogue metric that accepts them
            (e.g. ``{"nr_samples": 20}``); by default per-feature metrics take
            ``features_in_step = ceil(C*H*W / steps)``.
        memory_budget: bytes (or ``"512M"``) for the perturbed rows of one forward pass
            (default: ``$XAIKIT_MEMORY_BUDGET`` or 1 GiB).
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
    selected = None if metrics is None else check_metric_names(metrics)
    if selected is not None:
        sanity = False
    _check_target(target, n)
    layer = layer_name(model, layer)
    x = model_inputs(inputs, normalization)
    items = None
    if masks is not None:
        lab = None if labels is None else torch.as_tensor(labels, device=device).long()
        items = _localization_items(masks.to(device), lab, n)

    curve_kw = {"steps": steps, "batch_size": batch_size, "normalization": normalization}
    rows = metric_rows(model, x, memory_budget) if selected is not None else batch_size
    # Every figure is computed chunk by chunk (``batch_size`` consecutive inputs, the batches
    # one process makes), per sample; under torchrun each rank takes its chunks
    # (xaikit.distributed) and the per-sample values are put back in input order before any
    # mean, interval or table: the report is the same for any number of ranks.
    group = current()
    chunk = max(1, int(batch_size))
    job = _Job(
        model=model, inputs=inputs, x=x, target=target, items=items, methods=listed,
        baselines=list(baselines), names=names, layer=layer, seed=seed, options=options,
        selected=selected, sanity=sanity, curve_kw=curve_kw, tolerance=tolerance,
        deletion_baseline=deletion_baseline, insertion_start=insertion_start, steps=steps,
        rows=rows, quiet=quiet, metric_options=dict(metric_options or {}),
    )  # fmt: skip
    mine = [job.chunk(part.start, part.stop) for part in group.chunks(n, chunk)]
    parts = gather_in_order(group, -(-n // chunk), 1, mine)
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    checks: dict[str, dict[str, Any]] = {}
    for name in names:
        values = _join([part[name] for part in parts])
        row: dict[str, dict[str, Any]] = {}
        cls = values.get("item_class")
        if selected is None:
            row["deletion_auc"] = summarize(values["deletion_auc"])
            row["insertion_auc"] = summarize(values["insertion_auc"])
            if items is not None:
                games = ["pointing_game", *(["pointing_game_exact"] if tolerance else [])]
                for game in [*games, "energy_pointing_game"]:
                    row[game] = {
                        **summarize(values[game]),
                        "per_class": _per_class(values[game], cls, class_names),
                    }
        else:
            for metric in selected:
                if metric not in values:
                    continue
                row[metric] = _summary_with_values(values[metric], seed)
                if metric in ("pointing_game", "energy_pointing_game"):
                    row[metric]["per_class"] = _per_class(values[metric], cls, class_names)
            for metric in job.whole_batch_metrics():
                row[metric] = _summary_with_values(job.whole_batch(name, metric, n, chunk), seed)
            order = [m for m in SUITE_METRICS if m in selected]
            order += [m for m in selected if m not in SUITE_METRICS]
            row = {metric: row[metric] for metric in order if metric in row}
        scores[name] = row
        if sanity:
            randomization = _join_randomization(values["randomization"])
            contrast = _join_contrast(values["class_contrast"])
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
    if selected is not None:
        settings["metrics"] = selected
        settings["metric_options"] = {
            k: v
            for k, v in (metric_options or {}).items()
            if isinstance(v, (str, int, float, bool))
        }
        settings["rows_per_forward"] = rows
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


def chunk_seed(seed: int, start: int) -> int:
    """The seed of the chunk of inputs that starts at input ``start``: ``seed`` itself for
    the first chunk (so one batch draws what it always drew), a hash of both for the others.

    Random draws (the random baseline, the noise and subsets of the catalogue metrics) are
    made per chunk with it, so they depend on which inputs a chunk holds, never on the rank
    that computes it or on the number of ranks."""
    if start == 0:
        return int(seed)
    digest = hashlib.blake2b(f"{int(seed)}:{int(start)}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def _chunk_target(target: TargetSpec, lo: int, hi: int) -> TargetSpec:
    if isinstance(target, (str, int)):
        return target
    t = torch.as_tensor(target)
    return t if t.dim() == 0 else t[lo:hi]


def _check_target(target: TargetSpec, n: int) -> None:
    if isinstance(target, (str, int)):
        return
    t = torch.as_tensor(target)
    if t.dim() > 0 and t.shape[0] != n:
        raise XaikitConfigError(
            f"target must be one class per input, (N,) with N = {n}; got {tuple(t.shape)}"
        )


def _cpu(value: torch.Tensor) -> torch.Tensor:
    return value.detach().cpu()


@dataclass
class _Job:
    """What :func:`evaluate_methods` computes for one chunk of inputs ``[lo, hi)``: per
    method, every per-sample value (and the sanity checks' per-sample parts)."""

    model: nn.Module
    inputs: torch.Tensor
    x: torch.Tensor
    target: TargetSpec
    items: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    methods: list[str | Explainer]
    baselines: list[str]
    names: list[str]
    layer: str
    seed: int
    options: dict[str, Any]
    selected: list[str] | None
    sanity: bool
    curve_kw: dict[str, Any]
    tolerance: int
    deletion_baseline: str | float
    insertion_start: str | float
    steps: int
    rows: int
    quiet: bool | None
    metric_options: dict[str, Any]

    def __post_init__(self) -> None:
        self._explainers: dict[str, Explainer | None] = {}
        for method, name in zip([*self.methods, *self.baselines], self.names):
            # the random baseline is drawn per chunk (chunk_seed); the others are seeded once
            self._explainers[name] = (
                None
                if method == "random"
                else _explainer(method, layer=self.layer, seed=self.seed, options=self.options)
            )

    def explainer(self, name: str, lo: int) -> Explainer:
        explainer = self._explainers[name]
        return random_explainer(chunk_seed(self.seed, lo)) if explainer is None else explainer

    def targets(self, lo: int, hi: int) -> torch.Tensor:
        target = _chunk_target(self.target, lo, hi)
        batch_size = self.curve_kw["batch_size"]
        targets = resolve_targets(self.model, self.x[lo:hi], target, batch_size=batch_size)
        if targets.dim() != 1:
            raise XaikitConfigError("evaluate_methods takes one target per input, (N,)")
        return targets

    def wants(self, metric: str) -> bool:
        return self.selected is None or metric in self.selected

    def catalogue(self) -> list[str]:
        return [m for m in self.selected or [] if m not in SUITE_METRICS]

    def whole_batch_metrics(self) -> list[str]:
        """Catalogue metrics whose values are not per sample (sensitivity-n): computed on all
        the inputs at once, on every rank, from the same chunked maps."""
        from xaikit.evaluate.catalogue import metric_spec

        return [m for m in self.catalogue() if not metric_spec(m).per_sample]

    def whole_batch(self, name: str, metric: str, n: int, chunk: int) -> torch.Tensor:
        from xaikit.evaluate.catalogue import run_metric

        maps, targets = [], []
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            targets.append(self.targets(lo, hi))
            maps.append(
                compute_maps(self.explainer(name, lo), self.model, self.x[lo:hi], targets[-1])
            )
        kwargs = _catalogue_options(metric, self.x, self.steps, self.metric_options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExplainWarning)
            return run_metric(
                metric, self.model, self.x, torch.cat(maps), torch.cat(targets),
                explainer=self.explainer(name, 0), seed=self.seed, batch_size=self.rows,
                quiet=self.quiet, **kwargs,
            )  # fmt: skip

    def chunk(self, lo: int, hi: int) -> dict[str, dict[str, Any]]:
        from xaikit.evaluate.catalogue import metric_spec, run_metric

        model, x, raw = self.model, self.x[lo:hi], self.inputs[lo:hi]
        targets = self.targets(lo, hi)
        local = None
        if self.items is not None:
            image, cls, item_masks = self.items
            inside = (image >= lo) & (image < hi)
            local = (image[inside] - lo, cls[inside], item_masks[inside])
        out: dict[str, dict[str, Any]] = {}
        curve_kw = self.curve_kw
        for name in self.names:
            explainer = self.explainer(name, lo)
            maps = compute_maps(explainer, model, x, targets)
            values: dict[str, Any] = {}
            if self.wants("deletion_auc"):
                values["deletion_auc"] = _cpu(
                    deletion_curve(
                        model, raw, maps, targets, baseline=self.deletion_baseline,
                        quiet=self.quiet, **curve_kw,
                    ).auc
                )  # fmt: skip
            if self.wants("insertion_auc"):
                values["insertion_auc"] = _cpu(
                    insertion_curve(
                        model, raw, maps, targets, start=self.insertion_start,
                        quiet=self.quiet, **curve_kw,
                    ).auc
                )  # fmt: skip
            item_maps = None
            if local is not None:
                where, cls, item_masks = local
                values["item_class"] = _cpu(cls)
                if where.numel():
                    item_maps = compute_maps(explainer, model, x[where], cls)
                games = {
                    "pointing_game": lambda m, k: pointing_game(m, k, tolerance=self.tolerance),
                    "energy_pointing_game": energy_pointing_game,
                }
                if self.selected is None and self.tolerance:
                    games["pointing_game_exact"] = pointing_game
                for game, fn in games.items():
                    if self.selected is not None and game not in self.selected:
                        continue
                    values[game] = (
                        torch.zeros(0) if item_maps is None else _cpu(fn(item_maps, item_masks))
                    )
            for metric in self.catalogue():
                spec = metric_spec(metric)
                if not spec.per_sample:
                    continue
                kwargs = _catalogue_options(metric, self.x, self.steps, self.metric_options)
                if spec.needs == "masks":
                    if local is None:
                        continue  # no ground truth: localisation skipped, as the games
                    if item_maps is None:
                        values[metric] = torch.zeros(0)
                        continue
                    values[metric] = _cpu(
                        run_metric(metric, None, x, item_maps, targets, masks=local[2], **kwargs)
                    )
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExplainWarning)
                    values[metric] = _cpu(
                        run_metric(
                            metric, model, x, maps, targets, explainer=explainer,
                            seed=chunk_seed(self.seed, lo), batch_size=self.rows,
                            quiet=self.quiet, **kwargs,
                        )
                    )  # fmt: skip
            if self.sanity:
                randomization = randomization_check(
                    model, x, explainer, targets, seed=self.seed, quiet=self.quiet
                )
                with warnings.catch_warnings():
                    # The method's maps of these images were computed (and warned about) above.
                    warnings.simplefilter("ignore", ExplainWarning)
                    contrast = class_contrast(model, x, explainer)
                values["randomization"] = dataclasses.replace(
                    randomization,
                    spearman=_cpu(randomization.spearman),
                    ssim=None if randomization.ssim is None else _cpu(randomization.ssim),
                )
                values["class_contrast"] = dataclasses.replace(
                    contrast,
                    classes=_cpu(contrast.classes),
                    dissimilarity=_cpu(contrast.dissimilarity),
                    l1=_cpu(contrast.l1),
                )
            out[name] = values
        return out


def _join(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's per-chunk values, in input order: tensors concatenated (first dimension),
    the sanity checks' results listed."""
    out: dict[str, Any] = {}
    for key in parts[0] if parts else []:
        chunks = [part[key] for part in parts]
        if isinstance(chunks[0], torch.Tensor):
            out[key] = torch.cat(chunks)
        else:
            out[key] = chunks
    return out


def _join_randomization(parts: list[RandomizationResult]) -> RandomizationResult:
    """The randomization check of all the inputs from its chunks' (same cascade, same seed:
    the per-input correlations side by side, the score their mean)."""
    first = parts[0]
    rho = torch.cat([p.spearman for p in parts], dim=1)
    ssims = None if first.ssim is None else torch.cat([p.ssim for p in parts], dim=1)  # type: ignore[misc]
    score = float(rho[first.top_layers - 1].mean())
    verdict = "pass" if score < first.threshold else "fail"
    return dataclasses.replace(first, spearman=rho, ssim=ssims, score=score, verdict=verdict)


def _join_contrast(parts: list[ContrastResult]) -> ContrastResult:
    first = parts[0]
    dissimilarity = torch.cat([p.dissimilarity for p in parts])
    score = float(dissimilarity.mean())
    return dataclasses.replace(
        first,
        classes=torch.cat([p.classes for p in parts]),
        dissimilarity=dissimilarity,
        l1=torch.cat([p.l1 for p in parts]),
        score=score,
        verdict="pass" if score >= first.threshold else "fail",
    )
