"""Summary figures of the report, the demo and the examples (matplotlib, Agg, never shown).

* :func:`overlay_grid_figure` - any table of heatmap overlays with a title per cell;
  :func:`method_grid_figure` (rows: images, columns: methods) and :func:`label_grid_figure`
  (rows: images, columns: the labels explained for each) build on it;
* :func:`temporal_matrix_figure` - per method one (sequence x time) heatmap;
* :func:`signal_atlas_figure` - the filter atlas of a 1-D layer as curves;
* :func:`evaluation_figure` / :func:`cascade_figure` - an
  :class:`~xaikit.evaluate.EvaluationReport` as bar charts (direction arrows, baselines in
  grey) and as the randomization cascade.

Save any of them with :func:`xaikit.viz.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from xaikit.errors import XaikitConfigError
from xaikit.evaluate import METRICS, EvaluationReport
from xaikit.filters import Atlas
from xaikit.filters._plot import new_figure
from xaikit.viz.colormaps import display_family, display_map
from xaikit.viz.overlay import overlay, to_display_image

BASELINES = ("random", "gaussian")
BASELINE_COLOR = "#9aa3ad"
SCORE_METRICS = ("deletion_auc", "insertion_auc", "pointing_game", "energy_pointing_game")
_PALETTE = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)


@dataclass(frozen=True)
class GridCell:
    """One cell of :func:`overlay_grid_figure`.

    Attributes:
        image: ``(C, H, W)`` unnormalized input in ``[0, 1]``.
        heatmap: ``(h, w)`` map in ``[0, 1]``, or ``None`` to show the image alone.
        title: text above the cell.
        mask: optional ``(H, W)`` ground-truth mask drawn as a contour.
        cmap: the cell's colormap (a gradient method's display rule); ``None``: the grid's.
    """

    image: torch.Tensor
    heatmap: torch.Tensor | None = None
    title: str = ""
    mask: torch.Tensor | None = None
    cmap: str | None = None


def overlay_grid_figure(
    rows: Sequence[Sequence[GridCell | None]],
    *,
    title: str | None = None,
    cell_inches: float = 1.7,
    cmap: str = "jet",
) -> Figure:
    """A grid of overlays, one row per sequence in ``rows`` (``None`` leaves a cell blank)."""
    if not rows or not any(rows):
        raise XaikitConfigError("overlay_grid_figure needs at least one cell")
    ncols = max(len(row) for row in rows)
    fig = new_figure(cell_inches * ncols, cell_inches * len(rows) + (0.4 if title else 0.0))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_axis_off()
            cell = row[c] if c < len(row) else None
            if cell is None:
                continue
            mask = None if cell.mask is None else cell.mask.detach().cpu().numpy()
            if cell.heatmap is None:
                picture = to_display_image(cell.image)
                if mask is not None:
                    picture = overlay(cell.image, np.zeros(picture.shape[:2]), alpha=0.0, mask=mask)
            else:
                heat = cell.heatmap.detach().cpu()
                picture = overlay(cell.image, heat, mask=mask, cmap=cell.cmap or cmap)
            ax.imshow(picture, interpolation="nearest")
            # Plain text (a class named "$\foo$" is no mathtext), and never a whole long name.
            ax.set_title(str(cell.title)[:120], fontsize=7, parse_math=False, usetex=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def method_grid_figure(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    captions: Sequence[str] | None = None,
    masks: torch.Tensor | None = None,
    title: str | None = None,
    raw: Mapping[str, torch.Tensor] | None = None,
    sign: str = "auto",
) -> Figure:
    """Rows: images; columns: the input then one overlay per method.

    CAM-family columns are drawn as always (the ``[0, 1]`` map on jet); gradient methods by
    :func:`xaikit.viz.colormaps.display_map` (``|a|`` clipped at its 99th percentile on a
    sequential colormap, or signed on a diverging one with ``sign="all"``), from ``raw`` when
    it has the method, else from its ``[0, 1]`` map; the column title names the rule (e.g.
    ``"saliency (|a| ≤p99)"``).

    Args:
        images: ``(N, C, H, W)`` unnormalized inputs.
        maps: ``{method: (N, H, W)}`` heatmaps in ``[0, 1]``.
        captions: ``N`` texts for the input column (e.g. ``"star -> star 0.97"``).
        masks: ``(N, H, W)`` ground-truth masks drawn as contours.
        raw: ``{method: (N, H, W)}`` raw signed maps of gradient methods (optional; the sign
            of a signed method is lost in its min-max ``[0, 1]`` map).
        sign: the display rule's ``sign`` (see :func:`~xaikit.viz.colormaps.display_map`).
    """
    rows = []
    for i in range(images.shape[0]):
        mask = None if masks is None else masks[i]
        caption = captions[i] if captions is not None else f"#{i}"
        row = [GridCell(images[i], None, caption, mask)]
        for name, m in maps.items():
            if display_family(name) == "cam":
                row.append(GridCell(images[i], m[i], name, mask))
                continue
            source = raw[name] if raw is not None and name in raw else m
            shown = display_map(source[i], name, sign=sign)
            heat = torch.from_numpy(shown.colour_values)
            row.append(GridCell(images[i], heat, f"{name} ({shown.short})", mask, shown.cmap))
        rows.append(row)
    return overlay_grid_figure(rows, title=title)


def label_grid_figure(
    images: torch.Tensor,
    maps: torch.Tensor,
    labels: Sequence[Sequence[str | None]],
    *,
    masks: torch.Tensor | None = None,
    captions: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Rows: images; columns: the input, then one map per explained label.

    Args:
        images: ``(N, C, H, W)`` unnormalized inputs.
        maps: ``(N, K, H, W)`` one map per explained label (padding allowed).
        labels: ``N`` lists of ``K`` cell titles, ``None`` for padding (left blank).
        masks: ``(N, K, H, W)`` the ground-truth mask of each explained label.
    """
    rows: list[list[GridCell | None]] = []
    for i in range(images.shape[0]):
        row: list[GridCell | None] = [
            GridCell(images[i], None, captions[i] if captions is not None else f"#{i}")
        ]
        for k, text in enumerate(labels[i]):
            if text is None:
                row.append(None)
                continue
            mask = None if masks is None else masks[i, k]
            row.append(GridCell(images[i], maps[i, k], text, mask))
        rows.append(row)
    return overlay_grid_figure(rows, title=title)


def temporal_matrix_figure(
    maps: Mapping[str, torch.Tensor],
    markers: torch.Tensor | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Per method, the ``(N, T)`` temporal heatmaps as one image (a row per sequence);
    ``markers`` ``(N,)`` ground-truth steps are drawn as blue ticks."""
    if not maps:
        raise XaikitConfigError("temporal_matrix_figure needs at least one method's maps")
    count = next(iter(maps.values())).shape[0]
    fig = new_figure(3.4 * len(maps) + 0.8, min(0.16 * count + 1.5, 16))
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    image = None
    for ax, (method, values) in zip(axes, maps.items()):
        data = values.detach().float().cpu().numpy()
        image = ax.imshow(data, aspect="auto", cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
        if markers is not None:
            ax.scatter(
                markers[:count].cpu().numpy(), np.arange(count), marker="|", s=40, c="tab:blue"
            )
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("time step")
        ax.set_ylabel("sequence")
    fig.colorbar(image, ax=list(axes), pad=0.01, label="|attribution|")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _colours(methods: Sequence[str]) -> list[str]:
    return [
        BASELINE_COLOR if m in BASELINES else _PALETTE[i % len(_PALETTE)]
        for i, m in enumerate(methods)
    ]


def evaluation_figure(report: EvaluationReport) -> Figure:
    """Bar charts, one panel per metric (titled with its direction arrow), one bar per
    method with the standard error; the baselines grey and hatched."""
    methods = report.methods
    metrics = [m for m in SCORE_METRICS if any(m in report.scores[x] for x in methods)]
    if not metrics:
        raise XaikitConfigError("this evaluation report holds no deletion/insertion figures")
    fig = new_figure(3.2 * len(metrics) + 0.4, 3.3)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colours = _colours(methods)
    positions = np.arange(len(methods))
    for ax, metric in zip(axes, metrics):
        means, errors = [], []
        for method in methods:
            entry = report.scores[method].get(metric, {})
            mean, std, n = entry.get("mean"), entry.get("std"), entry.get("n") or 0
            means.append(math.nan if mean is None else float(mean))
            ok = std is not None and n > 0 and math.isfinite(float(std))
            errors.append(float(std) / math.sqrt(n) if ok else 0.0)
        bars = ax.bar(positions, np.nan_to_num(means), yerr=errors, color=colours, capsize=2)
        for bar, method in zip(bars, methods):
            if method in BASELINES:
                bar.set_hatch("//")
        info = METRICS[metric]
        ax.set_title(f"{info.title} {info.arrow}", fontsize=10)
        ax.set_xticks(positions)
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=8)
        top = max((m for m in means if math.isfinite(m)), default=1.0)
        ax.set_ylim(0, max(1.0, top))
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(
        f"explanation quality on {report.settings.get('n')} inputs "
        "(grey, hatched: baselines; mean ± standard error)",
        fontsize=10,
    )
    return fig


def cascade_figure(report: EvaluationReport) -> Figure | None:
    """The randomization cascade: Spearman correlation with the trained model's maps as more
    layers are re-initialized (head first), one line per method; ``None`` when the report
    has no sanity checks."""
    if not report.sanity:
        return None
    fig = new_figure(7.0, 3.3)
    ax = fig.add_subplot()
    labels: list[str] = []
    threshold = None
    for method, checks in report.sanity.items():
        randomization = checks["randomization"]
        cascade = randomization["cascade"]
        threshold = randomization.get("threshold", threshold)
        labels = [step["layer"] for step in cascade] or labels
        values = [math.nan if s["spearman"] is None else s["spearman"] for s in cascade]
        style = {"color": BASELINE_COLOR, "linestyle": "--"} if method in BASELINES else {}
        ax.plot(range(len(values)), values, marker="o", label=method, **style)
    if threshold is not None:
        ax.axhline(threshold, color="black", linewidth=0.8, linestyle=":", label="pass below")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("Spearman ρ with trained ↓")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("cascading randomization (layers re-initialized, head first)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def signal_atlas_figure(found: Atlas) -> Figure:
    """An :class:`~xaikit.filters.Atlas` of a 1-D (signal) layer drawn as curves: per channel,
    the maximizing signal, then its top exemplars cropped to the receptive field (each input
    channel one line), titled with the data set index and activation."""
    images = found.maximization.images.detach().float().cpu()  # (C, C_in, L)
    crops = found.exemplars.crops
    if images.dim() != 3 or crops is None or crops.dim() != 4:
        raise XaikitConfigError("signal_atlas_figure draws the atlas of a 1-D layer")
    crops = crops.detach().float().cpu()  # (C, k, C_in, w)
    count, k = crops.shape[:2]
    fig = new_figure(1.7 * (k + 1) + 0.4, 1.15 * count + 0.7)
    axes = fig.subplots(count, k + 1, squeeze=False)
    for row, channel in enumerate(found.channels):
        curves = [(images[row], f"c{channel} max {float(found.maximization.score[row]):.2g}")]
        curves += [
            (crops[row, j], f"#{int(i)}: {float(v):.2g}")
            for j, (i, v) in enumerate(
                zip(found.exemplars.indices[row], found.exemplars.values[row])
            )
        ]
        for ax, (values, text) in zip(axes[row], curves):
            for line in values:
                ax.plot(line.numpy(), linewidth=1)
            ax.set_title(text, fontsize=7)
            ax.set_xticks([])
            ax.tick_params(labelsize=5)
    fig.suptitle(
        f"{found.layer}: maximizing signal | top {k} exemplars (receptive-field crops)",
        fontsize=9,
    )
    return fig
