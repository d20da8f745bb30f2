"""Input gradients the render form (:mod:`xaikit.filters.render_form`) computes its own way.

Each is an autograd function whose forward is the layer's own and whose backward gives the
same input gradient (to float rounding) by a cheaper route, for a network whose parameters
are constants (a render differentiates with respect to the image only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: input channels up to which a strided convolution's input gradient goes through its
#: space-to-depth form (an image's 1-4 channels; wider inputs are PyTorch's fast case)
SPACE_TO_DEPTH_CHANNELS = 4


class SpaceToDepth:
    """A stride-``s`` 2-D convolution as a stride-1 one on the input's ``s x s`` phases:
    ``y = conv(pad(x), w, stride=s) = conv(unshuffle(pad'(x), s), w2)``, where ``pad'``
    pads the far sides so every kernel tap has its phase, and ``w2[o, c*s*s + r*s + t, a,
    b] = w[o, c, s*a + r, s*b + t]`` (the kernel zero-padded to a multiple of ``s``)."""

    def __init__(self, weight2: Tensor, stride: int, padding: tuple[int, int]) -> None:
        self.weight2 = weight2
        self.stride = stride
        self.padding = padding

    @classmethod
    def of(cls, conv: nn.Module, weight: Tensor) -> SpaceToDepth | None:
        """The form for ``conv`` with ``weight``, or ``None`` where it does not apply."""
        if not isinstance(conv, nn.Conv2d) or weight.dim() != 4:
            return None
        stride, dilation, padding = conv.stride, conv.dilation, conv.padding
        if (
            conv.groups != 1
            or conv.padding_mode != "zeros"
            or isinstance(padding, str)
            or tuple(dilation) != (1, 1)
            or stride[0] != stride[1]
            or stride[0] < 2
            or conv.in_channels > SPACE_TO_DEPTH_CHANNELS
        ):
            return None
        s = int(stride[0])
        out, inp, kh, kw = weight.shape
        ph, pw = -(-kh // s) * s, -(-kw // s) * s
        padded = F.pad(weight, (0, pw - kw, 0, ph - kh))
        weight2 = (
            padded.reshape(out, inp, ph // s, s, pw // s, s)
            .permute(0, 1, 3, 5, 2, 4)
            .reshape(out, inp * s * s, ph // s, pw // s)
        )
        layout = torch.contiguous_format if weight.is_contiguous() else torch.channels_last
        return cls(weight2.contiguous(memory_format=layout), s, (int(padding[0]), int(padding[1])))

    def input_grad(self, grad: Tensor, shape: torch.Size) -> Tensor | None:
        """``d loss / d x`` (``x`` of ``shape``) from ``grad`` at the output; ``None`` when
        the geometry needs a crop of the input (then the layer's own backward is used)."""
        s = self.stride
        n, c, height, width = shape
        ph, pw = self.padding
        out_h, out_w = grad.shape[2], grad.shape[3]
        need_h = s * (out_h - 1) + self.weight2.shape[2] * s
        need_w = s * (out_w - 1) + self.weight2.shape[3] * s
        if need_h - height - ph < 0 or need_w - width - pw < 0:
            return None
        phases = torch.nn.grad.conv2d_input(
            (n, c * s * s, need_h // s, need_w // s), self.weight2.to(grad.dtype), grad
        )
        return _pixel_shuffle(phases, s)[:, :, ph : ph + height, pw : pw + width]


def _pixel_shuffle(phases: Tensor, s: int) -> Tensor:
    """``F.pixel_shuffle(phases, s)``; a channels-last ``phases`` (what oneDNN gives for
    channels-last weights) is read in its memory order, one copy (half the time)."""
    n, channels, height, width = phases.shape
    if not phases.is_contiguous(memory_format=torch.channels_last) or phases.is_contiguous():
        return F.pixel_shuffle(phases, s)
    c = channels // (s * s)
    cells = phases.permute(0, 2, 3, 1).reshape(n, height, width, c, s, s)  # a view
    return cells.permute(0, 3, 1, 4, 2, 5).reshape(n, c, height * s, width * s)


class SpaceToDepthGrad(torch.autograd.Function):
    """The layer's own forward; the input gradient by :class:`SpaceToDepth` (weights are
    constants here: the render differentiates with respect to the image only)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, forward: Callable[[Tensor], Tensor], form: SpaceToDepth
    ) -> Tensor:
        ctx.form, ctx.shape = form, x.shape
        ctx.forward_fn = forward
        ctx.save_for_backward(x)
        return forward(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        grad_x = ctx.form.input_grad(grad, ctx.shape)
        if grad_x is None:  # a geometry the form does not cover: the layer's own backward
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                (grad_x,) = torch.autograd.grad(ctx.forward_fn(x), x, grad)
        return grad_x, None, None


class ChannelSparseGrad(torch.autograd.Function):
    """The layer's own forward; its input gradient from only the output channels that get
    a gradient. A channel objective's gradient at the last convolution before the layer it
    reads is one channel per image (through ReLU, BatchNorm and residual sums, which act per
    channel), so its backward needs one output channel's weights per image: a grouped
    transposed convolution, 1/C of the dense one. Dense gradients take the dense backward."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, forward: Callable[[Tensor], Tensor], conv: nn.Module, weight: Tensor
    ) -> Tensor:
        ctx.conv, ctx.weight, ctx.shape = conv, weight, x.shape
        return forward(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        conv, weight, shape = ctx.conv, ctx.weight.to(grad.dtype), ctx.shape
        geometry = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        batch, channels, height, width = grad.shape
        live = grad.flatten(2).ne(0).any(dim=2)  # (B, C): the channels with a gradient
        most = int(live.sum(dim=1).max())
        if conv.groups != 1 or most * 4 > channels:  # dense: the layer's own backward
            dense = torch.nn.grad.conv2d_input(shape, weight, grad, groups=conv.groups, **geometry)
            return dense, None, None, None
        most = max(most, 1)
        index = live.to(grad.dtype).topk(most, dim=1).indices  # (B, m), live ones first
        picked = grad.gather(1, index[:, :, None, None].expand(batch, most, height, width))
        grad_x = torch.nn.grad.conv2d_input(
            (1, batch * shape[1], *shape[2:]),
            weight[index.flatten()],  # (B * m, C_in, k, k): each image's channels' weights
            picked.reshape(1, batch * most, height, width),
            groups=batch,
            **geometry,
        )
        return grad_x.reshape(shape), None, None, None


def _holders(t: Tensor) -> tuple[int, int, int] | None:
    """Who holds ``t``: Python references, references to the tensor from C++ (autograd's
    saved tensors), and tensors sharing its memory (views); ``None`` on a torch without
    these queries (then nothing is reused). Only comparing two calls from the same place
    means anything (each counts its own handles)."""
    use_count = getattr(t, "_use_count", None)
    storage_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None or storage_count is None:
        return None
    return sys.getrefcount(t), int(use_count()), int(storage_count(t.untyped_storage()._cdata))


class GradientBuffer:
    """One reusable output tensor for a backward pass that runs every step with the same
    shape: a fresh multi-megabyte gradient costs its page faults each time (zero-filling a
    fresh (8, 64, 64, 64) one: 3 ms, a reused one: 0.3 ms). The tensor is handed out again
    only when nothing else holds it, a view of it or its Python object (a hook that kept
    last step's gradient makes a new one be handed out)."""

    def __init__(self) -> None:
        self._tensor: Tensor | None = None
        self._free: tuple[int, int, int] | None = None

    def like(self, x: Tensor) -> Tensor:
        """An uninitialized tensor of ``x``'s shape, strides, dtype and device."""
        held = self._tensor
        if (
            held is not None
            and held.shape == x.shape
            and held.stride() == x.stride()
            and held.dtype == x.dtype
            and held.device == x.device
            and self._free is not None
            and _holders(held) == self._free
        ):
            return held
        self._tensor = torch.empty_like(x)
        held = self._tensor
        self._free = _holders(held)
        return held


class PooledReLU(torch.autograd.Function):
    """``relu(max_pool2d(x))`` (equal to ``max_pool2d(relu(x))``), or the pooling alone
    (``rectify=False``), with the pooling's input gradient written into a
    :class:`GradientBuffer`: the same numbers as the layers' own backward passes
    (``threshold_backward``, then ``max_pool2d_with_indices_backward``). Under
    ``create_graph=True`` the backward uses no buffer, so a second derivative is recorded."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, pool: nn.MaxPool2d, buffer: GradientBuffer, rectify: bool = True
    ) -> Tensor:
        geometry = _pool_geometry(pool)
        out, indices = torch.ops.aten.max_pool2d_with_indices(x, *geometry)
        if rectify:
            out.clamp_min_(0)
        ctx.geometry, ctx.buffer, ctx.rectify = geometry, buffer, rectify
        ctx.save_for_backward(x, indices, out if rectify else None)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        x, indices, out = ctx.saved_tensors
        if ctx.rectify:
            grad = torch.ops.aten.threshold_backward(grad, out, 0)  # the ReLU's own backward
        kernel, stride, padding, dilation, ceil_mode = ctx.geometry
        if torch.is_grad_enabled():  # create_graph=True: differentiable ops, no out= buffer
            grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
                grad, x, kernel, stride, padding, dilation, ceil_mode, indices
            )
            return grad_x, None, None, None
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
            grad,
            x,
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
            indices,
            grad_input=ctx.buffer.like(x),
        )
        return grad_x, None, None, None


def _pool_geometry(pool: nn.MaxPool2d) -> tuple[list[int], list[int], list[int], list[int], bool]:
    def pair(v: Any) -> list[int]:
        return [int(v), int(v)] if isinstance(v, int) else [int(e) for e in v]

    kernel = pair(pool.kernel_size)
    stride = pair(pool.stride) if pool.stride else kernel  # stride None / () means the kernel
    return kernel, stride, pair(pool.padding), pair(pool.dilation), bool(pool.ceil_mode)
