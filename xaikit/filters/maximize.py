"""Activation maximization: the input that makes a channel, a neuron or a class fire most.

Olah, Mordvintsev & Schubert, 2017, "Feature Visualization" (Distill); Mordvintsev et al.,
2018, "Differentiable Image Parameterizations" (Distill). The image is parametrized in a
decorrelated Fourier basis (:mod:`xaikit.filters.param`), randomly shifted, zoomed and
rotated at every step (:mod:`xaikit.filters.transforms`), normalized the way the model
expects, and the objective (:mod:`xaikit.filters.objectives`) is maximized by gradient
ascent (Adam) on the parametrization.

``param="maco"`` optimizes only the phase of a fixed natural-image Fourier magnitude (Fel et
al., 2023, :mod:`xaikit.filters.maco`) on a larger canvas seen through random crops, and
returns its transparency map; ``start=images`` accentuates a feature in real images (Hamblin
et al., 2024, :mod:`xaikit.filters.accentuation`).

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
from collections.abc import Callable, Iterator, Sequence
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
from xaikit.filters.maco import MacoCrops, MacoImage, maco_figure
from xaikit.filters.param import PARAMETRIZATIONS
from xaikit.filters.transforms import Transform, apply_transforms, n_random, standard_transforms

# The parametrizations `param=` takes (start= images use "accentuation").
PARAMS = (*PARAMETRIZATIONS, "maco")
# MACO's canvas side, in model input sides, when canvas= is not given: its crops (25-30 % of
# the side) then show the model about its own input resolution.
MACO_CANVAS = 4

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
        param: the parametrization (``"fourier"``, ``"pixel"``, ``"maco"``,
            ``"accentuation"``).
        transparency: ``(B, C_in, S, S)``: the absolute gradient of the objective with
            respect to the image, summed over the steps (MACO's transparency map; computed
            for every parametrization, drawn with the image for ``"maco"``).
        start: the images accentuation started from (``None`` otherwise), in ``[0, 1]``.
        distance: ``(B,)`` RMS pixel distance from ``start`` (``None`` without it).
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
    param: str = "fourier"
    transparency: torch.Tensor | None = None
    start: torch.Tensor | None = None
    distance: torch.Tensor | None = None

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-ready row per unit: unit, initial, score, gain, flat."""
        rows = [
            {
                "unit": unit,
                "initial": float(self.initial_score[i]),
                "score": float(self.score[i]),
                "gain": float(self.gain[i]),
                "flat": bool(self.flat[i]),
            }
            for i, unit in enumerate(self.units)
        ]
        if self.distance is not None:
            for row, d in zip(rows, self.distance):
                row["distance"] = float(d)
        return rows

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
        if self.param == "maco" and self.transparency is not None and images.shape[-2] > 1:
            return maco_figure(images, self.transparency.detach().float().cpu(), labels, title)
        if self.start is not None:
            # original | accentuated, side by side
            start = self.start.detach().float().cpu()
            if start.dim() == 3:
                start = start.unsqueeze(2)
            pairs = torch.stack([start, images], dim=1).flatten(0, 1)
            names = [n for label in labels for n in ("original", label)]
            title = f"feature accentuation: {self.objective} ({self.steps} steps)"
            return grid_figure(pairs, names, ncols=2 * min(4, len(labels)), title=title)
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
    lr: float | None = None,
    param: str = "fourier",
    decorrelate: bool = True,
    transforms: str | Sequence[Transform] | None = "auto",
    normalization: Normalization | None = None,
    in_channels: int | None = None,
    batch_size: int = 64,
    stop: bool = True,
    redirect_relu: int = 16,
    quiet: bool | None = None,
    optimizer: str = "auto",
    spectrum: torch.Tensor | None = None,
    canvas: int | None = None,
    crops: int = 6,
    noise: float = 0.05,
    start: torch.Tensor | None = None,
    penalty: float = 1.0,
    decay_power: float = 1.5,
    fuse: bool = True,
) -> Maximization:
    """Optimize one input per unit so that the unit's activation is as large as possible.

    ``-> Maximization.images`` ``(len(channels), C_in, size, size)`` in ``[0, 1]``
    (``(len(channels), C_in, size)`` for 1-D models; ``canvas`` x ``canvas`` for MACO).

    Args:
        model: a CNN (its first convolution tells the input channels and 1-D / 2-D).
        layer: the layer whose channels to maximize (name, module or ``"auto"``); needed
            for the default objective and for ``channels=None``.
        channels: the units, one batch element each; ``None``: every channel of ``layer``.
        steps: optimization steps.
        size: the model's input side (signal length); default: the size the zoo model was
            built for.
        seed: seeds each unit's start and transformations via ``(seed, unit)``.
        objective: what to maximize; default ``channel(layer)``, the mean activation of each
            element's channel. Compose others from :mod:`xaikit.filters.objectives`, e.g.
            ``channel(name) - 0.05 * tv()``.
        lr: the learning rate; default 0.05 (Adam) for ``fourier`` / ``pixel``, 1.0
            (NAdam, horama's) for ``maco`` and accentuation.
        param: ``"fourier"`` (decorrelated, 1/f-scaled spectrum), ``"pixel"``, or
            ``"maco"`` (phase only, under the fixed magnitude ``spectrum``; 2-D only).
        decorrelate: decorrelate colours of 3-channel images.
        transforms: ``"auto"`` (MACO's crops for ``maco``, else ``"standard"``),
            ``"standard"`` (jitter, zoom, rotation scaled to ``size``), ``"maco"`` (random
            crops of the canvas resized to ``size``, plus ``noise``; see
            :class:`~xaikit.filters.maco.MacoCrops`), a list of
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
        optimizer: ``"adam"``, ``"nadam"`` or ``"auto"`` (as ``lr``).
        spectrum: MACO's magnitude ``(C_in, h, w // 2 + 1)`` (resized to the canvas);
            default :func:`xaikit.filters.spectrum.default_spectrum`.
        canvas: the side of the optimized image when MACO's crops are used (default
            ``4 * size`` for ``maco``, else ``size`` / the ``start`` images' side).
        crops: MACO crops per element and step (horama: 6).
        noise: MACO's noise on each crop, in the normalized input space (horama: 0.05).
        start: ``(B, C_in, H, W)`` (or one ``(C_in, H, W)`` for every unit) images in
            ``[0, 1]``: feature accentuation (Hamblin et al., 2024): the image is
            parametrized by its own Fourier spectrum and optimized towards the unit with
            ``penalty * mean((x - x0)^2)`` (in the normalized input space) keeping it near
            the start (:mod:`xaikit.filters.accentuation`).
        penalty: accentuation's weight of the distance to the start (horama: 1).
        decay_power: accentuation's gradient scaling ``1 / f ** decay_power`` (horama: 1.5).
        fuse: run the network in its fast form for the render
            (:mod:`xaikit.filters.render_form`: eval BatchNorms folded into the
            convolution before them, channels-last weights on the CPU), the same function
            to float rounding and checked on a probe input; ``False`` runs it as it is.

    Raises:
        XaikitConfigError: an unknown layer, a channel out of range, or no known input size.
    """
    if start is not None:
        param = "accentuation"
    elif param not in PARAMS:
        raise XaikitConfigError(f"param must be one of {', '.join(PARAMS)}, got {param!r}")
    if steps < 0 or batch_size < 1:
        raise XaikitConfigError("steps must be >= 0 and batch_size >= 1")
    if optimizer not in ("auto", "adam", "nadam"):
        raise XaikitConfigError(f"optimizer must be auto, adam or nadam, got {optimizer!r}")
    spec = input_spec(model, channels=in_channels, size=size)
    if spec.size is None:
        if start is None:
            raise XaikitConfigError(
                "this model does not record its input size; pass size= (--size on the command line)"
            )
        spec = type(spec)(spec.dims, spec.channels, int(start.shape[-1]))
    if param in ("maco", "accentuation") and spec.dims != 2:
        raise XaikitConfigError(f"param={param!r} is for image models (2-D convolutions)")
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
    if transforms == "auto":
        transforms = "maco" if param == "maco" else "standard"
    cropper = None
    if transforms == "maco":
        cropper = MacoCrops(spec.size, count=crops, noise=noise)
        transforms = []
    elif transforms == "standard":
        transforms = standard_transforms(spec.size)
    transforms = list(transforms or [])
    side = spec.size
    if canvas is not None:
        side = int(canvas)
    elif param == "maco":
        side = MACO_CANVAS * spec.size
    elif start is not None:
        side = int(start.shape[-1])
    height, width = (side, side) if spec.dims == 2 else (1, spec.size)
    start_images = None
    if start is not None:
        start_images = _start_images(start, len(units), spec.channels, side)
    magnitude = None
    if param == "maco":
        from xaikit.filters.spectrum import default_spectrum, fit_spectrum

        raw = default_spectrum(side, channels=spec.channels) if spectrum is None else spectrum
        magnitude = fit_spectrum(torch.as_tensor(raw), height, width)
        if magnitude.shape[0] != spec.channels:
            raise XaikitConfigError(
                f"the spectrum has {magnitude.shape[0]} channels, the model takes {spec.channels}"
            )
    horama_like = param in ("maco", "accentuation")
    run = _Run(
        objective=objective,
        transforms=transforms,
        stats=normalizer(normalization, spec.channels, 2, device),
        dims=spec.dims,
        shape=(spec.channels, height, width),
        param=param,
        decorrelate=decorrelate,
        lr=float(lr if lr is not None else (1.0 if horama_like else 0.05)),
        steps=steps,
        seed=seed,
        device=device,
        dtype=dtype,
        quiet=is_quiet(quiet),
        redirect_steps=redirect_relu,
        optimizer=("nadam" if horama_like else "adam") if optimizer == "auto" else optimizer,
        crops=cropper,
        magnitude=magnitude,
        penalty=float(penalty),
        decay_power=float(decay_power),
    )
    stop_early = stop and not objective.needs_output and bool(captured)
    order = list(range(len(units)))
    chunks = [order[i : i + batch_size] for i in range(0, len(units), batch_size)]
    parts = []
    # what the network sees, for the fast form's check: random pixels, normalized
    pixels = torch.rand(2, spec.channels, spec.size if spec.dims == 2 else 1, spec.size,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    probe = apply_normalization(pixels.to(device, dtype), run.stats)
    probe = probe[:, :, 0] if spec.dims == 1 else probe
    with (
        borrowed(model),
        Capture(model, captured, keep_graph=True, stop=stop_early) as capture,
        _fast_form(model, capture, probe, captured.values(), fuse, device),
    ):
        for index, rows in enumerate(chunks):
            label = f"maximize {layer_name or objective.name}"
            if len(chunks) > 1:
                label += f" [{index + 1}/{len(chunks)}]"
            seeds = None if start_images is None else start_images[rows]
            parts.append(run.optimize(capture, [units[r] for r in rows], label, seeds))
    images, initial, score, moved, transparency, seeds = (torch.cat(t) for t in zip(*parts))
    gain = score - initial
    flat = (
        ~moved
        | (gain <= FLAT_GAIN * initial.abs().clamp(min=1.0))
        | (images.flatten(1).std(dim=1) < FLAT_STD)
    )
    distance = None
    if start_images is not None:
        distance = (images - seeds).pow(2).flatten(1).mean(dim=1).sqrt()
    if spec.dims == 1:
        images = images[:, :, 0]
        transparency = transparency[:, :, 0]
    return Maximization(
        images,
        units,
        layer_name,
        objective.name,
        initial,
        score,
        gain,
        flat,
        steps,
        seed,
        param=param,
        transparency=transparency,
        start=None if start_images is None else seeds,
        distance=distance,
    )


def _fast_form(
    model: nn.Module,
    capture: Capture,
    probe: torch.Tensor,
    captured: Any,
    fuse: bool,
    device: torch.device,
) -> contextlib.AbstractContextManager[Any]:
    """:func:`~xaikit.filters.render_form.render_form` for this render (its check reads the
    captured layers and the output on ``probe``), or nothing when ``fuse`` is off."""
    if not fuse:
        return contextlib.nullcontext()
    from xaikit.filters.render_form import render_form

    def read() -> dict[str, torch.Tensor]:
        output = capture.run(probe)
        values = {f"layer:{name}": t for name, t in capture.activations.items()}
        if isinstance(output, torch.Tensor):
            values["output"] = output
        return values

    cpu = device.type == "cpu"  # the layout and the strided gradient are measured there
    return render_form(model, read, keep=list(captured), channels_last=cpu, space_to_depth=cpu)


def _start_images(start: torch.Tensor, count: int, channels: int, side: int) -> torch.Tensor:
    """``start`` as ``(count, channels, side, side)`` in [0, 1] (one image repeated)."""
    images = torch.as_tensor(start).detach().float()
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != channels:
        raise XaikitConfigError(
            f"start must be (B, {channels}, H, W) or ({channels}, H, W) images in [0, 1], got "
            f"shape {tuple(images.shape)}"
        )
    if images.shape[0] == 1:
        images = images.expand(count, -1, -1, -1)
    if images.shape[0] != count:
        raise XaikitConfigError(
            f"start has {images.shape[0]} images for {count} units: give one, or one per unit"
        )
    if tuple(images.shape[-2:]) != (side, side):
        images = torch.nn.functional.interpolate(
            images, size=(side, side), mode="bilinear", antialias=True, align_corners=False
        )
    return images.clamp(0, 1)


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
    optimizer: str = "adam"
    crops: MacoCrops | None = None
    magnitude: torch.Tensor | None = None
    penalty: float = 1.0
    decay_power: float = 1.5

    def _score(
        self,
        capture: Capture,
        images: torch.Tensor,
        ctx_units: tuple[torch.Tensor, int],
        u: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, C, H, W)`` images in [0, 1] -> ``(B,)`` objective (transformed when ``u``;
        with MACO crops, the mean over each element's crops, or its centre crop)."""
        seen = images
        shift = n_random(self.transforms)
        x = images if u is None else apply_transforms(images, self.transforms, u[:, :shift])
        per = 1
        if self.crops is not None:
            x = self.crops(x, None if u is None else u[:, shift:])
            per = x.shape[0] // images.shape[0]
            seen = x
        x = apply_normalization(x, self.stats)
        if noise is not None and u is not None:
            x = x + noise
        if self.dims == 1:
            x = x[:, :, 0]
        output = capture.run(x)
        units, max_unit = ctx_units
        if per > 1:
            units = units.repeat_interleave(per)
        score = self.objective(obj.Context(capture.activations, output, seen, units, max_unit))
        return score.reshape(-1, per).mean(dim=1) if per > 1 else score

    def _image(self, generators: list[torch.Generator], seeds: torch.Tensor | None) -> Any:
        common = dict(decorrelate=self.decorrelate, device=self.device, dtype=self.dtype)
        if self.param == "accentuation":
            from xaikit.filters.accentuation import AccentuationImage

            return AccentuationImage(seeds, decay_power=self.decay_power, **common)
        if self.param == "maco":
            return MacoImage(generators, *self.shape, magnitude=self.magnitude, **common)
        return PARAMETRIZATIONS[self.param](generators, *self.shape, **common)

    def optimize(
        self,
        capture: Capture,
        chunk: list[int],
        label: str,
        seeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Optimize one image per unit of ``chunk``; returns ``(images, initial score, final
        score, whether any gradient reached each element, transparency, start images)``."""
        generators = [key_generator(self.seed, "maximize", unit) for unit in chunk]
        image = self._image(generators, seeds)
        count = n_random(self.transforms) + (self.crops.n_random if self.crops else 0)
        draws = torch.stack([torch.rand(self.steps, count, generator=g) for g in generators]).to(
            self.device, self.dtype
        )
        units = (torch.as_tensor(chunk, device=self.device), max(chunk))
        first = image().detach()
        initial = self._score(capture, first, units).detach()
        anchor = None
        if self.param == "accentuation":
            # horama recomputes the seed through the parametrization, so the penalty can be 0
            anchor = apply_normalization(first, self.stats)
        make: Callable[..., torch.optim.Optimizer] = (
            torch.optim.NAdam if self.optimizer == "nadam" else torch.optim.Adam
        )
        optimizer = make(image.parameters, lr=self.lr)
        moved = torch.zeros(len(chunk), dtype=torch.bool, device=self.device)
        transparency = torch.zeros_like(first)
        for step in tqdm(range(self.steps), desc=label, disable=self.quiet, leave=False):
            redirect = RedirectedReLU() if step < self.redirect_steps else contextlib.nullcontext()
            noise = None
            if self.crops is not None:
                noise = self.crops.draw_noise(generators, self.shape[0], first)
            current = image()
            with redirect:
                score = self._score(capture, current, units, draws[:, step], noise)
            loss = -score.sum()
            if anchor is not None and self.penalty:
                away = apply_normalization(current, self.stats) - anchor
                loss = loss + self.penalty * away.pow(2).flatten(1).mean(dim=1).sum()
            *grads, pixel_grad = torch.autograd.grad(loss, [*image.parameters, current])
            transparency += pixel_grad.detach().abs()
            moved |= grads[0].flatten(1).abs().amax(dim=1) > 0
            for tensor, grad in zip(image.parameters, grads):
                tensor.grad = grad
            optimizer.step()
        with torch.no_grad():
            final_images = image()
        final = self._score(capture, final_images, units).detach()
        return final_images, initial, final, moved, transparency, first


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


def _header_readable(path: Path) -> bool:
    """Whether the journal's first line is a JSON object with its ``header``."""
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        head = json.loads(first.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return isinstance(head, dict) and "header" in head


def journal_records(path: Path, header: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The records of a render journal after its settings line (torn or non-object lines
    skipped); a journal written with other settings (``header``) is an error."""
    header = json.loads(json.dumps(header))  # tuples -> lists, as read back
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a torn last line
        if not isinstance(record, dict):
            continue
        if number == 0:
            if record.get("header") != header:
                raise XaikitConfigError(
                    f"{path} was written with other settings ({record.get('header')}); "
                    "use another --out, or delete it to start over"
                )
            continue
        yield record


def read_journal(out: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The verified records of ``out``'s journal, by channel. A journal written with other
    settings (``header``) is an error; a record that fails :func:`_done` is not done."""
    path = out / JOURNAL
    if not path.is_file():
        return {}
    return {
        record["unit"]: record
        for record in journal_records(path, header)
        if isinstance(record.get("unit"), int) and _done(out, record)
    }


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
    (``maximize/channel_NNNN.png`` and the exact float image ``.npy``; for ``param="maco"``
    also its transparency ``channel_NNNN.transparency.npy`` and the image drawn with it as
    alpha, ``channel_NNNN_maco.png``) and a journal record
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
    journal_path = folder / JOURNAL
    # A journal whose settings line cannot be read cannot vouch for its records: start again.
    fresh = not resume or not journal_path.is_file() or not _header_readable(journal_path)
    done = {} if fresh else read_journal(folder, header)
    pending = [u for u in units if u not in done]
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
                written = {f"{stem}.png": len(png), f"{stem}.npy": len(buffer.getvalue())}
                if part.param == "maco" and part.transparency is not None:
                    written.update(_write_maco(folder, stem, images[i], part.transparency[i]))
                record = {
                    "unit": unit,
                    "layer": part.layer,
                    "objective": part.objective,
                    "param": part.param,
                    "row": part.summary()[i],
                    "files": written,
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
    transparency = None
    if rows and all(
        f"maximize/channel_{u:04d}.transparency.npy" in r["files"] for u, r in zip(units, rows)
    ):
        transparency = torch.stack(
            [
                torch.from_numpy(
                    np.load(
                        folder / f"maximize/channel_{u:04d}.transparency.npy", allow_pickle=False
                    )
                )
                for u in units
            ]
        )
    result = from_summary(
        images,
        units,
        summary,
        layer=rows[0]["layer"] if rows else None,
        objective=rows[0]["objective"] if rows else "",
        steps=int(header.get("steps", options.get("steps", 256))),
        seed=int(header.get("seed", options.get("seed", 0))),
        param=rows[0].get("param", "fourier") if rows else "fourier",
        transparency=transparency,
    )
    files = [name for r in rows for name in r["files"]]
    return result, files


def from_summary(
    images: torch.Tensor,
    units: Sequence[int],
    summary: Sequence[dict[str, Any]],
    **fields: Any,
) -> Maximization:
    """A :class:`Maximization` read back from disk: the ``(B, C, S, S)`` images and one
    :meth:`Maximization.summary` row per unit (``initial``, ``score``, ``gain``, ``flat``);
    ``fields``: ``layer``, ``objective``, ``steps``, ``seed``, ``param`` and the optional
    ones (``transparency``, ``start``, ``distance``)."""

    def column(key: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor([row[key] for row in summary], dtype=dtype)

    return Maximization(
        images=images,
        units=[int(u) for u in units],
        initial_score=column("initial"),
        score=column("score"),
        gain=column("gain"),
        flat=column("flat", torch.bool),
        **fields,
    )


def _write_maco(
    folder: Path, stem: str, image: torch.Tensor, transparency: torch.Tensor
) -> dict[str, int]:
    """Write a MACO result's transparency ``.npy`` and its RGBA drawing; ``{file: size}``."""
    from PIL import Image

    from xaikit.filters.maco import maco_rgba
    from xaikit.io import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, transparency.detach().float().cpu().numpy())
    atomic_write_bytes(folder / f"{stem}.transparency.npy", buffer.getvalue())
    rgba = (maco_rgba(image, transparency) * 255).round().astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(png, format="PNG")
    atomic_write_bytes(folder / f"{stem}_maco.png", png.getvalue())
    return {
        f"{stem}.transparency.npy": len(buffer.getvalue()),
        f"{stem}_maco.png": len(png.getvalue()),
    }
