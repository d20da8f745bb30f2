"""Objectives for activation maximization that compose with arithmetic.

An :class:`Objective` maps what one optimization step saw (a :class:`Context`) to one score
per batch element, ``(B,)``; the optimizer *maximizes* each element's score. Objectives add,
subtract, negate and scale by numbers, as in Lucid / Lucent (Olah et al., 2017, "Feature
Visualization"):

    channel("features.block3", 5) - 0.05 * tv()
    sum(channel(layer, c) for c in (1, 2)) / 2 - 0.01 * l2()
    channel("features.block2") + 0.1 * diversity("features.block2")

``channel(layer)`` without a channel index means "the unit this batch element is assigned":
``maximize(..., channels=[3, 7])`` gives element 0 unit 3 and element 1 unit 7, so many
channels are optimized in one batch. Every objective here scores each element from that
element alone, except :func:`diversity`, which by design compares the elements of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitConfigError

OUTPUT = "<output>"


@dataclass
class Context:
    """What an objective sees at one step.

    Attributes:
        activations: ``{layer name: (B, C, *spatial)}`` outputs of the captured layers, still
            attached to the image's graph.
        output: the model's output ``(B, K)``, or ``None`` when the forward pass stopped early.
        images: ``(B, C_in, H, W)``: the parametrized images in ``[0, 1]``, before transforms.
        units: ``(B,)`` long, on the images' device: the unit assigned to each element.
        max_unit: the largest of ``units`` (checked against a layer's channel count without
            reading the device).
    """

    activations: Mapping[str, torch.Tensor]
    output: torch.Tensor | None
    images: torch.Tensor
    units: torch.Tensor
    max_unit: int

    def layer(self, name: str) -> torch.Tensor:
        if name == OUTPUT:
            if self.output is None:
                raise XaikitConfigError("this objective needs the model output")
            return self.output
        return self.activations[name]


class Objective:
    """A function ``Context -> (B,)`` scores to maximize, with ``+ - *`` by numbers.

    Attributes:
        layers: names of the layers the objective reads (the forward pass must reach them).
        needs_output: whether the full forward pass must run (class logits).
        name: a readable description, e.g. ``"channel(features.block3) - 0.05*tv()"``.
    """

    def __init__(
        self,
        fn: Callable[[Context], torch.Tensor],
        *,
        layers: frozenset[str] = frozenset(),
        needs_output: bool = False,
        name: str = "objective",
    ) -> None:
        self.fn = fn
        self.layers = frozenset(layers)
        self.needs_output = needs_output
        self.name = name

    def __call__(self, ctx: Context) -> torch.Tensor:
        score = self.fn(ctx)
        batch = ctx.images.shape[0]
        if score.dim() == 0:
            score = score.expand(batch)
        if score.shape != (batch,):
            raise XaikitConfigError(
                f"objective {self.name} returned shape {tuple(score.shape)}; an objective "
                f"returns one score per batch element, shape ({batch},)"
            )
        return score

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def _combine(
        self, other: Objective, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sym: str
    ) -> Objective:
        return Objective(
            lambda ctx: op(self(ctx), other(ctx)),
            layers=self.layers | other.layers,
            needs_output=self.needs_output or other.needs_output,
            name=f"{self.name} {sym} {other.name}",
        )

    def __add__(self, other: Objective | Real) -> Objective:
        if isinstance(other, Real):
            if other == 0:
                return self
            return self._combine(constant(float(other)), torch.add, "+")
        if isinstance(other, Objective):
            return self._combine(other, torch.add, "+")
        return NotImplemented

    def __radd__(self, other: Objective | Real) -> Objective:
        # sum() starts from 0.
        return self.__add__(other)

    def __sub__(self, other: Objective | Real) -> Objective:
        if isinstance(other, Real):
            return self + (-float(other))
        if isinstance(other, Objective):
            return self._combine(other, torch.sub, "-")
        return NotImplemented

    def __rsub__(self, other: Real) -> Objective:
        return (-self) + other

    def __neg__(self) -> Objective:
        return self * -1.0

    def __mul__(self, factor: Real) -> Objective:
        if not isinstance(factor, Real):
            return NotImplemented
        factor = float(factor)
        name = f"-{self.name}" if factor == -1 else f"{factor:g}*{self.name}"
        return Objective(
            lambda ctx: factor * self(ctx),
            layers=self.layers,
            needs_output=self.needs_output,
            name=name,
        )

    __rmul__ = __mul__

    def __truediv__(self, divisor: Real) -> Objective:
        if not isinstance(divisor, Real):
            return NotImplemented
        return self * (1.0 / float(divisor))


def constant(value: float) -> Objective:
    """A score of ``value`` for every element (no gradient)."""
    return Objective(
        lambda ctx: ctx.images.new_full((ctx.images.shape[0],), value), name=f"{value:g}"
    )


def _select(acts: torch.Tensor, n: int | None, ctx: Context, layer: str) -> torch.Tensor:
    """``(B, C, *S) -> (B, *S)``: each element's unit (``n``, or its assigned unit)."""
    channels = acts.shape[1]
    highest = ctx.max_unit if n is None else n
    if not 0 <= highest < channels:
        raise XaikitConfigError(
            f"unit {highest} is out of range for {layer!r}, which has {channels} channels "
            f"(0..{channels - 1})"
        )
    index = ctx.units if n is None else torch.full_like(ctx.units, n)
    return acts[torch.arange(acts.shape[0], device=acts.device), index]


def channel(layer: str, n: int | None = None) -> Objective:
    """The mean activation of channel ``n`` of ``layer`` over all spatial positions;
    ``n=None``: each element's assigned channel. ``(B, C, *S) -> (B,)``."""

    def fn(ctx: Context) -> torch.Tensor:
        picked = _select(ctx.layer(layer), n, ctx, layer)
        return picked.reshape(picked.shape[0], -1).mean(dim=1)

    label = "" if n is None else f", {n}"
    return Objective(fn, layers=frozenset({layer}), name=f"channel({layer}{label})")


def neuron(layer: str, n: int | None = None, position: tuple[int, ...] | None = None) -> Objective:
    """The activation of channel ``n`` at one spatial ``position`` (default: the centre);
    ``n=None``: each element's assigned channel. ``(B, C, *S) -> (B,)``."""

    def fn(ctx: Context) -> torch.Tensor:
        picked = _select(ctx.layer(layer), n, ctx, layer)
        spatial = picked.shape[1:]
        where = position if position is not None else tuple(s // 2 for s in spatial)
        if len(where) != len(spatial) or any(not 0 <= p < s for p, s in zip(where, spatial)):
            raise XaikitConfigError(
                f"neuron position {where} is outside {layer!r}'s spatial shape {tuple(spatial)}"
            )
        return picked[(slice(None), *where)]

    label = "" if n is None else f", {n}"
    return Objective(fn, layers=frozenset({layer}), name=f"neuron({layer}{label})")


def class_logit(n: int | None = None) -> Objective:
    """The model's output ``n`` (a class logit; needs the full forward pass); ``n=None``:
    each element's assigned class. ``(B, K) -> (B,)``."""

    def fn(ctx: Context) -> torch.Tensor:
        return _select(ctx.layer(OUTPUT), n, ctx, "the model output")

    label = "" if n is None else str(n)
    return Objective(fn, needs_output=True, name=f"class_logit({label})")


def tv() -> Objective:
    """Total variation of the image (Mahendran & Vedaldi, 2015): the mean absolute difference
    between neighbouring pixels. Subtract it to favour smooth images. ``-> (B,)``."""

    def fn(ctx: Context) -> torch.Tensor:
        x = ctx.images
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(dim=1)
        if x.shape[-2] == 1:
            return dx
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(dim=1)
        return dx + dy

    return Objective(fn, name="tv()")


def l2(center: float = 0.5) -> Objective:
    """The root mean square distance of the image from ``center`` (grey). Subtract it to keep
    colours moderate. ``-> (B,)``."""

    def fn(ctx: Context) -> torch.Tensor:
        return (ctx.images - center).pow(2).flatten(1).mean(dim=1).add(1e-12).sqrt()

    return Objective(fn, name="l2()")


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity of each element's Gram matrix at ``layer`` to those
    of the other elements (Olah et al., 2017, "Feature Visualization", section "Diversity").

    Adding it pushes a batch of images for the *same* unit apart; it is the one objective
    that couples batch elements. ``(B, C, *S) -> (B,)``.
    """

    def fn(ctx: Context) -> torch.Tensor:
        acts = ctx.layer(layer)
        batch = acts.shape[0]
        if batch < 2:
            return acts.new_zeros(batch)
        flat = acts.reshape(batch, acts.shape[1], -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        similarity = grams @ grams.T
        return -(similarity.sum(dim=1) - similarity.diagonal()) / (batch - 1)

    return Objective(fn, layers=frozenset({layer}), name=f"diversity({layer})")
