"""The training history: one record per epoch, saved as CSV, JSON and a curves figure."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from xaikit.io import atomic_write_json, atomic_write_text
from xaikit.train.curves import plot_history


def json_safe(value: Any) -> Any:
    """``value`` with every nan or infinite float replaced by ``None`` (strict JSON has no
    NaN, and browsers' ``JSON.parse`` rejects it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class History(list):
    """A list of per-epoch records (dicts of numbers), e.g.

    ``{"epoch": 3, "lr": 0.01, "train_loss": 0.41, "train_accuracy": 0.86,
    "val_loss": 0.52, "val_accuracy": 0.83, "seconds": 1.9}``.
    """

    def columns(self) -> list[str]:
        """Every key of every record, in order of first appearance."""
        names: dict[str, None] = {}
        for record in self:
            names.update(dict.fromkeys(record))
        return list(names)

    def column(self, name: str) -> list[Any]:
        """The values of ``name`` over the epochs (``None`` where a record lacks it)."""
        return [record.get(name) for record in self]

    def to_csv(self) -> str:
        """The history as CSV text, one row per epoch."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self)
        return buffer.getvalue()

    def save(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``history.csv``, ``history.json`` and ``curves.png`` into ``directory``.

        Returns the paths by kind (``"csv"``, ``"json"``, ``"curves"``).
        """
        folder = Path(directory)
        paths = {
            "csv": folder / "history.csv",
            "json": folder / "history.json",
            "curves": folder / "curves.png",
        }
        atomic_write_text(paths["csv"], self.to_csv())
        atomic_write_json(paths["json"], json_safe(list(self)))
        plot_history(self, paths["curves"])
        return paths
