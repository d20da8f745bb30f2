"""The report's heatmap gallery: several methods side by side for every test sample.

* images: one row per sample (input, truth and prediction, one overlay per method, the
  true class's ground-truth mask drawn as a contour); a multi-label model gets one row per
  label - every label it predicts or the sample carries, at most :data:`MAX_LABELS` - with
  the label's name, probability, whether it is true / predicted, and that label's mask;
* every image of the gallery is encoded at one size, chosen by :func:`cell_side` so that the
  gallery fits its byte budget (100 samples stay under 5 MB);
* signals (1-D CNNs): the trace with each method's attribution as a colour band;
* sequences (recurrent models): per method one (sample x time) heatmap, the marker steps of
  the ``recall`` task drawn over it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xaikit.explain.api import explain
from xaikit.explain.temporal import explain_sequence
from xaikit.viz.colormaps import CONTOUR_COLOR
from xaikit.viz.html import Section, badge, encode_png, escape, figure_png, img
from xaikit.viz.overlay import mask_contour, overlay, signal_overlay, to_display_image
from xaikit.viz.report_figures import temporal_matrix_figure

if TYPE_CHECKING:
    from xaikit.viz.report import ReportContext

SIGNAL_GALLERY_MAX = 16  # signal figures are larger than image cells
DISPLAY_PX = 112  # CSS width of a gallery cell
GALLERY_COLORS = 128  # palette of gallery cells (see encode_png)
MIN_CELL_PX = 24  # the budget never shrinks a cell below this
MAX_LABELS = 4  # rows per sample of a multi-label gallery
CELL_MARKUP = 200  # bytes of HTML around each gallery image


@dataclass
class GalleryCell:
    """One gallery image before encoding: ``rgb`` ``(H, W, 3)`` uint8 and its markup."""

    rgb: np.ndarray
    alt: str
    title: str | None = None
    after: str = ""

    def html(self, side: int) -> str:
        png = encode_png(self.rgb, max_side=side, colors=GALLERY_COLORS)
        image = img(png, self.alt, title=self.title, css_class="zoomable", width=DISPLAY_PX)
        return image + self.after


def cell_side(cells: list[GalleryCell], cell_px: int, budget: int) -> int:
    """The longest side the cells are encoded at: their own size up to ``cell_px``, shrunk
    until the estimated page bytes of all cells (base64 and markup included) fit ``budget``.

    The estimate encodes a dozen cells spread over the gallery at the candidate size; a
    smaller size is re-measured, since fewer pixels compress less well.
    """
    if not cells:
        return cell_px
    side = min(cell_px, max(cells[0].rgb.shape[:2]))
    step = max(1, len(cells) // 12)
    sample = cells[::step][:12]
    for _ in range(4):
        sizes = [len(encode_png(c.rgb, max_side=side, colors=GALLERY_COLORS)) for c in sample]
        estimate = (sum(sizes) / len(sizes) * 4 / 3 + CELL_MARKUP) * len(cells)
        if estimate <= budget or side <= MIN_CELL_PX:
            break
        side = max(MIN_CELL_PX, int(side * math.sqrt(budget / estimate) * 0.97))
    return side


def _mask_for(ctx: ReportContext, index: int, cls: int) -> torch.Tensor | None:
    truth = ctx.truth
    if truth is None or truth.dim() != 4 or cls < 0 or cls >= truth.shape[1]:
        return None
    mask = truth[index, cls]
    return mask if bool(mask.any()) else None


def _input_cell(ctx: ReportContext, index: int, classes: list[int]) -> GalleryCell:
    """The input as displayed, with the contours of ``classes``' ground-truth masks."""
    rgb = (to_display_image(ctx.inputs[index]) * 255).round().astype(np.uint8)
    for cls in classes:
        mask = _mask_for(ctx, index, cls)
        if mask is not None:
            rgb[mask_contour(mask.numpy())] = CONTOUR_COLOR
    return GalleryCell(rgb, f"input {index}")


def _image_targets(ctx: ReportContext) -> Any:
    """``"predicted"`` for multi-class; for multi-label, per sample the labels it carries or
    the model predicts (at most :data:`MAX_LABELS`, true and predicted ones first, then by
    probability), or the most probable label when there are none."""
    if ctx.task != "multilabel":
        return "predicted"
    predicted = ctx.predicted.bool()
    truth = ctx.targets.bool() if ctx.targets.dim() == 2 else torch.zeros_like(predicted)
    chosen = []
    for i in range(min(ctx.settings.n, predicted.shape[0])):
        labels = (predicted[i] | truth[i]).nonzero().reshape(-1).tolist()
        rank = sorted(
            labels,
            key=lambda k: (not (predicted[i, k] and truth[i, k]), -float(ctx.probabilities[i, k])),
        )
        chosen.append(sorted(rank[:MAX_LABELS]) or [int(ctx.probabilities[i].argmax())])
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
    ctx: ReportContext, results: dict[str, Any], method: str, index: int, k: int, mask_class: int
) -> GalleryCell:
    """The overlay of target ``k`` of sample ``index``, with the contour of ``mask_class``'s
    ground-truth mask (the object for multi-class data, the explained label otherwise)."""
    res = results[method]
    cls = int(res.targets[index, k])
    heat = res.maps[index, k].detach().float().cpu()
    mask = _mask_for(ctx, index, mask_class)
    rgb = overlay(ctx.inputs[index], heat, mask=None if mask is None else mask.numpy())
    name = ctx.class_names[cls] if 0 <= cls < len(ctx.class_names) else str(cls)
    tip = f"{method} · {name} · score {float(res.scores[index, k]):.3g}"
    after = '<br><span class="bad">constant map</span>' if bool(res.degenerate[index, k]) else ""
    return GalleryCell(rgb, f"{method} {index} {name}", title=tip, after=after)


def _truth_text(ctx: ReportContext, index: int) -> str:
    if ctx.targets.dim() != 1:
        return ""
    true_name = ctx.label_name(index)
    pred_name, p = ctx.outcome(index)
    mark = '<span class="ok">✓</span>' if pred_name == true_name else '<span class="bad">✗</span>'
    return f"true <b>{escape(true_name)}</b><br>pred {escape(pred_name)} ({p:.2f}) {mark}"


# A gallery row: markup strings and cells in page order; the cells are encoded last, once
# the byte budget has fixed their size.
Row = list[str | GalleryCell]


def _multiclass_rows(ctx: ReportContext, results: dict[str, Any]) -> list[Row]:
    first = next(iter(results.values()))
    rows: list[Row] = []
    for i in range(first.maps.shape[0]):
        # The object's own mask: the true class where labels are known, else the explained.
        cls = int(ctx.targets[i]) if ctx.targets.dim() == 1 else int(first.targets[i, 0])
        row: Row = [f"<td>#{i}</td>", "<td>", _input_cell(ctx, i, [cls]), "<br>"]
        row += [_truth_text(ctx, i), "</td>"]
        for method in ctx.methods:
            row += ["<td>", _overlay_cell(ctx, results, method, i, 0, cls), "</td>"]
        rows.append(row)
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


def _multilabel_rows(ctx: ReportContext, results: dict[str, Any]) -> list[Row]:
    first = next(iter(results.values()))
    rows: list[Row] = []
    for i in range(first.maps.shape[0]):
        ks = [k for k in range(first.maps.shape[1]) if bool(first.valid[i, k])]
        classes = [int(first.targets[i, k]) for k in ks]
        for j, k in enumerate(ks):
            row: Row = []
            if j == 0:
                span = f' rowspan="{len(ks)}"'
                row += [
                    f"<td{span}>#{i}</td>",
                    f"<td{span}>",
                    _input_cell(ctx, i, classes),
                    "</td>",
                ]
            row.append(f"<td>{_label_text(ctx, i, classes[j])}</td>")
            for method in ctx.methods:
                cell = _overlay_cell(ctx, results, method, i, k, classes[j])
                row += ["<td>", cell, "</td>"]
            rows.append(row)
    return rows


def _image_gallery(ctx: ReportContext) -> str:
    results = image_explanations(ctx)
    first = next(iter(results.values()))
    multilabel = ctx.task == "multilabel"
    header = ["#", "input", *(["label"] if multilabel else []), *ctx.methods]
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    rows = _multilabel_rows(ctx, results) if multilabel else _multiclass_rows(ctx, results)
    cells = [part for row in rows for part in row if isinstance(part, GalleryCell)]
    side = cell_side(cells, ctx.settings.cell_px, ctx.settings.gallery_budget)
    body = [
        "<tr>" + "".join(p.html(side) if isinstance(p, GalleryCell) else p for p in row) + "</tr>"
        for row in rows
    ]
    native = max(ctx.inputs.shape[-2:])
    scaled = (
        f" Images are stored at {side} px (inputs are {native} px) to keep the page small."
        if side < native
        else ""
    )
    layer = first.layer or "input"
    contour = (
        ""
        if ctx.truth is None
        else " White contour: the ground-truth mask of the "
        + ("explained label." if multilabel else "true class.")
    )
    target = (
        f"one row per label the model predicts or the sample carries (at most {MAX_LABELS})"
        if multilabel
        else "explaining the predicted class"
    )
    intro = (
        f"<p>{first.maps.shape[0]} test samples, {target}. CAM methods at layer "
        f"<code>{escape(layer)}</code>; maps min-max normalized per map (blue 0, red 1).{contour}"
        f"{scaled} Click an image to enlarge it.</p>"
    )
    return (
        intro
        + f'\n<table class="gallery">\n<thead>{head}</thead>\n<tbody>\n'
        + "\n".join(body)
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
    head = "<tr><th>#</th><th>truth</th>" + "".join(f"<th>{escape(m)}</th>" for m in ctx.methods)
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
    png = figure_png(temporal_matrix_figure(maps, markers), dpi=72, max_width=1100)
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
