"""Feature accentuation written batch by batch into a folder, with a journal to resume.

:func:`accentuate_into` is ``xaikit filters --mode accentuate``: each render (one start image
towards one unit, :mod:`xaikit.filters.accentuation`) gets ``accentuate/NNNN_channel_UUUU``
``.png`` (the picture) and ``.npy`` (the exact float image), and a line in
``accentuate.journal.jsonl`` once its batch is done, so an interrupted run keeps what it
finished and ``resume`` renders only the rest. A render's random draws are keyed by its unit
(:func:`xaikit.filters._common.key_generator`), not by its batch, so a resumed render is the
one an uninterrupted run makes (to float rounding of a different batch).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xaikit.errors import XaikitConfigError
from xaikit.filters._common import is_quiet
from xaikit.filters.maximize import (
    Maximization,
    _done,
    _header_readable,
    from_summary,
    journal_records,
    maximize,
)

#: The journal of an accentuation run, in its output folder.
JOURNAL = "accentuate.journal.jsonl"


def stem(row: int, unit: int) -> str:
    """``accentuate/<row>_channel_<unit>``: the files of render ``row`` (towards ``unit``)."""
    return f"accentuate/{row:04d}_channel_{unit:04d}"


def read_journal(out: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
    """The records of ``out``'s journal whose files check out (inside ``out``, present, of
    the recorded size), by render row; a journal with another ``header`` is refused. None
    when there is no journal, or its first line (the settings) cannot be read: a journal
    that cannot vouch for its settings is started again."""
    path = out / JOURNAL
    if not path.is_file() or not _header_readable(path):
        return None
    records: dict[int, dict[str, Any]] = {}
    for record in journal_records(path, header):
        row, unit = record.get("row"), record.get("unit")
        well_formed = isinstance(row, int) and isinstance(unit, int)
        if well_formed and isinstance(record.get("summary"), dict) and _done(out, record):
            records[row] = record
    return records


def accentuate_into(
    out: str | os.PathLike[str],
    model: nn.Module,
    layer: str | nn.Module | None,
    units: Sequence[int],
    starts: torch.Tensor,
    *,
    header: dict[str, Any],
    resume: bool = False,
    batch_size: int = 64,
    quiet: bool | None = None,
    **options: Any,
) -> tuple[Maximization, list[str]]:
    """Accentuate ``starts[r]`` towards ``units[r]`` for every row ``r``, a batch at a time,
    writing each row's files and journal record as its batch finishes.

    Args:
        out: the output folder.
        model, layer: as :func:`xaikit.filters.maximize`.
        units: ``R`` units (channels / classes), one per row.
        starts: ``(R, C, H, W)`` start images in ``[0, 1]``.
        header: the settings the results depend on (model, layer, steps, seed, penalty,
            the images); resuming a journal with another header is an error.
        resume: keep the rows the journal records as done.
        batch_size: rows per optimization.
        options: passed to :func:`xaikit.filters.maximize` (``steps``, ``seed``,
            ``penalty``, ``normalization``, ...).

    Returns:
        the :class:`Maximization` of all rows (finished rows read back from their ``.npy``)
        and the files written or kept, relative to ``out``.
    """
    from xaikit.filters._plot import image_png
    from xaikit.io import atomic_write_bytes

    rows = [int(u) for u in units]
    if starts.shape[0] != len(rows):
        raise XaikitConfigError(f"{len(rows)} units but {starts.shape[0]} start images")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    found = read_journal(folder, header) if resume else None
    fresh = found is None  # no journal, one whose settings cannot be read, or no resume
    done = {r: rec for r, rec in (found or {}).items() if r < len(rows) and rec["unit"] == rows[r]}
    pending = [r for r in range(len(rows)) if r not in done]
    journal_path = folder / JOURNAL
    chunks = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
    with open(journal_path, "w" if fresh else "a", encoding="utf-8") as journal:
        if fresh:
            journal.write(json.dumps({"header": header}) + "\n")
            journal.flush()
        bar = tqdm(
            chunks,
            desc=f"accentuate {len(pending)} images",
            unit="batch",
            disable=is_quiet(quiet),
            leave=False,
        )
        for chunk in bar:
            part = maximize(
                model,
                layer,
                [rows[r] for r in chunk],
                start=starts[chunk],
                batch_size=batch_size,
                quiet=True,
                **options,
            )
            images = part.images.detach().float().cpu()
            for i, row in enumerate(chunk):
                name = stem(row, rows[row])
                buffer = io.BytesIO()
                np.save(buffer, images[i].numpy())
                png = image_png(images[i])
                atomic_write_bytes(folder / f"{name}.png", png)
                atomic_write_bytes(folder / f"{name}.npy", buffer.getvalue())
                record = {
                    "row": row,
                    "unit": rows[row],
                    "layer": part.layer,
                    "objective": part.objective,
                    "summary": part.summary()[i],
                    "files": {f"{name}.png": len(png), f"{name}.npy": len(buffer.getvalue())},
                }
                done[row] = record
                journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
    records = [done[r] for r in range(len(rows))]
    images = torch.stack(
        [
            torch.from_numpy(np.load(folder / f"{stem(r, u)}.npy", allow_pickle=False))
            for r, u in enumerate(rows)
        ]
    )
    summary = [record["summary"] for record in records]
    result = from_summary(
        images,
        rows,
        summary,
        layer=records[0]["layer"] if records else None,
        objective=records[0]["objective"] if records else "",
        steps=int(options.get("steps", header.get("steps", 256))),
        seed=int(options.get("seed", header.get("seed", 0))),
        param="accentuation",
        start=starts.detach().float().cpu(),
        distance=torch.tensor([s.get("distance", 0.0) for s in summary], dtype=torch.float64),
    )
    files = [name for record in records for name in record["files"]]
    return result, files
