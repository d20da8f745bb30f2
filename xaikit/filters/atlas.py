"""A per-channel atlas: "what this filter looks for", in one figure and one HTML section.

For each channel of a layer: its kernel (when the layer ends in a convolution with one
output per channel), its activation-maximization image (:func:`~xaikit.filters.maximize`)
and its top data set exemplars cropped to the receptive field
(:func:`~xaikit.filters.exemplars`) - the three views OpenAI Microscope shows per unit
(Olah et al., 2017, "Feature Visualization"), for any model and data set.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

from xaikit.distributed import current
from xaikit.errors import XaikitConfigError
from xaikit.filters._common import Normalization, conv_of, fetch_inputs
from xaikit.filters._plot import data_uri, displayable, grid_axes, image_png, new_figure
from xaikit.filters.exemplars import Exemplars, exemplars
from xaikit.filters.maximize import Maximization, maximize, maximize_into
from xaikit.filters.weights import Kernels, weights

CELL = 48  # pixels per cell in the atlas figure


@dataclass
class Atlas:
    """Kernel, maximization image and exemplars per channel of one layer.

    Attributes:
        layer: the layer's name.
        channels: the channels, one row each.
        kernels: the kernels of the layer when it is a convolution or a block holding exactly
            one (``features.block2``); kernel ``c`` is ``kernels.images[c]``. ``None``
            otherwise (no kernel column).
        maximization: images ``(C, C_in, S, S)`` that maximize each channel; ``None`` on
            the ranks other than 0 of a torchrun run (rank 0 alone maximizes).
        exemplars: the top-k data set inputs per channel with their crops.
    """

    layer: str
    channels: list[int]
    kernels: Kernels | None
    maximization: Maximization | None
    exemplars: Exemplars

    def _kernel(self, channel: int) -> torch.Tensor | None:
        if self.kernels is None or self.kernels.reduce == "all":
            return None
        return self.kernels.images[channel]

    def _maximized(self) -> Maximization:
        if self.maximization is None:
            raise XaikitConfigError("this atlas has no maximization (a torchrun rank other than 0)")
        return self.maximization

    def _crops(self) -> torch.Tensor:
        crops = self.exemplars.crops
        if crops is None:
            raise XaikitConfigError("the atlas needs exemplar crops")
        return crops if crops.dim() == 5 else crops.unsqueeze(3)  # signals as 1-row images

    @cached_property
    def figure(self) -> Figure:
        """One row per channel: kernel, maximization image, then the exemplar crops."""
        crops = self._crops().detach().float().cpu()
        maximization = self._maximized()
        images = maximization.images.detach().float().cpu()
        if images.dim() == 3:
            images = images.unsqueeze(2)
        k = crops.shape[1]
        cells, labels = [], []
        blank = torch.ones(3, CELL, CELL)
        for row, channel in enumerate(self.channels):
            kernel = self._kernel(channel)
            score = float(maximization.score[row])
            flat = " !" if bool(maximization.flat[row]) else ""
            cells.append(blank if kernel is None else _cell(kernel.cpu()))
            labels.append(f"c{channel} kernel" if kernel is not None else f"c{channel}")
            cells.append(_cell(images[row]))
            labels.append(f"max {score:.3g}{flat}")
            for j in range(k):
                cells.append(_cell(crops[row, j].clamp(0, 1)))
                labels.append(f"#{int(self.exemplars.indices[row, j])}")
        fig = new_figure(min(0.9 * (k + 2) + 0.5, 16), min(0.95 * len(self.channels) + 0.8, 80))
        title = f"{self.layer}: kernel | maximization | top {k} exemplars"
        grid_axes(fig, torch.stack(cells), labels, ncols=k + 2, title=title)
        return fig

    def html(self) -> str:
        """An HTML ``<section>`` for the report: a table, one row per channel, with every
        image inlined as a base64 PNG (no external references)."""
        crops = self._crops()
        maximization = self._maximized()
        images = maximization.images
        if images.dim() == 3:
            images = images.unsqueeze(2)
        style = 'style="image-rendering: pixelated; margin: 1px"'
        layer = html.escape(self.layer)
        rows = []
        summary = maximization.summary()
        for row, channel in enumerate(self.channels):
            kernel = self._kernel(channel)
            kernel_html = (
                f'<img {style} alt="kernel {channel}" src="{data_uri(image_png(kernel))}">'
                if kernel is not None
                else "&ndash;"
            )
            info = summary[row]
            flat = " <strong>flat</strong>" if info["flat"] else ""
            maximized = (
                f'<img {style} alt="maximization {channel}" '
                f'src="{data_uri(image_png(images[row]))}"><br>'
                f"score {info['score']:.3g} (gain {info['gain']:+.3g}){flat}"
            )
            shots = " ".join(
                f'<img {style} alt="exemplar {int(i)}" title="input {int(i)}: {float(v):.3g}" '
                f'src="{data_uri(image_png(crops[row, j].clamp(0, 1)))}">'
                for j, (i, v) in enumerate(
                    zip(self.exemplars.indices[row], self.exemplars.values[row])
                )
            )
            rows.append(
                f"<tr><td>{channel}</td><td>{kernel_html}</td><td>{maximized}</td>"
                f"<td>{shots}</td></tr>"
            )
        return (
            f'<section class="xaikit-filters">\n'
            f"<h2>What the filters of <code>{layer}</code> look for</h2>\n"
            f"<p>Per channel: its kernel, the input that maximizes its mean activation "
            f"({maximization.steps} steps), and the {crops.shape[1]} data set inputs "
            f"that activate it most (by {self.exemplars.reduce}), cropped to the receptive "
            f"field.</p>\n"
            "<table>\n<thead><tr><th>channel</th><th>kernel</th><th>maximization</th>"
            "<th>exemplars</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows)
            + "\n</tbody>\n</table>\n</section>\n"
        )


def _cell(image: torch.Tensor) -> torch.Tensor:
    """``(C, h, w)`` in [0, 1] -> ``(3, CELL, CELL)`` enlarged with nearest neighbours."""
    image = displayable(image[None].float())
    image = F.interpolate(image, size=(CELL, CELL), mode="nearest")[0]
    return image.expand(3, -1, -1)


def _layer_kernels(model: nn.Module, layer: str) -> Kernels | None:
    """The kernels when ``layer`` is one convolution or a block holding exactly one."""
    try:
        conv_name, conv = conv_of(model, layer)
    except XaikitConfigError:
        return None
    return weights(model, conv_name) if conv.groups == 1 else None


def atlas(
    model: nn.Module,
    layer: str | nn.Module,
    dataset: Dataset | torch.Tensor,
    channels: Sequence[int] | None = None,
    *,
    k: int = 6,
    steps: int = 256,
    size: int | None = None,
    seed: int = 0,
    normalization: Normalization | None = None,
    batch_size: int = 64,
    quiet: bool | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    header: dict[str, Any] | None = None,
    resume: bool = False,
) -> Atlas:
    """Kernel, activation maximization and top-k exemplars for each channel of ``layer``.

    Args:
        model: a CNN.
        layer: a name, a module or ``"auto"``.
        dataset: inputs for the exemplars (see :func:`~xaikit.filters.exemplars`).
        channels: which channels (default: all).
        k: exemplars per channel.
        steps, size, seed: for :func:`~xaikit.filters.maximize` (``size`` defaults to the
            data set's input width).
        normalization: ``{"mean": [...], "std": [...]}`` the model expects; images and data
            set inputs are unnormalized pixels.
        batch_size: for both the maximization and the exemplar pass.
        quiet: no progress bars (default: ``$XAIKIT_QUIET``).
        state_dir: a folder for surviving an interruption: the exemplar pass saves its
            running state there and the maximization goes batch by batch through
            :func:`~xaikit.filters.maximize.maximize_into` (``state_dir/maximize/`` and its
            journal); ``None``: everything in memory.
        header: the settings the results depend on (checked on ``resume``).
        resume: continue from what ``state_dir`` holds (each record verified first).

    Under ``torchrun`` every rank streams its shard of ``dataset`` for the exemplars (the
    merged top-k is what one process finds) and rank 0 alone runs the maximization: the
    other ranks return an :class:`Atlas` without it (``maximization=None``).

    Returns:
        :class:`Atlas`, with ``.figure``, ``.html()`` and the data.
    """
    found = exemplars(
        model,
        layer,
        dataset,
        k,
        channels=channels,
        batch_size=batch_size,
        normalization=normalization,
        quiet=quiet,
        state_dir=state_dir,
        header=header,
        resume=resume,
    )
    if current().distributed and not current().is_main:
        # Under torchrun the exemplar pass is split over the ranks (and merged on each); the
        # maximization and what it writes are rank 0's alone.
        return Atlas(found.layer, found.channels, None, None, found)
    if size is None:
        size = int(fetch_inputs(dataset, [0]).shape[-1])
    if state_dir is not None:
        settings = {**(header or {}), "steps": steps, "seed": seed, "size": size}
        images = maximize_into(
            state_dir,
            model,
            found.layer,
            found.channels,
            header={**settings, "layer": found.layer, "normalization": normalization},
            resume=resume,
            batch_size=batch_size,
            quiet=quiet,
            steps=steps,
            size=size,
            seed=seed,
            normalization=normalization,
        )[0]
        return Atlas(found.layer, found.channels, _layer_kernels(model, found.layer), images, found)
    images = maximize(
        model,
        found.layer,
        found.channels,
        steps=steps,
        size=size,
        seed=seed,
        normalization=normalization,
        batch_size=batch_size,
        quiet=quiet,
    )
    return Atlas(found.layer, found.channels, _layer_kernels(model, found.layer), images, found)
