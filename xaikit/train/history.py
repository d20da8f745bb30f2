"""The training history: one record per epoch, saved as CSV, JSON and a curves figure."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from xaikit.errors import DataError
from xaikit.io import atomic_write_json, atomic_write_text, read_document
from xaikit.schema import Int, List, Number, Table, check
from xaikit.train.curves import plot_history

#: Epochs a history may hold (a run of :data:`xaikit.train.recipe.MAX_EPOCHS` at most).
MAX_HISTORY_EPOCHS = 100_000
#: ``history.json``: a list of per-epoch records, each with its ``epoch`` (counting from 1)
#: and numbers (``null`` where a value was NaN): what the curves and the report's table plot.
HISTORY_SPEC = List(
    Table(
        {"epoch": Int(1, MAX_HISTORY_EPOCHS)},
        required=("epoch",),
        extra=Number(optional=True),
    ),
    max_len=MAX_HISTORY_EPOCHS,
    describe="a list of per-epoch records",
)


#: The files :meth:`History.save` writes, by kind.
HISTORY_FILES = {"csv": "history.csv", "json": "history.json", "curves": "curves.png"}


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
        paths = {kind: folder / name for kind, name in HISTORY_FILES.items()}
        atomic_write_text(paths["csv"], self.to_csv())
        atomic_write_json(paths["json"], json_safe(list(self)))
        plot_history(self, paths["curves"])
        return paths


def read_history(path: str | os.PathLike[str]) -> History:
    """Read a ``history.json`` written by :meth:`History.save`, checked record by record.

    Raises:
        DataError: one line naming the field, e.g. ``history.json: [2].train_loss must be a
            number or null, got 'abc'``; or the file is not a regular file, over 16 MiB,
            not JSON or nested too deep.
    """
    records = read_document(path, what="history", error=DataError)
    check(records, HISTORY_SPEC, where=str(path), error=DataError)
    return History(records)
