"""Dataset exemplars: the inputs of a data set that make each channel fire most.

One streaming pass over the data set: each batch runs forward only up to the layer
(``Capture(stop=True)``), every channel's score per input is reduced from its map, and a
running per-channel top-k (values, data set indices, strongest positions) is merged with the
batch's scores. Memory stays ``O(k * C)`` plus one batch; inputs are not kept, only their
indices. Afterwards the top inputs are fetched again by index and cropped to the receptive
field around the strongest position (:mod:`xaikit.filters.receptive_field`), as in
Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional Networks" and the
dataset examples of Olah et al., 2017, "Feature Visualization".
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from xaikit.distributed import RemoteRankError, current
from xaikit.errors import DataError, XaikitConfigError, XaikitError
from xaikit.explain.hooks import Capture
from xaikit.explain.layers import resolve_layer
from xaikit.explain.state import borrowed, model_device
from xaikit.filters._common import (
    Normalization,
    apply_normalization,
    dataset_size,
    fetch_inputs,
    is_quiet,
    model_dtype,
    normalizer,
)
from xaikit.filters._plot import grid_axes, new_figure
from xaikit.filters.receptive_field import ReceptiveField, trace_receptive_field

REDUCE = ("max", "mean")


@dataclass
class Exemplars:
    """The top-k inputs of a data set per channel, best first.

    Attributes:
        layer: the layer's name.
        channels: the channels, one row each.
        reduce: ``"max"``: an input's score is its channel map's maximum (the strongest
            single position); ``"mean"``: the map's mean (how much of the input fires it).
        values: ``(C, k)`` the scores, descending.
        indices: ``(C, k)`` long: data set indices of the inputs. Ties go to the lower index.
        positions: ``(C, k, dims)`` long: where each input's map peaks (``dims = 0`` for a
            layer without spatial dimensions).
        receptive_field: the layer's receptive field, or ``None`` (no spatial dimensions, or
            untraceable).
        boxes: ``(C, k, dims, 2)`` long: each crop's ``[lo, hi)`` per input dimension.
        crops: ``(C, k, C_in, *crop)``: the input region around each peak, ``min(field,
            input)`` pixels per dimension, inside the input (the whole input when the layer
            has no receptive field to crop to); ``None`` when ``crops=False``.
    """

    layer: str
    channels: list[int]
    reduce: str
    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor
    receptive_field: ReceptiveField | None
    boxes: torch.Tensor | None
    crops: torch.Tensor | None

    @cached_property
    def figure(self) -> Figure:
        """One row per channel: its top-k crops (or inputs), labelled with the data set index
        and score."""
        if self.crops is None:
            raise XaikitConfigError("exemplars were computed with crops=False; nothing to draw")
        crops = self.crops.detach().float().cpu()
        count, k = crops.shape[:2]
        if crops.dim() == 4:  # signals (C, k, C_in, L): 1-row images
            crops = crops.unsqueeze(3)
        flat = crops.flatten(0, 1).clamp(0, 1)
        labels = [
            f"c{c} #{int(i)}: {float(v):.2g}"
            for c, row_i, row_v in zip(self.channels, self.indices, self.values)
            for i, v in zip(row_i, row_v)
        ]
        fig = new_figure(min(1.3 * k + 0.5, 16), min(1.3 * count + 0.8, 60))
        grid_axes(fig, flat, labels, ncols=k, title=f"{self.layer}: top {k} inputs ({self.reduce})")
        return fig


def _merge(
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    new: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``k`` highest of the running ``(values, indices, positions)`` (each
    ``(C, m)``) and a batch's ``(C, n)``; ties go to the lower data set index.

    :func:`_select` orders by value, then index, whatever order the candidates come in (a
    resumed state or another rank's candidates may hold higher indices than a batch)."""
    return _select(tuple(torch.cat([b, n], dim=1) for b, n in zip(best, new)), k)


def _select(
    candidates: tuple[torch.Tensor, torch.Tensor, torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` best of ``(C, m)`` candidates: highest value first, ties to the lower index.

    Two stable sorts (by index, then by value) give exactly the order one pass in index
    order gives, which ``torch.topk`` does not promise; sorting ``k + n`` numbers per channel
    costs no more than a top-k here."""
    values, indices, _ = candidates
    by_index = torch.sort(indices, dim=1, stable=True).indices
    values = values.gather(1, by_index)
    order = by_index.gather(
        1, torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    )
    return tuple(c.gather(1, order) for c in candidates)  # type: ignore[return-value]


def exemplars(
    model: nn.Module,
    layer: str | nn.Module,
    dataset: Dataset | torch.Tensor,
    k: int = 9,
    *,
    channels: Sequence[int] | None = None,
    reduce: str = "max",
    batch_size: int = 64,
    normalization: Normalization | None = None,
    crops: bool = True,
    quiet: bool | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    header: dict[str, Any] | None = None,
    resume: bool = False,
) -> Exemplars:
    """The ``k`` inputs of ``dataset`` that activate each channel of ``layer`` most.

    One pass, batched, the forward pass stopped at the layer; memory ``O(k * C)``.

    Args:
        model: the network.
        layer: a name, a module or ``"auto"``; its output is ``(N, C, *spatial)`` or ``(N, C)``.
        dataset: a map-style data set of inputs or ``(input, target[, mask])`` items, or a
            tensor ``(N, C_in, *spatial)``. Inputs are unnormalized.
        k: exemplars per channel (at most the data set size).
        channels: which channels (default: all).
        reduce: ``"max"`` or ``"mean"`` over each channel map (see :class:`Exemplars`).
        batch_size: inputs per forward pass.
        normalization: ``{"mean": [...], "std": [...]}`` applied before the model.
        crops: also fetch the top inputs and crop them to the receptive field.
        quiet: no progress bar (default: ``$XAIKIT_QUIET``).
        state_dir: a folder where the running top-k is saved (:data:`STATE` and
            :data:`STATE_RECORD`) every :data:`STATE_EVERY_S` seconds and when the pass is
            interrupted (``KeyboardInterrupt``), so that ``resume`` continues where it
            stopped; removed when the pass completes.
        header: the settings the result depends on (recorded with the state; a state saved
            with another header is not resumed).
        resume: continue from ``state_dir``'s state when its record checks out (same header,
            the file inside the folder, present, of the recorded size); else start over.

    Under ``torchrun`` (:mod:`xaikit.distributed`) each rank streams its chunks of
    ``batch_size`` consecutive inputs, keeps its own top-k and the ranks merge their ``k``
    candidates per channel (values, indices, positions) with the same order as one pass, so
    every rank returns what one process returns. Each rank saves its own state
    (``exemplars.state.r<rank>.*`` beside rank 0's :data:`STATE`); a resume reads every
    rank's, whatever the number of ranks that saved them, and only does the inputs none holds.

    Returns:
        :class:`Exemplars` with ``(C, k)`` values and indices on the model's device.

    Raises:
        XaikitConfigError: bad ``k``, ``reduce`` or channels; an unknown layer.
        DataError: an empty data set or items that are not tensors.
    """
    if reduce not in REDUCE:
        raise XaikitConfigError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    size = dataset_size(dataset)
    if size == 0:
        raise DataError("the data set is empty")
    if not 1 <= k <= size:
        raise XaikitConfigError(f"k must be between 1 and the data set size {size}, got {k}")
    device, dtype = model_device(model), model_dtype(model)
    first = fetch_inputs(dataset, [0]).to(device, dtype)
    name, module = resolve_layer(model, layer, first)
    stats = normalizer(normalization, first.shape[1], first.dim() - 2, device)
    group = current()
    chosen: torch.Tensor | None = None
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    spatial: tuple[int, ...] = ()
    folder = None if state_dir is None else Path(state_dir)
    chosen_list = None if channels is None else [int(c) for c in channels]
    settings = {**(header or {}), "layer": name, "channels": chosen_list}
    settings = json.loads(json.dumps({**settings, "k": k, "reduce": reduce, "size": size}))
    covered: list[tuple[int, int]] = []  # items whose scores a saved state already holds
    done: list[tuple[int, int]] = []  # items this rank's top-k holds (what its state records)
    if folder is not None and resume:
        restored = _load_states(folder, settings, device)
        group.agree()  # every rank has read the saved states before rank 0 rewrites them
        for ranges, *_ in restored:
            for lo, hi in ranges:
                covered = _add_range(covered, lo, hi)
        if restored and group.is_main:
            # Rank 0 carries what every saved state holds (of any number of ranks), saved
            # again as one state before the others are removed: nothing is lost meanwhile.
            chosen, spatial = restored[0][1], restored[0][3]
            parts = [r[2] for r in restored]
            best = _select(tuple(torch.cat([p[i] for p in parts], 1) for i in range(3)), k)
            done = list(covered)
            _save_state(folder, settings, done, chosen, best, spatial)
            _remove_states(folder, keep_main=True)
        # No rank saves a state of its own before rank 0 has removed the old ones.
        group.agree()
    # This rank's chunks of the batch size (one process: every batch), less what is covered.
    todo = [
        part
        for chunk in group.chunks(size, batch_size)
        for part in _subtract(chunk.start, chunk.stop, covered)
    ]
    batches = tqdm(
        todo,
        total=len(todo),
        desc=f"exemplars {name}",
        unit="batch",
        disable=is_quiet(quiet),
        leave=False,
    )
    saved = time.monotonic()
    snapshot = (done, chosen, best, spatial)  # one assignment per batch: never half-updated
    with (
        borrowed(model),
        torch.no_grad(),
        Capture(model, {name: module}, stop=True) as capture,
        _saving(folder, settings, lambda: snapshot, group.rank),
    ):
        for lo, hi in batches:
            batch = _fetch_range(dataset, lo, hi)
            capture.run(apply_normalization(batch.to(device, dtype), stats))
            acts = capture.activations[name]
            if chosen is None:
                chosen = _channels(channels, acts.shape[1], name, device)
            if best is None:
                spatial = tuple(acts.shape[2:])
                empty = acts.new_empty((len(chosen), 0))
                best = (empty, empty.long(), empty.long())
            maps = acts.index_select(1, chosen)
            maps = maps.reshape(*maps.shape[:2], -1)  # (n, C, P); P = 1 without spatial dims
            peak, where = maps.max(dim=2)
            score = peak if reduce == "max" else maps.mean(dim=2)
            n = score.shape[0]
            index = torch.arange(lo, lo + n, device=device).expand(len(chosen), n)
            best = _merge(best, (score.T, index, where.T), k)
            done = _add_range(done, lo, lo + n)
            snapshot = (done, chosen, best, spatial)
            if folder is not None and time.monotonic() - saved > STATE_EVERY_S:
                _save_state(folder, settings, done, chosen, best, spatial, group.rank)
                saved = time.monotonic()
    if group.distributed:
        # The k candidates per channel of every rank (values, indices, positions; never the
        # data), merged with the same order as one pass: value, then the lower index.
        mine = None
        if best is not None and chosen is not None:
            mine = (chosen.cpu(), spatial, tuple(t.cpu() for t in best))
        try:
            gathered = group.agree(mine)
        except RemoteRankError:  # another rank failed or was interrupted: keep this shard
            if folder is not None:
                _save_state(folder, settings, done, chosen, best, spatial, group.rank)
            raise
        parts = [p for p in gathered if p is not None]
        if any(not torch.equal(p[0], parts[0][0]) for p in parts):
            raise XaikitError("the ranks ranked different channels; give --channels explicitly")
        if parts:
            chosen, spatial = parts[0][0].to(device), tuple(parts[0][1])
            best = _select(
                tuple(torch.cat([p[2][i] for p in parts], 1).to(device) for i in range(3)), k
            )
    if folder is not None and group.is_main:
        _remove_states(folder)
    if best is None or chosen is None:
        raise DataError("the data set yielded no inputs")
    values, indices, flat_positions = best
    if spatial:
        positions = torch.stack(torch.unravel_index(flat_positions, spatial), dim=-1)
    else:
        positions = flat_positions.new_zeros((*flat_positions.shape, 0))
    field = trace_receptive_field(model, name, first)[1] if spatial else None
    result = Exemplars(name, chosen.tolist(), reduce, values, indices, positions, field, None, None)
    if crops:
        result.boxes, result.crops = _crops(dataset, indices, positions, field, device)
    return result


# The running state of an interrupted pass, in ``state_dir``, and its record.
STATE = "exemplars.state.npz"
STATE_RECORD = "exemplars.state.json"
# How often (seconds) the running state is saved during the pass.
STATE_EVERY_S = 30.0

_Best = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _state_names(rank: int) -> tuple[str, str]:
    """The state file and record of ``rank``: :data:`STATE` and :data:`STATE_RECORD` for
    rank 0 (and one process), ``exemplars.state.r<rank>.npz`` / ``.json`` for the others."""
    if rank == 0:
        return STATE, STATE_RECORD
    return f"exemplars.state.r{rank}.npz", f"exemplars.state.r{rank}.json"


def _save_state(
    folder: Path,
    settings: dict[str, Any],
    done: list[tuple[int, int]],
    chosen: torch.Tensor | None,
    best: _Best | None,
    spatial: tuple[int, ...],
    rank: int = 0,
) -> None:
    """Write the running top-k of the items in the ``done`` ranges (atomically), then its
    record. Under torchrun each rank writes its own pair (:func:`_state_names`)."""
    from xaikit.io import atomic_write_bytes, atomic_write_json

    if chosen is None or best is None:
        return
    buffer = io.BytesIO()
    np.savez(
        buffer,
        chosen=chosen.cpu().numpy(),
        values=best[0].cpu().numpy(),
        indices=best[1].cpu().numpy(),
        positions=best[2].cpu().numpy(),
        spatial=np.asarray(spatial, dtype=np.int64),
    )
    data = buffer.getvalue()
    state, record_name = _state_names(rank)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / state, data)
    prefix = done[0][1] if done and done[0][0] == 0 else 0
    record = {
        "header": settings,
        "offset": prefix,  # the items [0, offset) are all done
        "done": [[lo, hi] for lo, hi in done],
        "file": state,
        "size": len(data),
    }
    atomic_write_json(folder / record_name, record)


def _state_records(folder: Path) -> list[Path]:
    """Every rank's state record in ``folder``, rank 0's first."""
    others = []
    for path in folder.glob("exemplars.state.r*.json"):
        rank = path.name[len("exemplars.state.r") : -len(".json")]
        if rank.isdigit():
            others.append((int(rank), path))
    return [folder / STATE_RECORD] + [path for _, path in sorted(others)]


def _remove_states(folder: Path, keep_main: bool = False) -> None:
    for record in _state_records(folder):
        if keep_main and record.name == STATE_RECORD:
            continue
        state = record.with_suffix(".npz")
        for leftover in (state, record):
            leftover.unlink(missing_ok=True)


def _load_states(
    folder: Path, settings: dict[str, Any], device: torch.device
) -> list[tuple[list[tuple[int, int]], torch.Tensor, _Best, tuple[int, ...]]]:
    """The saved states (of every rank of the run that saved them, whatever their number)
    whose record checks out and whose items no state before it holds (one that overlaps is
    a copy that a resumed run merged and had not removed yet)."""
    states = []
    covered: list[tuple[int, int]] = []
    for record in _state_records(folder):
        state = _load_state(folder, record.name, settings, device)
        if state is None or state[1].numel() == 0:
            continue
        ranges = state[0]
        if any(_subtract(lo, hi, covered) != [(lo, hi)] for lo, hi in ranges):
            continue
        for lo, hi in ranges:
            covered = _add_range(covered, lo, hi)
        states.append(state)
    return states


def _load_state(
    folder: Path, record_name: str, settings: dict[str, Any], device: torch.device
) -> tuple[list[tuple[int, int]], torch.Tensor, _Best, tuple[int, ...]] | None:
    """The saved state when its record checks out (same settings, the file inside
    ``folder``, present, of the recorded size); else ``None`` (start over)."""
    try:
        record = json.loads((folder / record_name).read_text(encoding="utf-8"))
        path = (folder / str(record["file"])).resolve()
        if (
            record.get("header") != settings
            or not path.is_relative_to(folder.resolve())
            or not path.is_file()
            or path.stat().st_size != record["size"]
        ):
            return None
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: torch.from_numpy(saved[key]).to(device) for key in saved.files}
        if "done" in record:
            ranges = [(int(lo), int(hi)) for lo, hi in record["done"]]
        else:
            ranges = [(0, int(record["offset"]))]
        size = int(settings["size"])
        if any(not 0 <= lo < hi <= size for lo, hi in ranges):
            return None
        best = (arrays["values"], arrays["indices"], arrays["positions"])
        return ranges, arrays["chosen"], best, tuple(arrays["spatial"].tolist())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _add_range(ranges: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """``ranges`` (sorted, disjoint ``[lo, hi)``) with ``[lo, hi)`` added, adjacent merged."""
    out: list[tuple[int, int]] = []
    for a, b in sorted([*ranges, (lo, hi)]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(lo: int, hi: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[lo, hi)`` outside ``ranges`` (sorted, disjoint)."""
    parts, start = [], lo
    for a, b in ranges:
        if b <= start or a >= hi:
            continue
        if a > start:
            parts.append((start, a))
        start = max(start, b)
    if start < hi:
        parts.append((start, hi))
    return parts


def _fetch_range(dataset: Dataset | torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """The inputs ``[lo, hi)`` as one batch."""
    if isinstance(dataset, torch.Tensor):
        return dataset[lo:hi]
    return fetch_inputs(dataset, range(lo, hi))


@contextlib.contextmanager
def _saving(
    folder: Path | None,
    settings: dict[str, Any],
    current: Callable[[], tuple[Any, ...]],
    rank: int = 0,
) -> Iterator[None]:
    """On ``KeyboardInterrupt`` save the state ``current()`` returns, then re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        if folder is not None:
            _save_state(folder, settings, *current(), rank)
        raise


def _channels(
    channels: Sequence[int] | None, count: int, layer: str, device: torch.device
) -> torch.Tensor:
    if channels is None:
        return torch.arange(count, device=device)
    chosen = [int(c) for c in channels]
    if not chosen or min(chosen) < 0 or max(chosen) >= count:
        raise XaikitConfigError(
            f"channels {chosen} are out of range for {layer!r}, which has {count} channels "
            f"(0..{count - 1})"
        )
    return torch.as_tensor(chosen, device=device)


def _crops(
    dataset: Dataset | torch.Tensor,
    indices: torch.Tensor,
    positions: torch.Tensor,
    field: ReceptiveField | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fetch each distinct top input once and cut its receptive-field window around the
    peak: ``(C, k, dims, 2)`` boxes and ``(C, k, C_in, *window)`` crops."""
    unique, inverse = torch.unique(indices.cpu(), return_inverse=True)
    inputs = fetch_inputs(dataset, unique.tolist()).to(device)
    extent = inputs.shape[2:]
    count, k = indices.shape
    if field is None:
        whole = torch.tensor([[0, s] for s in extent], device=device)
        boxes = whole.expand(count, k, *whole.shape).clone()
        return boxes, inputs[inverse.to(device)]
    boxes = field.crop_boxes(positions, extent)
    window = (boxes[0, 0, :, 1] - boxes[0, 0, :, 0]).tolist()
    # Index only the windows (never C * k whole inputs): input number, then per dimension
    # the coordinates lo + arange(window), broadcast against each other.
    dims = len(extent)
    index = [inverse.to(device).reshape(count, k, *([1] * dims))]
    for d, length in enumerate(window):
        shape = [count, k] + [1] * dims
        shape[2 + d] = length
        coords = boxes[..., d, 0, None] + torch.arange(length, device=device)
        index.append(coords.reshape(shape))
    crops = inputs.movedim(1, -1)[tuple(index)]  # (C, k, *window, C_in)
    return boxes, crops.movedim(-1, 2)
