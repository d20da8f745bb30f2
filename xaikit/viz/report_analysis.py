"""The report's analysis sections: filters, recurrent state and explanation quality.

* ``filters``: the first convolution's kernels and the :func:`xaikit.filters.atlas` of one
  layer (kernel, activation maximization and dataset exemplars per channel);
* ``recurrent``: :func:`xaikit.filters.lstm_states` (gates, cell and hidden state over time)
  and temporal heatmaps of a few sequences drawn over the sequences themselves;
* ``evaluation``: :func:`xaikit.evaluate.evaluate_methods` - deletion / insertion AUC and the
  pointing games next to random and centred-Gaussian baselines, with direction arrows, the
  sanity checks as pass/fail badges, two figures and the raw JSON. For sequence models with a
  known answer step (``recall``), how often each temporal map peaks on it.

The figures come from :mod:`xaikit.viz.report_figures`.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.evaluate import METRICS, EvaluationReport, evaluate_methods
from xaikit.explain.layers import resolve_layer
from xaikit.explain.state import has_recurrent
from xaikit.filters import Atlas, activations, atlas, lstm_states, weights
from xaikit.filters._common import conv_of
from xaikit.viz.html import Section, badge, escape, figure_png, fmt, img, table
from xaikit.viz.overlay import signal_overlay
from xaikit.viz.report_figures import (
    BASELINES,
    SCORE_METRICS,
    cascade_figure,
    evaluation_figure,
    signal_atlas_figure,
)
from xaikit.viz.report_gallery import marker_steps, temporal_maps

if TYPE_CHECKING:
    from xaikit.viz.report import ReportContext

ATLAS_EXEMPLARS = 6
GATE_SAMPLES = 2


# --------------------------------------------------------------------------- filters


def _channel_count(ctx: ReportContext, layer: str) -> int:
    maps = activations(
        ctx.model, ctx.pool[:1].to(ctx.device), layer, normalization=ctx.normalization
    )
    return int(next(iter(maps.values())).shape[1])


def default_atlas_layer(model: nn.Module) -> str:
    """The block around the first convolution when it holds only that one (``features.block1``),
    else the first convolution itself.

    The block's output is what the next layer sees (after BatchNorm and the activation), so its
    maximization images are meaningful; a raw convolution without bias followed by BatchNorm
    has tiny, sign-mixed outputs whose maximization gains almost nothing.
    """
    conv = weights(model).layer
    parent = conv.rpartition(".")[0]
    if parent:
        try:
            if conv_of(model, parent)[0] == conv:
                return parent
        except XaikitConfigError:
            pass
    return conv


def report_atlas(ctx: ReportContext) -> Atlas:
    """The atlas of the report's filter layer (the first conv block by default), cached."""
    if "atlas" not in ctx.cache:
        layer = ctx.settings.filter_layer or default_atlas_layer(ctx.model)
        count = min(_channel_count(ctx, layer), ctx.settings.atlas_channels)
        ctx.cache["atlas"] = atlas(
            ctx.model,
            layer,
            ctx.pool,
            channels=list(range(count)),
            k=min(ATLAS_EXEMPLARS, ctx.pool.shape[0]),
            steps=ctx.settings.atlas_steps,
            seed=ctx.settings.seed,
            normalization=ctx.normalization,
            quiet=ctx.settings.is_quiet,
        )
    return ctx.cache["atlas"]


def report_maco(ctx: ReportContext, layer: str) -> Any:
    """MACO feature visualizations (:func:`xaikit.filters.maximize`, ``param="maco"``) of
    the ``atlas_channels`` most active channels of ``layer`` on the pool, cached."""
    if "maco" not in ctx.cache:
        from xaikit.filters.maximize import maximize, most_active_channels

        count = min(_channel_count(ctx, layer), ctx.settings.atlas_channels)
        channels = most_active_channels(
            ctx.model, layer, ctx.pool, count, normalization=ctx.normalization
        )
        ctx.cache["maco"] = maximize(
            ctx.model,
            layer,
            channels,
            steps=ctx.settings.atlas_steps,
            param="maco",
            seed=ctx.settings.seed,
            normalization=ctx.normalization,
            quiet=ctx.settings.is_quiet,
        )
    return ctx.cache["maco"]


def concept_data(ctx: ReportContext) -> Any:
    """The report's samples as :func:`xaikit.filters.concepts` takes them: with their labels
    (class indices or multi-label vectors) when the model has one output per class, else
    bare images (importance then follows the predictions)."""
    if ctx.task in ("multiclass", "multilabel"):
        return torch.utils.data.TensorDataset(ctx.inputs, ctx.targets)
    return ctx.inputs


def report_concepts(ctx: ReportContext, layer: str) -> Any:
    """``settings.concepts`` DFF concepts of ``layer`` on the report's samples, cached."""
    if "concepts" not in ctx.cache:
        from xaikit.filters.concepts import concepts

        ctx.cache["concepts"] = concepts(
            ctx.model,
            layer,
            concept_data(ctx),
            ctx.settings.concepts,
            method="dff",
            seed=ctx.settings.seed,
            normalization=ctx.normalization,
            quiet=ctx.settings.is_quiet,
        )
    return ctx.cache["concepts"]


def _maco_part(ctx: ReportContext, layer: str) -> str:
    from xaikit.errors import XaikitError

    head = '<div id="filters-maco">\n<h3>MACO feature visualizations</h3>\n'
    if ctx.kind != "image":
        return head + '<p class="note">MACO is for image models (2-D convolutions).</p></div>'
    try:
        found = report_maco(ctx, layer)
        png = figure_png(found.figure, dpi=72, max_width=900)
    except XaikitError as err:
        return head + f'<p class="bad">Not available: {escape(err)}</p></div>'
    return (
        head + f"<p>Channels {escape(', '.join(map(str, found.units)))} of "
        f"<code>{escape(layer)}</code>, the most active on {ctx.pool.shape[0]} test inputs, "
        f"each optimized for {found.steps} steps in phase only under a natural-image "
        "spectrum (Fel et al., 2023); faded parts had little gradient (transparency).</p>\n"
        f"<figure>{img(png, 'maco feature visualizations', css_class='zoomable')}</figure>\n"
        "</div>"
    )


def _concept_class(ctx: ReportContext, cls: int) -> str:
    return ctx.class_names[cls] if 0 <= cls < len(ctx.class_names) else str(cls)


def _concepts_part(ctx: ReportContext, layer: str) -> str:
    from xaikit.errors import XaikitError

    head = '<div id="filters-concepts">\n<h3>Concepts (DFF)</h3>\n'
    if ctx.kind != "image":
        return head + '<p class="note">Concepts are for image models.</p></div>'
    try:
        bank = report_concepts(ctx, layer)
        png = figure_png(bank.figure, dpi=72, max_width=900)
    except XaikitError as err:
        return head + f'<p class="bad">Not available: {escape(err)}</p></div>'
    parts = [
        f"<p>{bank.n_concepts} concepts of <code>{escape(bank.layer)}</code>: a non-negative "
        f"factorization of its activations at every position of the report's "
        f"{ctx.inputs.shape[0]} samples (seed {bank.seed}); each row shows the crops where "
        "the concept is strongest.</p>",
        f"<figure>{img(png, 'concept exemplars', css_class='zoomable')}</figure>",
    ]
    if bank.importance is not None and bank.importance.numel():
        header = ["concept", *(_concept_class(ctx, c) for c in bank.classes)]
        rows = [
            [f"c{j}", *(fmt(float(bank.importance[i, j]), 4) for i in range(len(bank.classes)))]
            for j in range(bank.n_concepts)
        ]
        parts.append(
            "<p>Importance per class (total Sobol index: how much the class score depends on "
            "the concept):</p>\n" + table(header, rows, css_class="num concept-importance")
        )
    return head + "\n".join(parts) + "\n</div>"


def filters_section(ctx: ReportContext) -> Section:
    """First-layer kernels and the filter atlas (CNNs); a pointer for recurrent models.
    Opt-in (``settings.maco`` / ``settings.concepts``): MACO images and DFF concepts of the
    atlas layer."""
    if ctx.kind == "sequence":
        return Section(
            "filters",
            "Filters",
            '<p class="note">A recurrent model has no convolution filters; its gates and '
            'states are in <a href="#recurrent">Recurrent state</a>.</p>',
        )
    kernels = weights(ctx.model)
    png = figure_png(kernels.figure, dpi=72, max_width=700)
    shape = "x".join(str(s) for s in kernels.weight.shape)
    parts = [
        f"<h3>Kernels of the first convolution <code>{escape(kernels.layer)}</code> "
        f"({escape(shape)}, view: {escape(kernels.reduce)})</h3>",
        f"<figure>{img(png, 'first-layer kernels', css_class='pixel')}</figure>",
    ]
    found = report_atlas(ctx)
    parts.append(
        f"<p>Atlas of <code>{escape(found.layer)}</code>, channels "
        f"{escape(', '.join(map(str, found.channels)))} (exemplars searched in "
        f"{ctx.pool.shape[0]} test inputs).</p>"
    )
    if ctx.kind == "signal":
        png = figure_png(signal_atlas_figure(found), dpi=72, max_width=1000)
        parts.append(f"<figure>{img(png, 'signal atlas', css_class='zoomable')}</figure>")
    else:
        parts.append(found.html())
    if ctx.settings.maco:
        parts.append(_maco_part(ctx, found.layer))
    if ctx.settings.concepts:
        parts.append(_concepts_part(ctx, found.layer))
    return Section("filters", "Filters", "\n".join(parts))


# --------------------------------------------------------------------------- recurrent


def _gate_rows(states: Any) -> list[list[str]]:
    summary = states.summary
    return [[name.replace("_", " "), fmt(value, 3)] for name, value in summary.items()]


def recurrent_section(ctx: ReportContext) -> Section:
    """LSTM gates and states over time, and temporal heatmaps of a few sequences."""
    if ctx.kind != "sequence" or not has_recurrent(ctx.model):
        return Section(
            "recurrent",
            "Recurrent state",
            '<p class="note">Not a recurrent model: no gates or temporal heatmaps.</p>',
        )
    count = min(ctx.settings.sequences, ctx.inputs.shape[0], ctx.settings.n)
    x = ctx.inputs[:count]
    parts = []
    try:
        states = lstm_states(ctx.model, ctx.model_inputs(x))
    except XaikitConfigError as err:  # GRU / RNN models have no LSTM gates
        parts.append(f'<p class="note">No LSTM gates to show: {escape(err)}</p>')
    else:
        parts.append(
            "<h3>LSTM gates and states</h3><p>Mean gate values over these sequences (forget "
            "gates near 1 keep the memory, near 0 erase it every step):</p>"
            + table(["gate", "mean"], _gate_rows(states), css_class="num")
        )
        for sample in range(min(GATE_SAMPLES, count)):
            png = figure_png(states.figure(sample), dpi=60, max_width=800)
            parts.append(
                f"<figure>{img(png, f'lstm states {sample}', css_class='zoomable')}</figure>"
            )
    maps = temporal_maps(ctx)
    markers = marker_steps(ctx)
    parts.append(
        "<h3>Temporal heatmaps</h3><p>Each sequence's features over time with the attribution "
        "of the predicted class as a band (white 0, red 1)"
        + ("; the dashed line marks the step that carries the label" if markers is not None else "")
        + ".</p>"
    )
    for i in range(count):
        pred_name = ctx.outcome(i)[0]
        figures = []
        for method, values in maps.items():
            fig = signal_overlay(
                x[i],
                values[i],
                channels_first=False,
                colorbar=False,
                figsize=(6.0, 1.8),
                title=f"sequence {i} · {method} · predicted {pred_name}",
            )
            if markers is not None:
                fig.axes[0].axvline(int(markers[i]), color="tab:blue", linestyle="--", linewidth=1)
            figures.append(img(figure_png(fig, dpi=60), f"temporal {method} {i}", width=420))
        parts.append("<p>" + " ".join(figures) + "</p>")
    return Section("recurrent", "Recurrent state", "\n".join(parts))


# --------------------------------------------------------------------------- evaluation


def run_evaluation(ctx: ReportContext) -> EvaluationReport:
    """:func:`~xaikit.evaluate.evaluate_methods` on the report's samples (cached)."""
    if "evaluation" not in ctx.cache:
        n = min(ctx.settings.eval_n or ctx.settings.n, ctx.inputs.shape[0])
        masks = ctx.truth[:n] if ctx.truth is not None and ctx.truth.dim() == 4 else None
        labels = ctx.targets[:n] if ctx.targets.dim() == 1 and ctx.task == "multiclass" else None
        # A binary head's two outcomes are explained as the scores (-z, z) of its one logit,
        # so the class-contrast check compares the negative and positive outcomes' maps.
        sanity = ctx.settings.sanity
        ctx.cache["evaluation"] = evaluate_methods(
            ctx.model,
            ctx.inputs[:n].to(ctx.device),
            list(ctx.methods),
            labels=labels,
            masks=masks,
            steps=ctx.settings.eval_steps,
            sanity=sanity,
            layer=ctx.settings.layer,
            seed=ctx.settings.seed,
            normalization=ctx.normalization,
            class_names=ctx.class_names,
            quiet=ctx.settings.is_quiet,
            # Catalogue / suite metric names: then a methods x metrics comparison (no sanity).
            metrics=getattr(ctx.settings, "metrics", None) or None,
        )
    return ctx.cache["evaluation"]


def _mean(report: EvaluationReport, method: str, metric: str) -> float:
    value = report.scores[method].get(metric, {}).get("mean")
    return math.nan if value is None else float(value)


def _baselines(report: EvaluationReport) -> list[str]:
    return [m for m in report.methods if m in BASELINES]


def _score_table(report: EvaluationReport) -> str:
    methods = report.methods
    baselines = _baselines(report)
    header = "<tr><th>metric</th>" + "".join(
        f"<th>{escape(m)}{' (baseline)' if m in baselines else ''}</th>" for m in methods
    )
    rows = []
    for metric in SCORE_METRICS:
        if not any(metric in report.scores[m] for m in methods):
            continue
        info = METRICS[metric]
        values = {m: _mean(report, m, metric) for m in methods}
        finite = [v for v in values.values() if math.isfinite(v)]
        best = (max if info.higher_is_better else min)(finite) if finite else math.nan
        control = [values[b] for b in baselines if math.isfinite(values[b])]
        cells = []
        for method in methods:
            value = values[method]
            entry = report.scores[method].get(metric, {})
            tip = f"mean {fmt(value)} ± {fmt(entry.get('std'))} over {entry.get('n', 0)} maps"
            css = ' class="best"' if math.isfinite(value) and value == best else ""
            mark = ""
            if method not in baselines and control and math.isfinite(value):
                better = all((value > c) if info.higher_is_better else (value < c) for c in control)
                mark = (
                    ' <span class="ok" title="better than every baseline">✓</span>'
                    if better
                    else ' <span class="bad" title="not better than every baseline">✗</span>'
                )
            cells.append(f'<td{css} title="{escape(tip)}">{fmt(value)}{mark}</td>')
        title = f"{info.title} {info.arrow}"
        rows.append(
            f'<tr><th title="{escape(info.description)}">{escape(title)}</th>{"".join(cells)}</tr>'
        )
    return (
        '<table class="num">\n<thead>'
        + header
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _sanity_table(report: EvaluationReport) -> str:
    rows = []
    rho = METRICS["randomization_spearman"]
    contrast = METRICS["class_contrast"]
    for method, checks in report.sanity.items():
        rnd, con = checks["randomization"], checks["class_contrast"]
        rnd_text = (
            f"{rnd['verdict']}: ρ = {fmt(rnd['score'])} {rho.arrow} (pass ≤ "
            f"{fmt(rnd['threshold'], 2)}, top {rnd['top_layers']} layers random)"
        )
        con_text = (
            f"{con['verdict']}: {fmt(con['score'])} {contrast.arrow} (pass ≥ "
            f"{fmt(con['threshold'], 2)}, top-{con['k']} classes)"
        )
        rows.append(
            [
                escape(method),
                badge(rnd_text, rnd["verdict"], title=rho.description),
                badge(con_text, con["verdict"], title=contrast.description),
            ]
        )
    return table(["method", "parameter randomization", "class contrast"], rows, raw=True)


def _per_class_table(report: EvaluationReport) -> str:
    methods = [m for m in report.methods if "pointing_game" in report.scores[m]]
    if not methods:
        return ""
    classes: dict[str, None] = {}
    for m in methods:
        classes.update(dict.fromkeys(report.scores[m]["pointing_game"].get("per_class", {})))
    rows = [
        [name, *(fmt(report.scores[m]["pointing_game"]["per_class"].get(name)) for m in methods)]
        for name in classes
    ]
    return "<h3>Pointing game per class ↑</h3>\n" + table(
        ["class", *methods], rows, css_class="num"
    )


def _exact(value: Any) -> str:
    """A cell's exact number for ``data-*`` attributes (``""`` for None / NaN)."""
    if value is None or not math.isfinite(float(value)):
        return ""
    return repr(float(value))


def comparison_html(report: EvaluationReport) -> str:
    """:meth:`~xaikit.evaluate.EvaluationReport.comparison` as an HTML table: one row per
    metric (title and direction arrow), one column per method, each cell ``mean (rank)`` (rank
    1 the best with the metric's direction applied, ties averaged; bold: the best rank; ``-``:
    unranked), the last row each method's mean rank. Each cell also holds the exact values in
    ``data-mean`` / ``data-rank`` (``data-mean-rank`` in the last row). All text is escaped."""
    view = report.comparison()
    methods = report.methods
    baselines = _baselines(report)
    header = "<tr><th>metric</th>" + "".join(
        f"<th>{escape(m)}{' (baseline)' if m in baselines else ''}</th>" for m in methods
    )
    rows = []
    for metric in view["metrics"]:
        info = METRICS.get(metric)
        title = f"{info.title} {info.arrow}" if info is not None else metric
        tip = info.description if info is not None else metric
        ranks = [view["methods"][m]["ranks"][metric] for m in methods]
        best = min((r for r in ranks if r is not None), default=None)
        cells = []
        for method, rank in zip(methods, ranks):
            mean = view["methods"][method]["means"][metric]
            entry = report.scores[method].get(metric, {})
            text = "-" if rank is None else f"{fmt(float(mean))} ({rank:g})"
            hover = f"mean {fmt(mean)} ± {fmt(entry.get('std'))} over {entry.get('n', 0)}"
            ci = entry.get("ci95")
            if ci is not None and len(ci) == 2:
                hover += f"; 95 % CI [{fmt(ci[0])}, {fmt(ci[1])}]"
            css = ' class="best"' if rank is not None and rank == best else ""
            cells.append(
                f'<td{css} data-method="{escape(method)}" data-metric="{escape(metric)}" '
                f'data-mean="{_exact(mean)}" data-rank="{_exact(rank)}" '
                f'title="{escape(hover)}">{escape(text)}</td>'
            )
        rows.append(f'<tr><th title="{escape(tip)}">{escape(title)}</th>{"".join(cells)}</tr>')
    mean_ranks = [view["methods"][m]["mean_rank"] for m in methods]
    cells = [
        f'<td data-method="{escape(m)}" data-mean-rank="{_exact(r)}">'
        f"{'-' if r is None else escape(fmt(float(r), 2))}</td>"
        for m, r in zip(methods, mean_ranks)
    ]
    rows.append(f"<tr><th>mean rank ↓</th>{''.join(cells)}</tr>")
    return (
        '<table class="num comparison">\n<thead>'
        + header
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def evaluation_json(report: EvaluationReport) -> dict[str, Any]:
    """``report.to_dict()`` with NaN / infinities as ``null`` (strict JSON)."""
    return _json_safe(report.to_dict())


def _layer_text(ctx: ReportContext, layer: str) -> str:
    """The name behind ``"auto"``: the layer CAM methods actually used."""
    if layer != "auto":
        return layer
    example = ctx.model_inputs(ctx.inputs[:1])
    return resolve_layer(ctx.model, "auto", example)[0]


def _image_evaluation(ctx: ReportContext) -> str:
    report = run_evaluation(ctx)
    settings = report.settings
    parts = [
        f"<p>{settings['n']} test {'images' if ctx.kind == 'image' else 'signals'}, explaining "
        "the predicted class; deletion / insertion "
        f"in {settings['steps']} steps (deleted pixels become "
        f"{escape(settings['deletion_baseline'])}, insertion starts from "
        f"{escape(settings['insertion_start'])}), CAM layer "
        f"<code>{escape(_layer_text(ctx, settings['layer']))}</code>, seed {settings['seed']}. "
        "↑ higher is better, "
        "↓ lower is better; bold: best column; ✓ / ✗: better / not better than every baseline "
        "(random and centred-Gaussian maps). Hover a value for its spread.</p>",
    ]
    suite_figures = any(m in report.scores[x] for x in report.methods for m in SCORE_METRICS)
    if suite_figures:
        parts.append(_score_table(report))
    if settings.get("metrics") is not None:
        parts.append(
            "<h3>Methods x metrics</h3>\n<p>The chosen metrics "
            f"({escape(', '.join(settings['metrics']))}): each cell is the mean over the samples "
            "and, in brackets, the method's rank for that metric (1 = best, the metric's "
            "direction applied, ties averaged; bold: best). Hover a value for its spread and "
            "95 % interval.</p>\n" + comparison_html(report)
        )
    if report.sanity:
        parts.append("<h3>Sanity checks (Adebayo et al., 2018)</h3>\n" + _sanity_table(report))
    parts.append(_per_class_table(report))
    if suite_figures:
        png = figure_png(evaluation_figure(report), dpi=72, max_width=1100)
        parts.append(f"<figure>{img(png, 'evaluation figure')}</figure>")
    cascade = cascade_figure(report)
    if cascade is not None:
        png = figure_png(cascade, dpi=72, max_width=800)
        parts.append(f"<figure>{img(png, 'randomization cascade')}</figure>")
    raw = json.dumps(evaluation_json(report), indent=1)
    parts.append(
        "<details><summary>All figures as JSON (with each metric's direction, baseline and "
        f"paper)</summary>\n<pre>{escape(raw)}</pre></details>"
    )
    return "\n".join(parts)


def temporal_hits(ctx: ReportContext) -> dict[str, dict[str, float]]:
    """How well temporal maps find the step that carries the label, per method and for a
    seeded random baseline: ``{"hit rate": share of maps peaking on it, "mass": mean share of
    the map's total on it}``. Empty without ground-truth steps."""
    markers = marker_steps(ctx)
    if markers is None:
        return {}
    maps = dict(temporal_maps(ctx))
    count = next(iter(maps.values())).shape[0]
    generator = torch.Generator().manual_seed(ctx.settings.seed)
    maps["random"] = torch.rand(count, maps[next(iter(maps))].shape[1], generator=generator)
    rows = torch.arange(count)
    out = {}
    for method, values in maps.items():
        hit = (values.argmax(dim=1) == markers[:count]).float().mean()
        mass = values[rows, markers[:count]] / values.sum(dim=1).clamp(min=1e-12)
        out[method] = {"hit rate": float(hit), "mass": float(mass.mean())}
    return out


def _sequence_evaluation(ctx: ReportContext) -> str:
    hits = temporal_hits(ctx)
    if not hits:
        return (
            '<p class="note">This data set has no ground-truth time steps, so temporal maps '
            "cannot be scored; see the gallery.</p>"
        )
    count = next(iter(temporal_maps(ctx).values())).shape[0]
    rows = [
        [m + (" (baseline)" if m == "random" else ""), fmt(v["hit rate"]), fmt(v["mass"])]
        for m, v in hits.items()
    ]
    return (
        f"<p>Temporal pointing game on {count} sequences: the share of maps whose largest value "
        "lies on the step that carries the label, and the mean share of each map's total "
        "attribution on that step (random maps: about one over the sequence length).</p>\n"
        + table(["method", "hit rate ↑", "mass on the marker ↑"], rows, css_class="num")
    )


def evaluation_section(ctx: ReportContext) -> Section:
    """Explanation-quality figures, sanity badges and figures (see the module docstring)."""
    if not ctx.settings.evaluate:
        body = '<p class="note">Evaluation skipped (evaluate=False / --no-evaluate).</p>'
    elif ctx.kind == "sequence":
        body = _sequence_evaluation(ctx)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            body = _image_evaluation(ctx)
        ctx.note(caught, "evaluation")
    return Section("evaluation", "Evaluation", body)
