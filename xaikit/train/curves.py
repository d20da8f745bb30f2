"""Training curves: loss and metrics against the epoch, drawn with matplotlib's Agg backend."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xaikit.io import atomic_path


def _numeric(history: Sequence[dict[str, Any]], name: str) -> list[float]:
    values = [record.get(name) for record in history]
    return [float("nan") if v is None else float(v) for v in values]


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Draw ``train_loss`` / ``val_loss`` (left) and every other ``train_*`` / ``val_*`` score
    (right) against the epoch, and save the figure as a PNG at ``path`` (atomically)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [record.get("epoch", i + 1) for i, record in enumerate(history)]
    names: dict[str, None] = {}
    for record in history:
        names.update(dict.fromkeys(record))
    losses = [n for n in names if n in ("train_loss", "val_loss")]
    scores = [
        n
        for n in names
        if n.startswith(("train_", "val_"))
        and n not in losses
        and all(isinstance(r.get(n), (int, float, type(None))) for r in history)
    ]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, score_axes = figure.subplots(1, 2)
    for name in losses:
        loss_axes.plot(epochs, _numeric(history, name), marker="o", label=name)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    for name in scores:
        score_axes.plot(epochs, _numeric(history, name), marker="o", label=name)
    score_axes.set(xlabel="epoch", ylabel="score", title="metrics")
    for axes, plotted in ((loss_axes, losses), (score_axes, scores)):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if plotted:
            axes.legend(loc="best")
        axes.grid(alpha=0.3)
    if losses and all(
        v > 0 for name in losses for v in _numeric(history, name) if math.isfinite(v)
    ):
        loss_axes.set_yscale("log")
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return target
