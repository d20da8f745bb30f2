"""Activation maximization: the input that makes a channel, a neuron or a class fire most.

Olah, Mordvintsev & Schubert, 2017, "Feature Visualization" (Distill); Mordvintsev et al.,
2018, "Differentiable Image Parameterizations" (Distill). The image is parametrized in a
decorrelated Fourier basis (:mod:`xaikit.filters.param`), randomly shifted, zoomed and
rotated at every step (:mod:`xaikit.filters.transforms`), normalized the way the model
expects, and the objective (:mod:`xaikit.filters.objectives`) is maximized by gradient
ascent (Adam) on the parametrization.

Many units are optimized in one batch (element ``b`` optimizes ``channels[b]``) and the
forward pass stops at the deepest layer the objective reads: nothing after it runs. Each
element's random start and random transformations come from its own generator, seeded by
``(seed, unit)``, and every objective except ``diversity`` scores each element on its own
(BatchNorm runs in eval mode), so a unit's image is the same whether it is optimized alone
or with others, and the same with or without stopping the forward pass early.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from xaikit.errors import XaikitConfigError
from xaikit.explain.hooks import Capture
from xaikit.explain.layers import resolve_layer
from xaikit.explain.state import borrowed, model_device
from xaikit.filters import objectives as obj
from xaikit.filters._common import (
    Normalization,
    apply_normalization,
    input_spec,
    is_quiet,
    key_generator,
    model_dtype,
    normalizer,
)
from xaikit.filters._plot import grid_figure
from xaikit.filters._relu import RedirectedReLU
from xaikit.filters.activations import activations
from xaikit.filters.param import PARAMETRIZATIONS
from xaikit.filters.transforms import Transform, apply_transforms, n_random, standard_transforms

# A result is "flat" when the objective moved less than this (relative to max(1, |start|)).
FLAT_GAIN = 1e-4
# ... or when the image is this close to one uniform colour.
FLAT_STD = 1e-3


@dataclass
class Maximization:
    """The result of :func:`maximize`, one row per optimized unit.

    Attributes:
        images: ``(B, C_in, S, S)`` in ``[0, 1]`` (signals: ``(B, C_in, L)``), unnormalized
            pixels; element ``b`` maximizes ``units[b]``.
        units: the unit (channel / class) of each element.
        layer: the layer of the default objective (``None`` for a custom one without it).
        objective: the objective's description.
        initial_score: ``(B,)`` the objective on the random starting images.
        score: ``(B,)`` the objective on the final images (untransformed).
        gain: ``score - initial_score``.
        flat: ``(B,)`` bool: no gradient ever reached the element, the objective did not
            increase by ``1e-4 * max(1, |initial|)``, or the image is uniform (pixel std below
            ``1e-3``): a grey, meaningless result.
        steps, seed: the settings used.
    """

    images: torch.Tensor
    units: list[int]
    layer: str | None
    objective: str
    initial_score: torch.Tensor
    score: torch.Tensor
    gain: torch.Tensor
    flat: torch.Tensor
    steps: int
    seed: int

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-ready row per unit: unit, initial, score, gain, flat."""
        return [
            {
                "unit": unit,
                "initial": float(self.initial_score[i]),
                "score": float(self.score[i]),
                "gain": float(self.gain[i]),
                "flat": bool(self.flat[i]),
            }
            for i, unit in enumerate(self.units)
        ]

    @cached_property
    def figure(self) -> Figure:
        """The images in a grid, each labelled ``unit: score`` (``!`` marks a flat result)."""
        images = self.images.detach().float().cpu()
        if images.dim() == 3:
            images = images.unsqueeze(2)
        labels = [
            f"{u}: {float(s):.3g}{' !' if bool(f) else ''}"
            for u, s, f in zip(self.units, self.score, self.flat)
        ]
        title = f"activation maximization: {self.objective} ({self.steps} steps)"
        return grid_figure(images, labels, title=title)


def _units(
    model: nn.Module,
    layer_name: str | None,
    channels: Sequence[int] | int | None,
    example: torch.Tensor,
) -> list[int]:
    if channels is None:
        if layer_name is None:
            raise XaikitConfigError("pass channels=[...] (or a layer, to take all its channels)")
        return list(range(activations(model, example, layer_name)[layer_name].shape[1]))
    units = [int(channels)] if isinstance(channels, int) else [int(c) for c in channels]
    if not units or min(units) < 0:
        raise XaikitConfigError(f"channels must be non-negative indices, got {units}")
    return units


def maximize(
    model: nn.Module,
    layer: str | nn.Module | None = None,
    channels: Sequence[int] | int | None = None,
    *,
    steps: int = 256,
    size: int | None = None,
    seed: int = 0,
    objective: obj.Objective | None = None,
    lr: float = 0.05,
    param: str = "fourier",
    decorrelate: bool = True,
    transforms: str | Sequence[Transform] | None = "standard",
    normalization: Normalization | None = None,
    in_channels: int | None = None,
    batch_size: int = 64,
    stop: bool = True,
    redirect_relu: int = 16,
    quiet: bool | None = None,
) -> Maximization:
    """Optimize one input per unit so that the unit's activation is as large as possible.

    ``-> Maximization.images`` ``(len(channels), C_in, size, size)`` in ``[0, 1]``
    (``(len(channels), C_in, size)`` for 1-D models).

    Args:
        model: a CNN (its first convolution tells the input channels and 1-D / 2-D).
        layer: the layer whose channels to maximize (name, module or ``"auto"``); needed
            for the default objective and for ``channels=None``.
        channels: the units, one batch element each; ``None``: every channel of ``layer``.
        steps: optimization steps.
        size: image side (signal length); default: the size the zoo model was built for.
        seed: seeds each unit's start and transformations via ``(seed, unit)``.
        objective: what to maximize; default ``channel(layer)``, the mean activation of each
            element's channel. Compose others from :mod:`xaikit.filters.objectives`, e.g.
            ``channel(name) - 0.05 * tv()``.
        lr: Adam's learning rate.
        param: ``"fourier"`` (decorrelated, 1/f-scaled spectrum) or ``"pixel"``.
        decorrelate: decorrelate colours of 3-channel images.
        transforms: ``"standard"`` (jitter, zoom, rotation scaled to ``size``), a list of
            :class:`~xaikit.filters.transforms.Transform`, or ``None``.
        normalization: ``{"mean": [...], "std": [...]}``: images are optimized as pixels in
            ``[0, 1]`` and normalized by it before the model (use the model card's).
        in_channels: input channels, when the first convolution does not tell.
        batch_size: units per optimization batch (results do not depend on it).
        stop: end the forward pass at the deepest layer the objective reads; ``False`` runs
            the whole network (same results, slower; for checking and benchmarks).
        redirect_relu: for this many first steps, ReLUs pass gradient to dead units
            towards firing (:mod:`xaikit.filters._relu`), so a channel that is zero on the
            grey start still moves; ``0`` turns it off.
        quiet: no progress bar (default: ``$XAIKIT_QUIET``).

    Raises:
        XaikitConfigError: an unknown layer, a channel out of range, or no known input size.
    """
    if param not in PARAMETRIZATIONS:
        raise XaikitConfigError(
            f"param must be one of {', '.join(PARAMETRIZATIONS)}, got {param!r}"
        )
    if steps < 0 or batch_size < 1:
        raise XaikitConfigError("steps must be >= 0 and batch_size >= 1")
    spec = input_spec(model, channels=in_channels, size=size)
    if spec.size is None:
        raise XaikitConfigError(
            "this model does not record its input size; pass size= (--size on the command line)"
        )
    device, dtype = model_device(model), model_dtype(model)
    example = torch.zeros(1, spec.channels, *([spec.size] * spec.dims), device=device, dtype=dtype)
    layer_name = None if layer is None else resolve_layer(model, layer, example)[0]
    if objective is None:
        if layer_name is None:
            raise XaikitConfigError("pass a layer (or an objective) to maximize")
        objective = obj.channel(layer_name)
    captured = {
        name: resolve_layer(model, name)[1] for name in sorted(objective.layers - {obj.OUTPUT})
    }
    units = _units(model, layer_name, channels, example)
    if transforms == "standard":
        transforms = standard_transforms(spec.size)
    transforms = list(transforms or [])
    height, width = (spec.size, spec.size) if spec.dims == 2 else (1, spec.size)
    run = _Run(
        objective=objective,
        transforms=transforms,
        stats=normalizer(normalization, spec.channels, 2, device),
        dims=spec.dims,
        shape=(spec.channels, height, width),
        param=param,
        decorrelate=decorrelate,
        lr=lr,
        steps=steps,
        seed=seed,
        device=device,
        dtype=dtype,
        quiet=is_quiet(quiet),
        redirect_steps=redirect_relu,
    )
    stop_early = stop and not objective.needs_output and bool(captured)
    chunks = [units[i : i + batch_size] for i in range(0, len(units), batch_size)]
    parts = []
    with borrowed(model), Capture(model, captured, keep_graph=True, stop=stop_early) as capture:
        for index, chunk in enumerate(chunks):
            label = f"maximize {layer_name or objective.name}"
            if len(chunks) > 1:
                label += f" [{index + 1}/{len(chunks)}]"
            parts.append(run.optimize(capture, chunk, label))
    images, initial, score, moved = (torch.cat(t) for t in zip(*parts))
    gain = score - initial
    flat = (
        ~moved
        | (gain <= FLAT_GAIN * initial.abs().clamp(min=1.0))
        | (images.flatten(1).std(dim=1) < FLAT_STD)
    )
    if spec.dims == 1:
        images = images[:, :, 0]
    return Maximization(
        images, units, layer_name, objective.name, initial, score, gain, flat, steps, seed
    )


@dataclass
class _Run:
    """The settings of one :func:`maximize` call; :meth:`optimize` does one batch of units."""

    objective: obj.Objective
    transforms: list[Transform]
    stats: tuple[torch.Tensor, torch.Tensor] | None
    dims: int
    shape: tuple[int, int, int]
    param: str
    decorrelate: bool
    lr: float
    steps: int
    seed: int
    device: torch.device
    dtype: torch.dtype
    quiet: bool
    redirect_steps: int

    def _score(
        self,
        capture: Capture,
        images: torch.Tensor,
        ctx_units: tuple[torch.Tensor, int],
        u: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, C, H, W)`` images in [0, 1] -> ``(B,)`` objective (transformed when ``u``)."""
        x = images if u is None else apply_transforms(images, self.transforms, u)
        x = apply_normalization(x, self.stats)
        if self.dims == 1:
            x = x[:, :, 0]
        output = capture.run(x)
        units, max_unit = ctx_units
        return self.objective(obj.Context(capture.activations, output, images, units, max_unit))

    def optimize(
        self, capture: Capture, chunk: list[int], label: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Optimize one image per unit of ``chunk``; returns ``(images, initial score, final
        score, whether any gradient reached each element)``."""
        generators = [key_generator(self.seed, "maximize", unit) for unit in chunk]
        image = PARAMETRIZATIONS[self.param](
            generators,
            *self.shape,
            decorrelate=self.decorrelate,
            device=self.device,
            dtype=self.dtype,
        )
        draws = torch.stack(
            [torch.rand(self.steps, n_random(self.transforms), generator=g) for g in generators]
        ).to(self.device, self.dtype)
        units = (torch.as_tensor(chunk, device=self.device), max(chunk))
        initial = self._score(capture, image().detach(), units).detach()
        optimizer = torch.optim.Adam(image.parameters, lr=self.lr)
        moved = torch.zeros(len(chunk), dtype=torch.bool, device=self.device)
        for step in tqdm(range(self.steps), desc=label, disable=self.quiet, leave=False):
            redirect = RedirectedReLU() if step < self.redirect_steps else contextlib.nullcontext()
            with redirect:
                score = self._score(capture, image(), units, draws[:, step])
            grads = torch.autograd.grad(-score.sum(), image.parameters)
            moved |= grads[0].flatten(1).abs().amax(dim=1) > 0
            for tensor, grad in zip(image.parameters, grads):
                tensor.grad = grad
            optimizer.step()
        with torch.no_grad():
            final_images = image()
        final = self._score(capture, final_images, units).detach()
        return final_images, initial, final, moved


# -- defaults, and runs that survive an interruption ---------------------------------------

# Channels `xaikit filters --mode maximize` renders when --channels is not given.
DEFAULT_CHANNELS = 8
# The journal of finished channels, in the output folder; one JSON line per channel.
JOURNAL = "maximize.journal.jsonl"


def most_active_channels(
    model: nn.Module,
    layer: str | nn.Module,
    inputs: torch.Tensor,
    count: int = DEFAULT_CHANNELS,
    *,
    normalization: Normalization | None = None,
) -> list[int]:
    """The ``count`` channels of ``layer`` with the largest mean activation over ``inputs``
    (a probe batch of unnormalized inputs), strongest first; ties go to the lower index."""
    device, dtype = model_device(model), model_dtype(model)
    x = inputs.to(device, dtype)
    name = resolve_layer(model, layer, x[:1])[0]
    acts = activations(model, x, name, normalization=normalization)[name]
    means = acts.float().transpose(0, 1).reshape(acts.shape[1], -1).mean(dim=1)
    order = torch.sort(means, descending=True, stable=True).indices
    return order[:count].tolist()


def probe_inputs(
    model: nn.Module, size: int | None, *, count: int = 16, seed: int = 0
) -> torch.Tensor:
    """Uniform noise in ``[0, 1]``, ``(count, C_in, size, size)``: the probe batch when there
    is no data set (seeded, the global RNG untouched)."""
    spec = input_spec(model, size=size)
    if spec.size is None:
        raise XaikitConfigError(
            "this model does not record its input size; pass size= (--size on the command line)"
        )
    shape = (count, spec.channels, *([spec.size] * spec.dims))
    return torch.rand(shape, generator=key_generator(seed, "probe"))


def _done(out: Path, record: dict[str, Any]) -> bool:
    """A journal record is done when each of its files lies inside ``out``, exists and has
    the recorded size."""
    root = out.resolve()
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for rel, size in files.items():
        path = (out / str(rel)).resolve()
        if not path.is_relative_to(root) or not path.is_file() or path.stat().st_size != size:
            return False
    return True


def read_journal(out: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The verified records of ``out``'s journal, by channel. A journal written with other
    settings (``header``) is an error; a record that fails :func:`_done` is not done."""
    path = out / JOURNAL
    if not path.is_file():
        return {}
    header = json.loads(json.dumps(header))  # tuples -> lists, as read back
    records: dict[int, dict[str, Any]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if number == 0:
            if record.get("header") != header:
                raise XaikitConfigError(
                    f"{path} was written with other settings ({record.get('header')}); "
                    "use another --out, or delete it to start over"
                )
            continue
        if isinstance(record.get("unit"), int) and _done(out, record):
            records[record["unit"]] = record
    return records


def maximize_into(
    out: str | os.PathLike[str],
    model: nn.Module,
    layer: str | nn.Module | None,
    channels: Sequence[int],
    *,
    header: dict[str, Any],
    resume: bool = False,
    batch_size: int = 64,
    quiet: bool | None = None,
    **options: Any,
) -> tuple[Maximization, list[str]]:
    """:func:`maximize` one batch of channels at a time, writing each channel's files
    (``maximize/channel_NNNN.png`` and the exact float image ``.npy``) and a journal record
    (:data:`JOURNAL`) as soon as its batch is done, so an interrupted run keeps what it
    finished. With ``resume``, channels whose record checks out (files inside ``out``,
    present, of the recorded size) are not redone; the rest are.

    ``header``: the settings the images depend on (model, layer, steps, seed, size, ...);
    resuming a journal with another header is an error. ``options`` go to :func:`maximize`.

    Returns:
        the :class:`Maximization` of all ``channels`` (in order; finished ones read back from
        their ``.npy``) and the files written or kept, relative to ``out``.
    """
    from xaikit.filters._plot import image_png
    from xaikit.io import atomic_write_bytes

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    units = [int(c) for c in channels]
    done = read_journal(folder, header) if resume else {}
    pending = [u for u in units if u not in done]
    journal_path = folder / JOURNAL
    fresh = not resume or not journal_path.is_file()
    with open(journal_path, "w" if fresh else "a", encoding="utf-8") as journal:
        if fresh:
            journal.write(json.dumps({"header": header}) + "\n")
            journal.flush()
        chunks = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
        bar = tqdm(
            chunks,
            desc=f"maximize {len(pending)} channels",
            unit="batch",
            disable=is_quiet(quiet),
            leave=False,
        )
        for chunk in bar:
            part = maximize(model, layer, chunk, batch_size=batch_size, quiet=quiet, **options)
            images = part.images.detach().float().cpu()
            for i, unit in enumerate(part.units):
                stem = f"maximize/channel_{unit:04d}"
                buffer = io.BytesIO()
                np.save(buffer, images[i].numpy())
                png = image_png(images[i] if images.dim() == 4 else images[i].unsqueeze(1))
                atomic_write_bytes(folder / f"{stem}.png", png)
                atomic_write_bytes(folder / f"{stem}.npy", buffer.getvalue())
                record = {
                    "unit": unit,
                    "layer": part.layer,
                    "objective": part.objective,
                    "row": part.summary()[i],
                    "files": {f"{stem}.png": len(png), f"{stem}.npy": len(buffer.getvalue())},
                }
                done[unit] = record
                journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
    rows = [done[u] for u in units]
    images = torch.stack(
        [
            torch.from_numpy(np.load(folder / f"maximize/channel_{u:04d}.npy", allow_pickle=False))
            for u in units
        ]
    )
    summary = [r["row"] for r in rows]
    result = Maximization(
        images=images,
        units=units,
        layer=rows[0]["layer"] if rows else None,
        objective=rows[0]["objective"] if rows else "",
        initial_score=torch.tensor([r["initial"] for r in summary], dtype=torch.float64),
        score=torch.tensor([r["score"] for r in summary], dtype=torch.float64),
        gain=torch.tensor([r["gain"] for r in summary], dtype=torch.float64),
        flat=torch.tensor([r["flat"] for r in summary], dtype=torch.bool),
        steps=int(header.get("steps", options.get("steps", 256))),
        seed=int(header.get("seed", options.get("seed", 0))),
    )
    files = [name for r in rows for name in r["files"]]
    return result, files
