"""Feature maps: what one or more layers output for a batch of inputs, and a grid of them.

The forward pass ends at the last requested layer (``Capture(stop=True)``): nothing after it
runs. Channels are the second dimension of a layer's output (``(N, C, H, W)``, ``(N, C, L)``
or ``(N, C)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.hooks import Capture
from xaikit.explain.layers import resolve_layer
from xaikit.explain.state import borrowed, model_device
from xaikit.filters._common import Normalization, apply_normalization, model_dtype, normalizer
from xaikit.filters._plot import grid_axes, new_figure

MAX_CHANNELS = 64


class FeatureMaps(dict[str, torch.Tensor]):
    """``{layer name: activations}``, each ``(N, C, *spatial)`` on the model's device, in the
    order the layers were asked for; :meth:`figure` draws one sample's maps."""

    def _layer(self, layer: str | None) -> str:
        if layer is None:
            return next(iter(self))
        if layer not in self:
            raise XaikitConfigError(f"no feature maps for {layer!r}; have {', '.join(self)}")
        return layer

    def channel_means(self, layer: str | None = None, sample: int = 0) -> torch.Tensor:
        """``(C,)``: the mean activation of each channel for input ``sample``."""
        maps = self[self._layer(layer)][sample]
        return maps.reshape(maps.shape[0], -1).float().mean(dim=1)

    def order(self, layer: str | None = None, sample: int = 0) -> torch.Tensor:
        """``(C,)`` channel indices by decreasing mean activation for input ``sample``."""
        return torch.argsort(self.channel_means(layer, sample), descending=True, stable=True)

    def figure(
        self, layer: str | None = None, sample: int = 0, max_channels: int = MAX_CHANNELS
    ) -> Figure:
        """One input's feature maps at ``layer``, strongest channel first (at most
        ``max_channels``), each labelled ``channel: mean``; all maps share one colour scale
        so their strengths compare."""
        name = self._layer(layer)
        maps = self[name][sample].detach().float().cpu()
        order = self.order(name, sample).cpu()[:max_channels]
        means = self.channel_means(name, sample).cpu()
        chosen = maps[order]
        labels = [f"{int(c)}: {float(means[c]):.2g}" for c in order]
        title = f"{name} (input {sample}): {len(order)} of {maps.shape[0]} channels by mean"
        if chosen.dim() == 1:
            fig = new_figure(min(0.2 * len(order) + 2, 16), 3)
            ax = fig.add_subplot(111)
            ax.bar(range(len(order)), chosen.numpy(), color="tab:blue")
            ax.set_xticks(range(len(order)), [str(int(c)) for c in order], fontsize=6)
            ax.set_xlabel("channel")
            ax.set_title(title, fontsize=10)
            return fig
        low, high = float(chosen.min()), float(chosen.max())
        scaled = (chosen - low) / (high - low) if high > low else torch.zeros_like(chosen)
        if scaled.dim() == 2:  # (C, L): one row per channel
            fig = new_figure(8, min(0.18 * len(order) + 1.5, 30))
            ax = fig.add_subplot(111)
            ax.imshow(scaled.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set_yticks(range(len(order)), labels, fontsize=6)
            ax.set_xlabel("position")
            ax.set_title(title, fontsize=10)
            return fig
        images = scaled.reshape(scaled.shape[0], 1, scaled.shape[1], -1)
        side = max(1, round(len(order) ** 0.5))
        fig = new_figure(min(1.2 * side + 0.5, 16), min(1.3 * side + 0.8, 40))
        grid_axes(fig, images, labels, ncols=side, title=title, cmap="viridis")
        return fig


def activations(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: str | nn.Module | Sequence[str | nn.Module] = "auto",
    *,
    normalization: Normalization | None = None,
) -> FeatureMaps:
    """The feature maps of ``inputs`` at one or more layers.

    ``(N, C_in, H, W)`` (or ``(N, C_in, L)``) inputs -> ``{name: (N, C, *spatial)}``, detached,
    on the model's device. The forward pass stops after the last of ``layers`` to run.

    Args:
        layers: a name, a module, ``"auto"`` (the default CAM layer) or a list of them.
        normalization: ``{"mean": [...], "std": [...]}`` applied to ``inputs`` first (when
            inputs are unnormalized pixels and the model expects normalized ones).

    Raises:
        XaikitConfigError: an unknown layer, or a layer that never ran.
    """
    device = model_device(model)
    x = inputs.to(device=device, dtype=model_dtype(model))
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    resolved = dict(resolve_layer(model, layer, x[:1]) for layer in layers)
    stats = normalizer(normalization, x.shape[1], x.dim() - 2, device)
    # With several layers, later in-place operations (ReLU(inplace=True)) could overwrite an
    # earlier layer's stored output; grad=True makes Capture pass on a clone instead.
    several = len(resolved) > 1
    with borrowed(model), Capture(model, resolved, grad=several, stop=True) as capture:
        capture.run(apply_normalization(x, stats))
        return FeatureMaps((name, capture.activations[name].detach()) for name in resolved)
