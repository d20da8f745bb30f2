"""The network in the form a render runs fastest in, for one render, then given back.

Activation maximization runs the network forward and backward hundreds of times with its
parameters frozen, differentiating with respect to the image only. These changes make
every pass cheaper without changing what it computes beyond float rounding (about 1e-6
relative per pass):

* **BatchNorm folding**: an eval-mode BatchNorm whose input is exactly one convolution's
  output is folded into that convolution, ``w' = w * gamma / sqrt(var + eps)`` and
  ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``
  (:func:`xaikit.lrp.canonizers.merge_batchnorm`), and becomes the identity: one pass of
  normalization forward and backward less per block (Ioffe & Szegedy's inference form).
* **Channels-last weights** (CPU): the convolutions read their weights in NHWC order, so
  oneDNN runs its NHWC kernels and the activations after them (ReLU, max pooling, sums) stay
  NHWC, where PyTorch's CPU kernels are vectorized across channels (max pooling of an
  (8, 64, 64, 64) activation: 12 ms NCHW, 0.7 ms NHWC on one core).
* **The input gradient of a strided first convolution** (few input channels, e.g. a
  ResNet's 7x7 stride-2 stem; CPU): its backward pass to the image is PyTorch's slowest
  convolution here (14.5 ms of a 92 ms step at 128 px); it is computed instead as the
  stride-1 convolution of the layer's space-to-depth form (the input cut into s x s phases
  as channels, the kernel likewise: the sub-pixel equivalence of Shi et al., CVPR 2016),
  6.5 ms. The forward pass is the layer's own.
* **Max pooling before its ReLU**: ``maxpool(relu(x)) = relu(maxpool(x))`` (the maximum
  commutes with a non-decreasing function) and the gradient reaches the same places, so a
  ReLU whose output only a max pooling reads runs after it, on a quarter of the values,
  and the pooling's input gradient is written into one buffer reused step after step (a
  fresh 8 MB gradient costs 3 ms of page faults).
* **A sparse gradient at the last convolution**: a channel objective's gradient at the last
  convolution before the layer it reads is one channel per image (ReLU, BatchNorm and
  residual sums act per channel), so that layer's input gradient uses one output channel's
  weights per image (a grouped transposed convolution) instead of all of them.

The space-to-depth, pooling and sparse backward passes are in :mod:`xaikit.filters.render_grads`.

On torchvision's resnet18 at 128 px, batch 8, one core, a forward plus input-gradient pass
to ``layer3`` takes 101 ms as it is and about 70 ms in this form
(``benchmarks/bench_maximize.py`` measures whole renders).

All are applied by overriding ``forward`` on module instances, with new tensors (the
parameters and buffers are never written), and only on modules whose class computes exactly
``nn.Conv*d`` / ``nn.BatchNorm*d`` / ``nn.ReLU`` / ``nn.MaxPool2d`` (a subclass with its
own ``forward``, e.g. timm's weight-standardized convolutions, is left alone). What pairs
with what is found by one traced forward pass on a probe input; the form is kept only if the
layers the render reads give the same values on that probe (to 1e-4 of their scale). When
they do not, each change (a fold, a moved ReLU, a convolution's weights) is checked alone
and those that keep the values are kept, if together they still do; else the network runs
as it is. Undone on exit, exception or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaikit.filters.render_grads import (
    ChannelSparseGrad,
    GradientBuffer,
    PooledReLU,
    SpaceToDepth,
    SpaceToDepthGrad,
)
from xaikit.lrp.canonizers import merge_batchnorm

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: the largest difference the form may make to a layer the render reads, relative to the
#: layer's largest value (folding differs by ~1e-6; a wrong fold by far more)
TOLERANCE = 1e-4


def _plain_conv(module: nn.Module) -> bool:
    """A convolution that computes exactly what ``torch.nn``'s computes (a subclass with its
    own ``forward`` is not), with a float weight and no ``forward`` of its own on the
    instance (someone else's override is never stacked on)."""
    base = next((k for k in _CONVS if isinstance(module, k)), None)
    return (
        base is not None
        and type(module).forward is base.forward
        and "forward" not in module.__dict__
        and module.weight.is_floating_point()
    )


def _plain_norm(module: nn.Module) -> bool:
    """A BatchNorm that computes exactly what ``torch.nn``'s computes (affine or not)."""
    base = next((k for k in _BATCHNORMS if isinstance(module, k)), None)
    return (
        base is not None
        and type(module).forward is base.forward
        and "forward" not in module.__dict__
    )


def _foldable(bn: nn.Module, conv: nn.Module) -> bool:
    return (
        not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
        and conv.weight.dim()
        == {nn.BatchNorm1d: 3, nn.BatchNorm2d: 4, nn.BatchNorm3d: 5}.get(type(bn), -1)
    )


def find_pairs(
    model: nn.Module, run: Callable[[], Any], keep: Iterable[nn.Module] = ()
) -> dict[nn.Module, nn.Module]:
    """``{conv: batchnorm}`` for every BatchNorm whose input, in one forward pass ``run()``,
    is exactly the output of a convolution, each called once, the convolution not among
    ``keep`` (a layer whose own output is read must not change)."""
    return _trace(model, run, keep).folds


@dataclass
class _Trace:
    folds: dict[nn.Module, nn.Module]  # conv -> the BatchNorm folded into it
    swaps: dict[nn.Module, nn.Module]  # ReLU -> the max pooling that takes its output
    ran: list[nn.Module]  # the plain convolutions that ran, in model order
    last: nn.Module | None  # the convolution that ran last (nearest what the render reads)


def _plain_relu(module: nn.Module) -> bool:
    return type(module) is nn.ReLU and "forward" not in module.__dict__


def _plain_pool(module: nn.Module) -> bool:
    return (
        type(module) is nn.MaxPool2d
        and not module.return_indices
        and "forward" not in module.__dict__
    )


def _trace(model: nn.Module, run: Callable[[], Any], keep: Iterable[nn.Module]) -> _Trace:
    """One forward pass ``run()`` with every plain convolution and ReLU watched as a
    producer and every plain BatchNorm and max pooling as a consumer: which consumer's input
    is exactly which producer's output (each called once, the producer not among ``keep``),
    and which convolutions ran (a network stopped at a layer never runs the rest)."""
    kept = set(keep)
    convs = [m for m in model.modules() if _plain_conv(m)]
    producers = convs + [m for m in model.modules() if _plain_relu(m)]
    consumers = [m for m in model.modules() if _plain_norm(m) or _plain_pool(m)]
    produced: dict[int, tuple[Tensor, nn.Module]] = {}  # id -> (output, producer), alive
    fed: dict[nn.Module, nn.Module | None] = {}  # consumer -> the producer of its input
    calls: dict[nn.Module, int] = {}

    order: list[nn.Module] = []

    def started(module: nn.Module, _args: Any) -> None:
        # counted before the module runs: a captured layer that ends the pass (the capture's
        # hook raises to stop it) never reaches the hooks after it
        calls[module] = calls.get(module, 0) + 1
        order.append(module)

    def after(module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            produced[id(output)] = (output, module)  # an in-place ReLU takes over the id

    def before(module: nn.Module, args: Any) -> None:
        calls[module] = calls.get(module, 0) + 1
        source = produced.get(id(args[0])) if args and isinstance(args[0], Tensor) else None
        # decided now, while the input is alive (an id is only unique among live objects)
        fed[module] = source[1] if source is not None and source[0] is args[0] else None

    handles = [m.register_forward_pre_hook(started) for m in producers]
    handles += [m.register_forward_hook(after) for m in producers]
    handles += [m.register_forward_pre_hook(before) for m in consumers]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    last = next((m for m in reversed(order) if isinstance(m, _CONVS)), None)
    trace = _Trace({}, {}, [conv for conv in convs if calls.get(conv)], last)
    for consumer, producer in fed.items():
        if (
            producer is None
            or producer in kept
            or calls.get(producer) != 1
            or calls.get(consumer) != 1
        ):
            continue
        if _plain_norm(consumer) and isinstance(producer, _CONVS):
            if producer not in trace.folds and _foldable(consumer, producer):
                trace.folds[producer] = consumer
        elif _plain_pool(consumer) and _plain_relu(producer):
            trace.swaps[producer] = consumer
    return trace


def _function_mode_active() -> bool:
    """Whether a ``TorchFunctionMode`` is on (unknown on a torch without the query: yes)."""
    depth = getattr(torch._C, "_len_torch_function_stack", None)
    return True if depth is None else bool(depth())


def _relu_after(pool: nn.Module, relu: nn.Module) -> Callable[[Tensor], Tensor]:
    """Max pooling then ReLU: equal to ReLU then max pooling (the maximum commutes with a
    non-decreasing function), with the ReLU and its backward on the pooled, smaller
    tensor; every gradient the same, since the maximum is found at the same place. The
    pooling's input gradient is written into one buffer reused step after step
    (:class:`~xaikit.filters.render_grads.PooledReLU`)."""

    def forward(x: Tensor) -> Tensor:
        buffered = x.requires_grad and x.dim() == 4
        if _function_mode_active():
            # a function mode is on (the redirected ReLU of a render's first steps): its
            # gradient depends on where the ReLU sits, so the original order is kept
            rectified = F.relu(x, inplace=bool(relu.inplace))  # as the ReLU module would
            if buffered:
                return PooledReLU.apply(rectified, pool, buffer, False)
            return nn.MaxPool2d.forward(pool, rectified)  # type: ignore[arg-type]
        if buffered:
            return PooledReLU.apply(x, pool, buffer)
        return torch.relu(nn.MaxPool2d.forward(pool, x))  # type: ignore[arg-type]

    buffer = GradientBuffer()
    return forward


def _conv_forward(
    conv: nn.Module,
    weight: Tensor,
    bias: Tensor | None,
    strided: SpaceToDepth | None,
    sparse: bool = False,
) -> Callable[..., Tensor]:
    def forward(x: Tensor) -> Tensor:
        return conv._conv_forward(x, weight, bias)  # type: ignore[operator]

    if sparse and strided is None:

        def sparse_forward(x: Tensor) -> Tensor:
            if not x.requires_grad or x.dim() != 4:
                return forward(x)
            return ChannelSparseGrad.apply(x, forward, conv, weight)

        return sparse_forward
    if strided is None:
        return forward

    def strided_forward(x: Tensor) -> Tensor:
        if not x.requires_grad or x.dim() != 4:
            return forward(x)
        return SpaceToDepthGrad.apply(x, forward, strided)

    return strided_forward


@dataclass
class _Change:
    """Overrides that go together (a convolution and the BatchNorm folded into it; a ReLU
    and the max pooling it moves after), and what they count for."""

    forwards: dict[nn.Module, Callable[..., Tensor]]
    folded: int = 0
    channels_last: int = 0
    space_to_depth: int = 0
    pooled: int = 0


def _counts(changes: list[_Change]) -> dict[str, int]:
    names = ("folded", "channels_last", "space_to_depth", "pooled")
    return {name: sum(getattr(change, name) for change in changes) for name in names}


def _merged(changes: list[_Change]) -> dict[nn.Module, Callable[..., Tensor]]:
    return {module: f for change in changes for module, f in change.forwards.items()}


def _identity(x: Tensor) -> Tensor:
    return x


@contextlib.contextmanager
def _overridden(forwards: Mapping[nn.Module, Callable[..., Tensor]]) -> Iterator[None]:
    try:
        for module, forward in forwards.items():
            module.forward = forward  # type: ignore[method-assign]
        yield
    finally:
        for module in forwards:
            module.__dict__.pop("forward", None)


def _same(reference: Mapping[str, Tensor], now: Mapping[str, Tensor]) -> bool:
    if reference.keys() != now.keys():
        return False
    for name, expected in reference.items():
        got = now[name]
        if got.shape != expected.shape:
            return False
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if not bool(torch.isfinite(got).all()) or (
            expected.numel() and float((got - expected).abs().max()) > TOLERANCE * max(scale, 1e-6)
        ):
            return False
    return True


@contextlib.contextmanager
def render_form(
    model: nn.Module,
    run: Callable[[], Mapping[str, Tensor]],
    *,
    keep: Iterable[nn.Module] = (),
    fold: bool = True,
    channels_last: bool = True,
    space_to_depth: bool = True,
    pool_first: bool = True,
    sparse_grad: bool = True,
) -> Iterator[dict[str, int]]:
    """``model`` in its fast form for the duration (see the module's docstring).

    Args:
        model: the network (its parameters are read, never written).
        run: one forward pass on a probe input, returning the values the render reads
            (``{name: tensor}``: captured layers, the output); called three times (a
            trace, the reference, the check), and when the check fails once per change
            (and once more when some but not all of them pass alone): the changes that
            alone keep the values are kept, if together they still do.
        keep: modules whose own output is read (never folded into).
        fold: fold BatchNorms into their convolutions.
        channels_last: use 4-D convolution weights in channels-last order.
        space_to_depth: the input gradient of strided convolutions on few channels by their
            space-to-depth form.
        pool_first: a ReLU whose output only a max pooling takes is applied after it.
        sparse_grad: the last convolution's input gradient from the output channels that
            get one (a channel objective's).

    Yields:
        ``{"folded", "channels_last", "space_to_depth", "pooled"}``: how many BatchNorms
        were folded, convolutions read channels-last weights or take their input gradient by
        the space-to-depth form, ReLUs moved after their max pooling (of the changes kept;
        all 0 when none was).
    """
    keep = list(keep)
    trace = _trace(model, run, keep)
    pairs = trace.folds if fold else {}
    changes: list[_Change] = []
    if pool_first:
        for relu, pool in trace.swaps.items():
            changes.append(_Change({relu: _identity, pool: _relu_after(pool, relu)}, pooled=1))
    with torch.no_grad():
        for conv in trace.ran:
            bn = pairs.get(conv)
            if bn is not None:
                weight, bias = merge_batchnorm(conv, bn)
                weight, bias = weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)
            else:
                weight = conv.weight.detach()
                bias = None if conv.bias is None else conv.bias.detach()
            layout = channels_last and weight.dim() == 4
            if layout:
                weight = weight.contiguous(memory_format=torch.channels_last)
            strided = SpaceToDepth.of(conv, weight) if space_to_depth else None
            sparse = (
                sparse_grad
                and conv is trace.last
                and isinstance(conv, nn.Conv2d)
                and conv.padding_mode == "zeros"  # its backward pads as the convolution does
                and not isinstance(conv.padding, str)  # "same" / "valid": no backward form
            )
            if bn is None and not layout and strided is None and not sparse:
                continue
            forwards = {conv: _conv_forward(conv, weight, bias, strided, sparse)}
            if bn is not None:
                forwards[bn] = _identity
            changes.append(
                _Change(
                    forwards,
                    folded=int(bn is not None),
                    channels_last=int(layout),
                    space_to_depth=int(strided is not None),
                )
            )
    if not changes:
        yield _counts([])
        return
    with torch.no_grad():
        reference = {name: t.detach().clone() for name, t in run().items()}

    def same_with(chosen: list[_Change]) -> bool:
        with _overridden(_merged(chosen)), torch.no_grad():
            return _same(reference, {name: t.detach() for name, t in run().items()})

    kept = changes
    if not same_with(changes):
        # one change alters what the render reads (a conv output read twice, a ReLU output
        # read beside its pooling): keep the ones that do not, if together they still do not
        kept = [change for change in changes if same_with([change])]
        if len(kept) == len(changes) or (kept and not same_with(kept)):
            kept = []
    with _overridden(_merged(kept)):
        yield _counts(kept)
