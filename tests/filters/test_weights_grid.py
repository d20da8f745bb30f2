"""Kernel grids: the images reproduce the kernel values, one labelled cell per kernel."""

from __future__ import annotations

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.filters import weights


def _rgb_model() -> nn.Module:
    torch.manual_seed(0)
    return xaikit.create_model("simple_cnn", num_classes=3, input_size=16, widths=(6, 8))


def test_rgb_kernels_reproduce_the_weights_exactly():
    model = _rgb_model()
    kernels = weights(model)  # the first convolution
    weight = model.features.block1.conv.weight.detach()
    assert kernels.layer == "features.block1.conv" and kernels.reduce == "rgb"
    assert kernels.images.shape == (6, 3, 3, 3)
    # signed rule: image = 0.5 + w / (2 max|w_k|), so w = (image - 0.5) * 2 max|w_k|
    peak = weight.flatten(1).abs().amax(1)
    torch.testing.assert_close(kernels.scale, peak)
    recovered = (kernels.images - 0.5) * 2 * peak[:, None, None, None]
    torch.testing.assert_close(recovered, weight, atol=1e-6, rtol=0)
    assert kernels.images.min() >= 0 and kernels.images.max() <= 1
    # each kernel reaches 0 or 1 at its largest |weight|
    extreme = (kernels.images - 0.5).abs().flatten(1).amax(1)
    torch.testing.assert_close(extreme, torch.full((6,), 0.5))
    assert kernels.labels == [str(k) for k in range(6)]


def test_grid_cells_hold_each_kernel_image_at_its_documented_place():
    kernels = weights(_rgb_model())
    ncols = kernels.ncols
    assert ncols == 3  # ceil(sqrt(6))
    for k in range(6):
        y = 1 + (k // ncols) * (3 + 1)
        x = 1 + (k % ncols) * (3 + 1)
        torch.testing.assert_close(kernels.grid[:, y : y + 3, x : x + 3], kernels.images[k])
    assert kernels.grid.shape == (3, 1 + 2 * 4, 1 + 3 * 4)


def test_deeper_layer_reductions_follow_their_rules():
    model = _rgb_model()
    weight = model.features.block2.conv.weight.detach()  # (8, 6, 3, 3)
    l2 = weights(model, "features.block2", reduce="auto")
    assert l2.layer == "features.block2.conv" and l2.reduce == "l2" and not l2.signed
    norm = weight.pow(2).sum(1, keepdim=True).sqrt()
    torch.testing.assert_close(l2.images * l2.scale[:, None, None, None], norm)

    strongest = weights(model, "features.block2.conv", reduce="strongest")
    picked = weight.flatten(2).norm(dim=2).argmax(1)
    for k in range(8):
        expect = weight[k, picked[k]]
        got = (strongest.images[k, 0] - 0.5) * 2 * strongest.scale[k]
        torch.testing.assert_close(got, expect, atol=1e-6, rtol=0)
        assert strongest.labels[k] == f"{k}<{int(picked[k])}"

    every = weights(model, "features.block2.conv", reduce="all")
    assert every.images.shape == (8 * 6, 1, 3, 3) and every.ncols == 6
    assert every.labels[7] == "1.1"
    shared = weight.flatten(1).abs().amax(1).repeat_interleave(6)
    flat = weight.reshape(48, 1, 3, 3)
    torch.testing.assert_close((every.images - 0.5) * 2 * shared[:, None, None, None], flat)


def test_conv1d_kernels_are_one_row_images_and_line_plots():
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn1d", num_classes=3, in_channels=2, widths=(4, 6))
    kernels = weights(model)
    weight = model.features.block1.conv.weight.detach()  # (4, 2, 5)
    assert kernels.reduce == "l2" and kernels.images.shape == (4, 1, 1, 5)
    torch.testing.assert_close(
        kernels.images[:, :, 0] * kernels.scale[:, None, None], weight.norm(dim=1, keepdim=True)
    )
    fig = kernels.figure
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    plotted = [ax for ax in fig.axes if ax.lines]
    assert len(plotted) == 4
    # one line per input channel, holding the kernel's values
    line = plotted[2].lines[1].get_ydata()
    torch.testing.assert_close(torch.as_tensor(line, dtype=torch.float32), weight[2, 1])


def test_figure_is_an_agg_figure_with_one_label_per_kernel():
    kernels = weights(_rgb_model())
    fig = kernels.figure
    assert isinstance(fig.canvas, FigureCanvasAgg)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [str(k) for k in range(6)]


def test_bad_layers_and_views_raise_clear_errors():
    model = _rgb_model()
    with pytest.raises(XaikitConfigError, match="rgb"):
        weights(model, "features.block2", reduce="rgb")
    with pytest.raises(XaikitConfigError, match="holds 2 convolutions"):
        weights(model, "features")
    with pytest.raises(XaikitConfigError, match="no Conv1d/Conv2d"):
        weights(model, "head")
    with pytest.raises(XaikitConfigError, match="no layer named"):
        weights(model, "features.block9")
    with pytest.raises(XaikitConfigError, match="reduce must be"):
        weights(model, reduce="median")
