"""The report's heatmap gallery: several methods side by side for every test sample.

* images: one row per sample (input, truth and prediction, one overlay per method, the
  ground-truth mask of the explained class drawn as a contour); a multi-label model gets one
  row per label - every label it predicts or the sample carries - with the label's name,
  probability and whether it is true / predicted;
* signals (1-D CNNs): the trace with each method's attribution as a colour band;
* sequences (recurrent models): per method one (sample x time) heatmap, the marker steps of
  the ``recall`` task drawn over it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xaikit.explain.api import explain
from xaikit.explain.temporal import explain_sequence
from xaikit.filters._plot import new_figure
from xaikit.viz.html import Section, badge, encode_png, escape, figure_png, img
from xaikit.viz.overlay import mask_contour, overlay, signal_overlay, to_display_image
from xaikit.viz.colormaps import CONTOUR_COLOR

if TYPE_CHECKING:
    from xaikit.viz.report import ReportContext

SIGNAL_GALLERY_MAX = 16  # signal figures are larger than image cells
DISPLAY_PX = 112  # CSS width of a gallery cell


def _cell_png(rgb: np.ndarray, cell_px: int) -> bytes:
    return encode_png(rgb, max_side=cell_px)


def _mask_for(ctx: ReportContext, index: int, cls: int) -> torch.Tensor | None:
    truth = ctx.truth
    if truth is None or truth.dim() != 4 or cls < 0 or cls >= truth.shape[1]:
        return None
    mask = truth[index, cls]
    return mask if bool(mask.any()) else None


def _input_cell(ctx: ReportContext, index: int, classes: list[int]) -> str:
    rgb = (to_display_image(ctx.inputs[index]) * 255).round().astype(np.uint8)
    for cls in classes:
        mask = _mask_for(ctx, index, cls)
        if mask is not None:
            rgb[mask_contour(mask.numpy())] = CONTOUR_COLOR
    png = _cell_png(rgb, ctx.settings.cell_px)
    return img(png, f"input {index}", css_class="zoomable", width=DISPLAY_PX)


def _image_targets(ctx: ReportContext) -> Any:
    """``"predicted"`` for multi-class; per sample, predicted or true labels for multi-label."""
    if ctx.task != "multilabel":
        return "predicted"
    predicted = ctx.predicted.bool()
    truth = ctx.targets.bool() if ctx.targets.dim() == 2 else torch.zeros_like(predicted)
    chosen = []
    for i in range(predicted.shape[0]):
        labels = (predicted[i] | truth[i]).nonzero().reshape(-1).tolist()
        chosen.append(labels or [int(ctx.probabilities[i].argmax())])
    return chosen


def image_explanations(ctx: ReportContext) -> dict[str, Any]:
    """``{method: Explanation}`` of the gallery samples (cached on the context)."""
    if "explanations" not in ctx.cache:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ctx.cache["explanations"] = explain(
                ctx.model,
                ctx.model_inputs(ctx.inputs[: ctx.settings.n]),
                method=list(ctx.methods),
                target=_image_targets(ctx),
                layer=ctx.settings.layer,
                class_names=ctx.class_names,
                seed=ctx.settings.seed,
                quiet=ctx.settings.is_quiet,
                return_result=True,
            )
        ctx.note(caught, "gallery")
    return ctx.cache["explanations"]


def _overlay_cell(
    ctx: ReportContext, results: dict[str, Any], method: str, index: int, k: int
) -> str:
    res = results[method]
    cls = int(res.targets[index, k])
    heat = res.maps[index, k].detach().float().cpu()
    mask = _mask_for(ctx, index, cls)
    rgb = overlay(ctx.inputs[index], heat, mask=None if mask is None else mask.numpy())
    png = _cell_png(rgb, ctx.settings.cell_px)
    name = ctx.class_names[cls] if 0 <= cls < len(ctx.class_names) else str(cls)
    tip = f"{method} · {name} · score {float(res.scores[index, k]):.3g}"
    cell = img(png, f"{method} {index} {name}", title=tip, css_class="zoomable", width=DISPLAY_PX)
    if bool(res.degenerate[index, k]):
        cell += '<br><span class="bad">constant map</span>'
    return cell


def _truth_text(ctx: ReportContext, index: int) -> str:
    if ctx.targets.dim() != 1:
        return ""
    true_cls = int(ctx.targets[index])
    pred = int(ctx.predicted[index])
    p = float(ctx.probabilities[index, pred])
    ok = pred == true_cls
    true_name = ctx.class_names[true_cls] if true_cls < len(ctx.class_names) else str(true_cls)
    mark = '<span class="ok">✓</span>' if ok else '<span class="bad">✗</span>'
    return (
        f"true <b>{escape(true_name)}</b><br>pred {escape(ctx.class_names[pred])} "
        f"({p:.2f}) {mark}"
    )


def _multiclass_rows(ctx: ReportContext, results: dict[str, Any]) -> list[str]:
    first = next(iter(results.values()))
    rows = []
    for i in range(first.maps.shape[0]):
        cls = int(first.targets[i, 0])
        cells = [
            f"<td>#{i}</td>",
            f"<td>{_input_cell(ctx, i, [cls])}<br>{_truth_text(ctx, i)}</td>",
        ]
        cells += [f"<td>{_overlay_cell(ctx, results, m, i, 0)}</td>" for m in ctx.methods]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def _label_text(ctx: ReportContext, index: int, cls: int) -> str:
    name = ctx.class_names[cls]
    p = float(ctx.probabilities[index, cls])
    predicted = bool(ctx.predicted[index, cls])
    true = bool(ctx.targets[index, cls]) if ctx.targets.dim() == 2 else None
    tags = []
    if true is not None:
        tags.append(badge("true" if true else "not true", None))
    verdict = None if true is None else predicted == true
    tags.append(badge("predicted" if predicted else "not predicted", verdict))
    return f"<b>{escape(name)}</b><br>p = {p:.2f}<br>{' '.join(tags)}"


def _multilabel_rows(ctx: ReportContext, results: dict[str, Any]) -> list[str]:
    first = next(iter(results.values()))
    rows = []
    for i in range(first.maps.shape[0]):
        ks = [k for k in range(first.maps.shape[1]) if bool(first.valid[i, k])]
        classes = [int(first.targets[i, k]) for k in ks]
        for j, k in enumerate(ks):
            cells = []
            if j == 0:
                span = f' rowspan="{len(ks)}"'
                cells.append(f"<td{span}>#{i}</td>")
                cells.append(f"<td{span}>{_input_cell(ctx, i, classes)}</td>")
            cells.append(f"<td>{_label_text(ctx, i, classes[j])}</td>")
            cells += [f"<td>{_overlay_cell(ctx, results, m, i, k)}</td>" for m in ctx.methods]
            rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def _image_gallery(ctx: ReportContext) -> str:
    results = image_explanations(ctx)
    first = next(iter(results.values()))
    multilabel = ctx.task == "multilabel"
    header = ["#", "input", *(["label"] if multilabel else []), *ctx.methods]
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    rows = _multilabel_rows(ctx, results) if multilabel else _multiclass_rows(ctx, results)
    layer = first.layer or "input"
    contour = "" if ctx.truth is None else " The white contour is the ground-truth mask."
    target = (
        "one row per label the model predicts or the sample carries"
        if multilabel
        else "explaining the predicted class"
    )
    intro = (
        f"<p>{first.maps.shape[0]} test samples, {target}. CAM methods at layer "
        f"<code>{escape(layer)}</code>; maps min-max normalized per map (blue 0, red 1).{contour}"
        " Click an image to enlarge it.</p>"
    )
    return (
        intro
        + f'\n<table class="gallery">\n<thead>{head}</thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _signal_gallery(ctx: ReportContext) -> str:
    count = min(ctx.settings.n, SIGNAL_GALLERY_MAX, ctx.inputs.shape[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = explain(
            ctx.model,
            ctx.model_inputs(ctx.inputs[:count]),
            method=list(ctx.methods),
            layer=ctx.settings.layer,
            class_names=ctx.class_names,
            seed=ctx.settings.seed,
            quiet=ctx.settings.is_quiet,
            return_result=True,
        )
    ctx.note(caught, "gallery")
    head = "<tr><th>#</th><th>truth</th>" + "".join(
        f"<th>{escape(m)}</th>" for m in ctx.methods
    )
    rows = []
    for i in range(count):
        cells = [f"<td>#{i}</td>", f"<td>{_truth_text(ctx, i)}</td>"]
        for method in ctx.methods:
            heat = results[method].maps[i, 0].detach().float().cpu()
            fig = signal_overlay(ctx.inputs[i], heat, colorbar=False, figsize=(3.2, 1.4))
            fig.axes[0].set_xlabel("")
            png = figure_png(fig, dpi=60)
            cells.append(f"<td>{img(png, f'{method} {i}', css_class='zoomable', width=220)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        f" (the first {count} of {ctx.settings.n}: signal plots are larger than image cells)"
        if count < ctx.settings.n
        else ""
    )
    return (
        f"<p>{count} test signals{more}, explaining the predicted class; the band behind "
        "the trace is the attribution (white 0, red 1).</p>\n"
        f'<table class="gallery">\n<thead>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def temporal_maps(ctx: ReportContext) -> dict[str, torch.Tensor]:
    """``{method: (N, T)}`` temporal heatmaps of the predicted class (cached on the
    context), normalized to ``[0, 1]`` by absolute value."""
    if "temporal" not in ctx.cache:
        x = ctx.model_inputs(ctx.inputs[: ctx.settings.n])
        maps = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for method in ctx.methods:
                maps[method] = explain_sequence(ctx.model, x, method=method).detach().float().cpu()
        ctx.note(caught, "temporal heatmaps")
        ctx.cache["temporal"] = maps
    return ctx.cache["temporal"]


def marker_steps(ctx: ReportContext) -> torch.Tensor | None:
    """``(N,)`` the ground-truth step of each sequence (``recall``'s marker), or ``None``."""
    truth = ctx.truth
    if truth is None or truth.dim() != 2 or truth.shape[1] != ctx.inputs.shape[1]:
        return None
    return truth.argmax(dim=1)


def _sequence_gallery(ctx: ReportContext) -> str:
    maps = temporal_maps(ctx)
    markers = marker_steps(ctx)
    count = next(iter(maps.values())).shape[0]
    methods = list(maps)
    fig = new_figure(3.4 * len(methods) + 0.6, min(0.16 * count + 1.4, 16))
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, method in zip(axes, methods):
        image = ax.imshow(
            maps[method].numpy(), aspect="auto", cmap="Reds", vmin=0, vmax=1,
            interpolation="nearest",
        )
        if markers is not None:
            ax.scatter(
                markers[:count].numpy(), np.arange(count), marker="|", s=40, c="tab:blue",
                label="marker",
            )
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("time step")
        ax.set_ylabel("sample")
    fig.colorbar(image, ax=list(axes), pad=0.01, label="|attribution|")
    png = figure_png(fig, dpi=72, max_width=1100)
    marker_note = (
        " Blue ticks: the step that carries the label (the recall marker)."
        if markers is not None
        else ""
    )
    return (
        f"<p>{count} test sequences, one row each, explaining the predicted class: which time "
        f"steps decided the output, per method.{marker_note}</p>\n"
        f"<figure>{img(png, 'temporal heatmaps', css_class='zoomable')}</figure>"
    )


def gallery_section(ctx: ReportContext) -> Section:
    """Several heatmap methods side by side per sample (images, signals or sequences)."""
    if ctx.kind == "image":
        body = _image_gallery(ctx)
    elif ctx.kind == "signal":
        body = _signal_gallery(ctx)
    else:
        body = _sequence_gallery(ctx)
    return Section("gallery", "Heatmap gallery", body)
