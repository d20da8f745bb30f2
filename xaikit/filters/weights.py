"""Kernel grids: a convolution's weights drawn as images, one labelled cell per kernel.

Each kernel ``w_k`` (``(C_in, kh, kw)``, or ``(C_in, k)`` for ``Conv1d``) becomes an image by
one of these documented rules (``reduce=``):

==============  ============================================================  ===========
rule            image of kernel ``k``                                          values
==============  ============================================================  ===========
``rgb``         the three input channels as colour (needs ``C_in == 3``)      signed
``all``         one grey image per input channel (cell ``k.c``), row per k    signed
``l2``          ``sqrt(sum_c w_kc^2)``: the L2 norm over input channels        unsigned
``strongest``   ``w_kc*`` where ``c*`` has the largest L2 norm                 signed
``mean``        ``mean_c w_kc``                                                signed
==============  ============================================================  ===========

``auto`` is ``rgb`` for 2-D kernels with 3 input channels (a first layer on colour images),
``mean`` (the kernel itself) for one input channel, and ``l2`` otherwise.

Each kernel is normalized on its own so small kernels stay visible: a signed image is
``0.5 + w / (2 max|w_k|)`` (zero is mid-grey, the sign is kept), an unsigned one is
``v / max v_k``; ``Kernels.scale`` holds the divisor, so ``weight`` is recoverable from
``images``. With ``all`` the scale is shared by the input channels of one kernel, so their
relative strength shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch
from matplotlib.figure import Figure
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.filters._common import conv_of
from xaikit.filters._plot import grid_axes, new_figure, tile

REDUCTIONS = ("auto", "rgb", "all", "l2", "strongest", "mean")
MAX_LINE_PLOTS = 64
MAX_LINES = 8


@dataclass
class Kernels:
    """A convolution's kernels as images.

    Attributes:
        layer: the convolution's name.
        weight: ``(C_out, C_in, kh, kw)`` or ``(C_out, C_in, k)``, a detached copy.
        images: ``(K, 1 | 3, kh, kw)`` in [0, 1], one per cell (``K = C_out``, or
            ``C_out * C_in`` for ``reduce="all"``); ``Conv1d`` kernels are 1-row images
            ``(K, 1, 1, k)``.
        labels: ``K`` cell labels (the kernel index; ``"k.c"`` for ``all``;
            ``"k<c"`` for ``strongest``, ``c`` the input channel shown).
        reduce: the rule used (see the module docstring).
        signed: whether ``images = 0.5 + v / (2 scale)`` (else ``v / scale``).
        scale: ``(K,)`` the per-image normalizer.
        ncols: cells per row of :attr:`grid`.
        grid: ``(1 | 3, GH, GW)``: ``images`` tiled with a 1-pixel white border
            (cell ``i`` at ``1 + (i // ncols) * (kh + 1)``, ``1 + (i % ncols) * (kw + 1)``).
    """

    layer: str
    weight: torch.Tensor
    images: torch.Tensor
    labels: list[str]
    reduce: str
    signed: bool
    scale: torch.Tensor
    ncols: int
    grid: torch.Tensor = field(repr=False)

    @cached_property
    def figure(self) -> Figure:
        """The kernels in one figure: a labelled grid (``Conv2d``) or one line plot per
        kernel (``Conv1d``, the first 64 kernels, up to 8 input channels as lines, else
        the ``l2`` profile)."""
        if self.weight.dim() == 3:
            return _line_figure(self)
        rows = math.ceil(self.images.shape[0] / self.ncols)
        h, w = self.images.shape[-2:]
        cell = max(0.6, 0.06 * max(h, w))  # inches per kernel
        fig = new_figure(min(cell * self.ncols + 0.6, 16), min(cell * rows * h / w + 0.9, 40))
        title = f"{self.layer}: {self.weight.shape[0]} kernels ({self.reduce})"
        grid_axes(fig, self.images, self.labels, ncols=self.ncols, title=title)
        return fig


def _signed(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (values.dim() - 1)
    return 0.5 + values / (2 * scale.reshape(shape))


def _max_abs(values: torch.Tensor) -> torch.Tensor:
    """Per-row ``max |v|`` with a zero row mapped to 1 (drawn as flat grey or black)."""
    peak = values.flatten(1).abs().amax(dim=1)
    return torch.where(peak > 0, peak, torch.ones_like(peak))


def _choose(reduce: str, weight: torch.Tensor) -> str:
    if reduce not in REDUCTIONS:
        raise XaikitConfigError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    in_channels = weight.shape[1]
    if reduce == "rgb" and (in_channels != 3 or weight.dim() != 4):
        raise XaikitConfigError(
            f"reduce='rgb' needs 2-D kernels with 3 input channels; this layer's kernels are "
            f"{tuple(weight.shape[1:])}; use 'l2', 'strongest', 'mean' or 'all'"
        )
    if reduce != "auto":
        return reduce
    if in_channels == 3 and weight.dim() == 4:
        return "rgb"
    return "mean" if in_channels == 1 else "l2"


def kernel_images(
    weight: torch.Tensor, reduce: str = "auto"
) -> tuple[torch.Tensor, list[str], str, bool, torch.Tensor]:
    """``(C_out, C_in, *k)`` kernels -> ``(images (K, 1|3, kh, kw), labels, rule, signed,
    scale (K,))`` by the rules of the module docstring."""
    rule = _choose(reduce, weight)
    w = weight.detach().float()
    if w.dim() == 3:  # Conv1d kernels are 1-row images
        w = w.unsqueeze(2)
    out_channels, in_channels = w.shape[:2]
    labels = [str(k) for k in range(out_channels)]
    if rule == "rgb":
        scale = _max_abs(w)
        return _signed(w, scale), labels, rule, True, scale
    if rule == "all":
        scale = _max_abs(w).repeat_interleave(in_channels)
        flat = w.reshape(out_channels * in_channels, 1, *w.shape[2:])
        labels = [f"{k}.{c}" for k in range(out_channels) for c in range(in_channels)]
        return _signed(flat, scale), labels, rule, True, scale
    if rule == "l2":
        norm = w.pow(2).sum(dim=1, keepdim=True).sqrt()
        scale = _max_abs(norm)
        return norm / scale.reshape(-1, 1, 1, 1), labels, rule, False, scale
    if rule == "strongest":
        strongest = w.flatten(2).norm(dim=2).argmax(dim=1)
        values = w[torch.arange(out_channels), strongest].unsqueeze(1)
        labels = [f"{k}<{int(c)}" for k, c in enumerate(strongest)]
        scale = _max_abs(values)
        return _signed(values, scale), labels, rule, True, scale
    values = w.mean(dim=1, keepdim=True)
    scale = _max_abs(values)
    return _signed(values, scale), labels, rule, True, scale


def weights(
    model: nn.Module, layer: str | nn.Module | None = None, *, reduce: str = "auto"
) -> Kernels:
    """The kernels of a ``Conv1d`` / ``Conv2d`` as labelled, normalized images.

    ``(C_out, C_in, kh, kw)`` weights -> ``Kernels.images`` ``(K, 1 | 3, kh, kw)``, a tiled
    ``grid`` and a ``figure`` (matplotlib, Agg).

    Args:
        model: any network.
        layer: a convolution, or a block holding exactly one; a name or the module.
            ``None``: the model's first convolution (the one that sees pixels).
        reduce: how ``C_in`` input channels become one image (module docstring); ``"auto"``.

    Raises:
        XaikitConfigError: the layer is unknown, holds no or several convolutions, or
            ``reduce`` does not fit the kernels.
    """
    name, conv = conv_of(model, layer)
    weight = conv.weight.detach().clone()
    images, labels, rule, signed, scale = kernel_images(weight, reduce)
    square = max(1, math.ceil(math.sqrt(images.shape[0])))
    ncols = weight.shape[1] if rule == "all" else square
    grid, _, ncols = tile(images, ncols, pad=1)
    return Kernels(name, weight, images, labels, rule, signed, scale, ncols, grid)


def _line_figure(kernels: Kernels) -> Figure:
    weight = kernels.weight.float().cpu()
    count = min(weight.shape[0], MAX_LINE_PLOTS)
    ncols = max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / ncols)
    fig = new_figure(min(1.8 * ncols, 16), min(1.3 * rows + 0.6, 40))
    axes = fig.subplots(rows, ncols, squeeze=False)
    taps = range(weight.shape[-1])
    for k, ax in enumerate(axes.flat):
        if k >= count:
            ax.set_axis_off()
            continue
        if weight.shape[1] <= MAX_LINES:
            for c in range(weight.shape[1]):
                ax.plot(taps, weight[k, c].numpy(), lw=1, label=f"in {c}")
        else:
            ax.plot(taps, weight[k].norm(dim=0).numpy(), lw=1, color="k", label="L2")
        ax.axhline(0, color="0.7", lw=0.5)
        ax.set_title(kernels.labels[k] if kernels.reduce != "all" else str(k), fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{kernels.layer}: {weight.shape[0]} kernels of length {weight.shape[-1]}")
    return fig
