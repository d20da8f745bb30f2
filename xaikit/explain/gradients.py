"""Gradient and perturbation attributions on the input, built on captum.

Every method has the same signature::

    fn(forward, inputs, targets, *, seed=None, **opts) -> Tensor

* ``forward(x) -> (N, num_outputs)``: the scores to explain, with output selection and the
  score (logit or probability) already applied. A ``nn.Module`` may be passed directly; it is
  then borrowed (:func:`xaikit.explain.state.borrowed`: eval mode, frozen parameters) for the
  call. A plain callable is expected to run on an already borrowed model.
* ``inputs``: ``(N, C, *S)`` - images ``(N, C, H, W)``, signals ``(N, C, L)``. Never modified:
  gradients are taken on a detached clone.
* ``targets``: ``(N, K)`` integer output indices, K per input (``(N,)`` counts as K = 1).
* returns ``(N, K, *S)``: raw, signed, unnormalized maps on the inputs' device, the input-channel
  dimension reduced by the method's rule below (``channel_reduce=`` overrides it;
  ``"none"`` keeps ``(N, K, C, *S)``).

=================== ============================ =============================================
method              paper                        channel rule (default ``channel_reduce``)
=================== ============================ =============================================
``saliency``        Simonyan et al., 2014        ``max_abs``: max over channels of ``|grad|``
``inputxgrad``      Shrikumar et al., 2016;      ``sum``: keeps the first-order decomposition
                    Kindermans et al., 2016      ``sum(attr) ~ f(x) - f(0)`` for locally linear f
``ig``              Sundararajan et al., 2017    ``sum``: keeps completeness,
                                                 ``sum(attr) = f(x) - f(baseline)``
``smoothgrad``      Smilkov et al., 2017         ``max_abs`` of the noise-averaged ``|grad|``
``guided-backprop`` Springenberg et al., 2015    ``sum``: signed; commutes with Guided Grad-CAM's
                                                 product by an upsampled CAM (a per-position
                                                 factor), so ``cam * gb`` equals the channel sum
                                                 of Selvaraju et al.'s per-channel product
``occlusion``       Zeiler & Fergus, 2014        ``mean``: the window spans every channel, so
                                                 each channel carries the same score drop
=================== ============================ =============================================

K targets per input share the forward passes: saliency, input x gradient, guided backprop and
each SmoothGrad noise sample run one forward pass and one batched backward for all K targets
(``autograd.grad(..., is_grads_batched=True)``); occlusion scores every target of a perturbed
batch at once; integrated gradients expands the batch to ``N * K`` rows, one captum target per
row. No method loops over inputs in Python.

Options accepted by every method, so one call can run several: ``seed`` (used by
``smoothgrad``), ``normalization`` (a model card's ``{"mean": [...], "std": [...]}``, used to
place pixel-space baselines), ``internal_batch_size`` (rows per forward pass, used by ``ig``,
``smoothgrad`` and ``occlusion``) and ``channel_reduce``. Any other unknown option raises
:class:`~xaikit.errors.XaikitConfigError`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from xaikit.errors import XaikitConfigError
from xaikit.explain.state import borrowed

Forward = Callable[[Tensor], Tensor]
Normalization = Mapping[str, Sequence[float]]
Baseline = str | float | Tensor

DEFAULT_INTERNAL_BATCH_SIZE = 256


class GradientMethod(Protocol):
    """``(forward, inputs (N, C, *S), targets (N, K)) -> (N, K, *S)``."""

    def __call__(
        self,
        forward: Forward,
        inputs: Tensor,
        targets: Tensor,
        *,
        seed: int | None = None,
        **opts: Any,
    ) -> Tensor: ...


# --------------------------------------------------------------------------- channel rules

CHANNEL_REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sum": lambda a: a.sum(dim=2),
    "mean": lambda a: a.mean(dim=2),
    "max_abs": lambda a: a.abs().amax(dim=2),
    "sum_abs": lambda a: a.abs().sum(dim=2),
    "none": lambda a: a,
}


def reduce_channels(attributions: Tensor, rule: str) -> Tensor:
    """Reduce the channel dimension of per-channel attributions.

    ``(N, K, C, *S) -> (N, K, *S)`` by ``rule``: ``"sum"``, ``"mean"``, ``"max_abs"``
    (max over channels of the absolute value), ``"sum_abs"``; ``"none"`` returns the input.
    """
    try:
        reduce = CHANNEL_REDUCTIONS[rule]
    except (KeyError, TypeError):
        raise XaikitConfigError(
            f"unknown channel_reduce {rule!r}; choose one of {', '.join(CHANNEL_REDUCTIONS)}"
        ) from None
    return reduce(attributions)


# --------------------------------------------------------------------------- validation


def _reject_unknown(method: str, unknown: Mapping[str, Any], accepted: Sequence[str]) -> None:
    if unknown:
        raise XaikitConfigError(
            f"method {method!r} got unknown option(s) {', '.join(sorted(unknown))}; "
            f"it accepts {', '.join(accepted)}"
        )


def _prepare(inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes; return a detached float clone of the inputs and ``(N, K)`` long targets."""
    if not isinstance(inputs, Tensor) or inputs.dim() < 3:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise XaikitConfigError(
            f"inputs must be a tensor shaped (N, C, *S) with at least one spatial dimension, "
            f"got {shape}"
        )
    if not inputs.is_floating_point():
        raise XaikitConfigError(f"inputs must be floating point, got dtype {inputs.dtype}")
    if min(inputs.shape) < 1:
        raise XaikitConfigError(f"inputs must not be empty, got shape {tuple(inputs.shape)}")
    targets = torch.as_tensor(targets, device=inputs.device)
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise XaikitConfigError(f"targets must hold integer class indices, got {targets.dtype}")
    if targets.dim() == 1:
        targets = targets.unsqueeze(1)
    if targets.dim() != 2 or targets.shape[0] != inputs.shape[0] or targets.shape[1] < 1:
        raise XaikitConfigError(
            f"targets must be shaped (N, K) = ({inputs.shape[0]}, K) with K >= 1 for "
            f"{inputs.shape[0]} inputs, got {tuple(targets.shape)}"
        )
    if bool((targets < 0).any()):
        raise XaikitConfigError(f"target indices must be >= 0, got {targets.min().item()}")
    return inputs.detach().clone(), targets.long()


def _checked(forward: Forward, targets: Tensor) -> Forward:
    """Wrap ``forward`` so a wrong output shape or an out-of-range target fails clearly."""
    highest = int(targets.max())

    def call(x: Tensor) -> Tensor:
        out = forward(x)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise XaikitConfigError(
                f"forward must return scores shaped (N, num_outputs) = ({x.shape[0]}, ...), "
                f"got {got}; select one output tensor of the model before explaining"
            )
        if highest >= out.shape[1]:
            raise XaikitConfigError(
                f"target index {highest} is out of range for a model with {out.shape[1]} "
                f"outputs (valid: 0..{out.shape[1] - 1})"
            )
        return out

    return call


@contextlib.contextmanager
def _lent(forward: Forward) -> Iterator[None]:
    """Borrow ``forward`` when it is a model; always enable grad for the call."""
    if isinstance(forward, nn.Module):
        with borrowed(forward):
            yield
    else:
        with torch.enable_grad():
            yield


# --------------------------------------------------------------------------- baselines


def _channel_stats(normalization: Normalization, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(1, C, 1, ...)`` mean and std tensors for a ``(N, C, *S)`` input."""
    if not isinstance(normalization, Mapping) or not {"mean", "std"} <= set(normalization):
        raise XaikitConfigError(
            f"normalization must be a dict with 'mean' and 'std' lists, got {normalization!r}"
        )
    mean = [float(v) for v in normalization["mean"]]
    std = [float(v) for v in normalization["std"]]
    channels = like.shape[1]
    if len(mean) != len(std) or len(mean) not in (1, channels) or min(std) <= 0:
        raise XaikitConfigError(
            f"normalization needs 1 or {channels} mean/std values with positive std for "
            f"inputs with {channels} channels, got mean={mean} std={std}"
        )
    shape = (1, -1) + (1,) * (like.dim() - 2)
    kwargs = {"dtype": like.dtype, "device": like.device}
    return (
        torch.tensor(mean, **kwargs).reshape(shape),
        torch.tensor(std, **kwargs).reshape(shape),
    )


def gaussian_blur(inputs: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur over every spatial dimension: ``(N, C, *S) -> (N, C, *S)``.

    Edges are padded by replication; the kernel sums to 1, so the blur commutes with a
    per-channel affine normalization (blurring in pixel or in normalized space is the same).
    """
    if sigma <= 0:
        return inputs.clone()
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = (kernel / kernel.sum()).reshape(1, 1, -1)
    out = inputs
    for dim in range(2, inputs.dim()):
        moved = out.movedim(dim, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        flat = F.conv1d(F.pad(flat, (radius, radius), mode="replicate"), kernel)
        out = flat.reshape(moved.shape).movedim(-1, dim)
    return out


def make_baseline(
    inputs: Tensor,
    baseline: Baseline = "black",
    *,
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
) -> Tensor:
    """The reference input of integrated gradients and occlusion, ``(N, C, *S)``.

    Baselines are defined in pixel space (Sturmfels et al., 2020, "Visualizing the Impact of
    Feature Attribution Baselines"), so they do not depend on how the model normalizes:

    * ``"black"`` (alias ``"zero"``): an all-zero input in pixel space; with
      ``normalization`` that is ``normalize(zeros) = -mean / std`` per channel, without it
      plain zeros in the model's input space.
    * ``"mean"``: each channel filled with the input's own mean over its positions (a flat
      image of the input's average colour; the same in pixel and normalized space).
    * ``"blur"``: the input blurred by a Gaussian of ``blur_sigma`` positions (default: a
      tenth of the smallest spatial size, at least 1).
    * a number: that constant, in the model's input space.
    * a tensor ``(C, *S)``, ``(1, C, *S)`` or ``(N, C, *S)``, in the model's input space.
    """
    if isinstance(baseline, Tensor):
        base = baseline.detach().to(device=inputs.device, dtype=inputs.dtype)
        if base.dim() == inputs.dim() - 1:
            base = base.unsqueeze(0)
        if (
            base.dim() != inputs.dim()
            or base.shape[1:] != inputs.shape[1:]
            or (base.shape[0] not in (1, inputs.shape[0]))
        ):
            raise XaikitConfigError(
                f"a baseline tensor must be shaped (C, *S), (1, C, *S) or (N, C, *S) like the "
                f"inputs {tuple(inputs.shape)}, got {tuple(baseline.shape)}"
            )
        return base.expand_as(inputs).clone()
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if baseline in ("black", "zero", "zeros"):
        if normalization is None:
            return torch.zeros_like(inputs)
        mean, std = _channel_stats(normalization, inputs)
        return ((0.0 - mean) / std).expand_as(inputs).clone()
    if baseline == "mean":
        dims = tuple(range(2, inputs.dim()))
        return inputs.mean(dim=dims, keepdim=True).expand_as(inputs).clone()
    if baseline == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(1.0, min(inputs.shape[2:]) / 10)
        return gaussian_blur(inputs, float(sigma))
    raise XaikitConfigError(
        f"unknown baseline {baseline!r}; use 'black', 'mean', 'blur', a number or a tensor "
        "shaped like one input"
    )


# --------------------------------------------------------------------------- gradients


def _input_gradients(forward: Forward, inputs: Tensor, targets: Tensor) -> Tensor:
    """``d forward(x)[n, targets[n, k]] / d x[n]`` as ``(N, K, C, *S)``.

    One target: captum's :class:`~captum.attr.Saliency`. Several: one forward pass and one
    ``autograd.grad`` over a batch of one-hot output gradients (``is_grads_batched``); if an
    operation of the model has no batching rule, one captum backward per target instead.
    """
    k = targets.shape[1]
    if k > 1:
        with torch.enable_grad():
            x = inputs.clone().requires_grad_(True)
            out = forward(x)
            one_hot = F.one_hot(targets.T, out.shape[1]).to(out.dtype)  # (K, N, outputs)
            try:
                (grads,) = torch.autograd.grad(out, x, one_hot, is_grads_batched=True)
                return grads.transpose(0, 1)
            except RuntimeError:
                del out
    captum_saliency = Saliency(forward)
    return torch.stack(
        [
            captum_saliency.attribute(
                inputs.clone().requires_grad_(True), target=targets[:, j], abs=False
            )
            for j in range(k)
        ],
        dim=1,
    )


_COMMON = ("seed", "normalization", "internal_batch_size", "channel_reduce")


def saliency(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    channel_reduce: str = "max_abs",
    normalization: Normalization | None = None,
    internal_batch_size: int | None = None,
    **unknown: Any,
) -> Tensor:
    """Vanilla gradient saliency: ``(N, C, *S) -> (N, K, *S)``.

    Simonyan, Vedaldi & Zisserman, 2014, "Deep Inside Convolutional Networks: Visualising
    Image Classification Models and Saliency Maps": ``M = max_c |d S_k / d x_c|``.
    ``seed``, ``normalization`` and ``internal_batch_size`` are accepted and unused.
    """
    _reject_unknown("saliency", unknown, _COMMON)
    x, t = _prepare(inputs, targets)
    with _lent(forward):
        grads = _input_gradients(_checked(forward, t), x, t)
    return reduce_channels(grads, channel_reduce)


def input_x_gradient(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    channel_reduce: str = "sum",
    normalization: Normalization | None = None,
    internal_batch_size: int | None = None,
    **unknown: Any,
) -> Tensor:
    """Input x gradient: ``(N, C, *S) -> (N, K, *S)``, ``sum_c x_c * d S_k / d x_c``.

    Shrikumar et al., 2016, "Not Just a Black Box: Learning Important Features Through
    Propagating Activation Differences"; Kindermans et al., 2016, "Investigating the influence
    of noise and distractors on the interpretation of neural networks". One target per input
    uses captum's :class:`~captum.attr.InputXGradient`.
    """
    _reject_unknown("inputxgrad", unknown, _COMMON)
    x, t = _prepare(inputs, targets)
    with _lent(forward):
        checked = _checked(forward, t)
        if t.shape[1] == 1:
            attr = (
                InputXGradient(checked)
                .attribute(x.clone().requires_grad_(True), target=t[:, 0])
                .unsqueeze(1)
            )
        else:
            attr = _input_gradients(checked, x, t) * x.unsqueeze(1)
    return reduce_channels(attr, channel_reduce)


def integrated_gradients(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    steps: int = 32,
    baseline: Baseline = "black",
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    quadrature: str = "gausslegendre",
    channel_reduce: str = "sum",
    **unknown: Any,
) -> Tensor:
    """Integrated gradients along the straight path from a baseline: ``-> (N, K, *S)``.

    Sundararajan, Taly & Yan, 2017, "Axiomatic Attribution for Deep Networks":
    ``(x - x') * integral_0^1 dS(x' + a (x - x')) / dx da``, computed by captum's
    :class:`~captum.attr.IntegratedGradients` with ``steps`` points of the ``quadrature`` rule
    (captum's ``"gausslegendre"`` by default, or ``"riemann_trapezoid"`` ...). Completeness:
    the sum over every position and channel equals ``S(x) - S(x')`` up to the quadrature
    error.

    ``baseline``: see :func:`make_baseline` (``"black"`` is black in pixel space when
    ``normalization`` is given). ``internal_batch_size``: rows (input x path point) per forward
    pass (default 256; ``xaikit.explain`` sets it from its ``memory_budget``), a hard bound:
    when fewer than ``steps`` fit, each row's path points are split over several passes.
    """
    _reject_unknown("ig", unknown, (*_COMMON, "steps", "baseline", "blur_sigma", "quadrature"))
    if not isinstance(steps, int) or steps < 1:
        raise XaikitConfigError(f"ig steps must be a positive integer, got {steps!r}")
    x, t = _prepare(inputs, targets)
    n, k = t.shape
    base = make_baseline(x, baseline, normalization=normalization, blur_sigma=blur_sigma)
    per_pass = _positive_batch(internal_batch_size)
    # Rows (input x target) are independent: blocks of rows with every path point in one pass
    # when ``steps`` fit, else one row at a time with ``per_pass`` path points per pass. The
    # split depends on ``per_pass`` and ``steps`` only, not on N, so a row's sum over path
    # points runs in the same order whatever batch it came in (chunked calls are identical).
    block = max(1, per_pass // steps)
    step_batch = None if per_pass >= steps else per_pass
    rows_x, rows_base, rows_t = (
        x.repeat_interleave(k, dim=0),
        base.repeat_interleave(k, dim=0),
        t.reshape(-1),
    )
    with _lent(forward):
        ig = IntegratedGradients(_checked(forward, t), multiply_by_inputs=True)
        parts = [
            ig.attribute(
                rows_x[start : start + block],
                baselines=rows_base[start : start + block],
                target=rows_t[start : start + block],
                n_steps=steps,
                method=quadrature,
                internal_batch_size=step_batch,
            )
            for start in range(0, n * k, block)
        ]
    attr = parts[0] if len(parts) == 1 else torch.cat(parts)
    return reduce_channels(attr.reshape(n, k, *x.shape[1:]), channel_reduce)


def _positive_batch(internal_batch_size: int | None) -> int:
    """Rows per forward pass: ``internal_batch_size`` or the default, checked."""
    value = DEFAULT_INTERNAL_BATCH_SIZE if internal_batch_size is None else internal_batch_size
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise XaikitConfigError(
            f"internal_batch_size must be a positive integer, got {internal_batch_size!r}"
        )
    return value


def noise_seed(seed: int, index: int) -> int:
    """The seed of input ``index``'s SmoothGrad noise under the call's ``seed`` (63 bits)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    mixed ^= mixed >> 31
    return mixed & ((1 << 63) - 1)


@contextlib.contextmanager
def seeded_global_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run a block that draws from the global RNG of ``device`` with a private seed.

    For code we do not own (captum's NoiseTunnel draws ``torch.normal`` from the global
    generator): the generator state is saved, seeded, and restored on exit, so the caller's
    global RNG is exactly as before. ``seed=None`` draws a fresh seed from the OS.
    """
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    backend = getattr(torch, device.type)
    if hasattr(backend, "current_device"):
        index = device.index if device.index is not None else backend.current_device()
        with torch.random.fork_rng(devices=[index], device_type=device.type):
            with backend.device(index):
                backend.manual_seed(seed)
            yield
        return
    with torch.random.fork_rng(devices=[0], device_type=device.type):  # one device (mps)
        backend.manual_seed(seed)
        yield


def smoothgrad(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    samples: int = 25,
    stdev: float = 0.15,
    internal_batch_size: int | None = None,
    channel_reduce: str = "max_abs",
    normalization: Normalization | None = None,
    first_index: int = 0,
    **unknown: Any,
) -> Tensor:
    """SmoothGrad: saliency averaged over noisy copies of the input, ``-> (N, K, *S)``.

    Smilkov et al., 2017, "SmoothGrad: removing noise by adding noise":
    ``mean_i |d S_k(x + e_i) / dx|`` with ``e_i ~ N(0, sigma^2)``, then the maximum over
    channels. ``stdev`` is relative to each input's range: ``sigma = stdev * (max x - min x)``
    (the paper's noise level; 0.1-0.2 works well). ``samples`` noisy copies per input, shared
    by its K targets; ``internal_batch_size`` bounds the rows of one forward pass.

    The noise of input ``i`` is drawn from a private CPU generator seeded by
    :func:`noise_seed` ``(seed, first_index + i)``: the same ``seed`` gives the same map, the
    global RNG is untouched, and the noise does not depend on how the batch is split
    (``xaikit.explain`` passes each chunk's ``first_index``). The per-input sigma comes from
    explaining ``z = x / range(x)`` and dividing the gradient back by the range. Noisy copies
    are averaged in sample order, so ``internal_batch_size`` changes no value.
    """
    _reject_unknown("smoothgrad", unknown, (*_COMMON, "samples", "stdev", "first_index"))
    if not isinstance(samples, int) or samples < 1:
        raise XaikitConfigError(f"smoothgrad samples must be a positive integer, got {samples!r}")
    if not float(stdev) >= 0:
        raise XaikitConfigError(f"smoothgrad stdev must be >= 0, got {stdev!r}")
    per_pass = _positive_batch(internal_batch_size)
    x, t = _prepare(inputs, targets)
    n = x.shape[0]
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    flat = x.flatten(start_dim=1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    span = torch.where(span > 0, span, torch.ones_like(span)).reshape(-1, *[1] * (x.dim() - 1))
    z = x / span
    checked = _checked(forward, t)
    group = min(samples, per_pass)  # noisy copies of one input per pass
    block = max(1, per_pass // group)  # inputs per pass
    total: Tensor | None = None
    with _lent(forward):
        for start in range(0, n, block):
            stop = min(n, start + block)
            b = stop - start
            noise = torch.stack(
                [
                    torch.randn(
                        (samples, *x.shape[1:]),
                        generator=torch.Generator().manual_seed(noise_seed(seed, first_index + i)),
                        dtype=x.dtype,
                    )
                    for i in range(start, stop)
                ]
            ).to(x.device) * float(stdev)
            scale = span[start:stop].repeat_interleave(group, dim=0)
            acc: Tensor | None = None
            for first in range(0, samples, group):
                count = min(group, samples - first)
                noisy = (z[start:stop, None] + noise[:, first : first + count]).flatten(0, 1)
                rows_t = t[start:stop].repeat_interleave(count, dim=0)
                rows_scale = scale[: b * count]

                def scaled(v: Tensor, s: Tensor = rows_scale) -> Tensor:
                    return checked(v * s)

                grads = _input_gradients(scaled, noisy, rows_t).abs()
                grads = grads.reshape(b, count, *grads.shape[1:])
                for j in range(count):  # in sample order: the same sum in any batching
                    acc = grads[:, j] if acc is None else acc + grads[:, j]
            assert acc is not None
            part = acc / samples
            if total is None:
                total = part.new_empty((n, *part.shape[1:]))
            total[start:stop] = part
    assert total is not None
    return reduce_channels(total / span.unsqueeze(1), channel_reduce)


# --------------------------------------------------------------------------- guided backprop


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at positive inputs."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


_RELU_OUT_OF_PLACE = frozenset({F.relu, torch.relu, Tensor.relu})
_RELU_IN_PLACE = frozenset({torch.relu_, Tensor.relu_, F.relu_})


class GuidedReLUMode(TorchFunctionMode):
    """Within this mode every ReLU - ``nn.ReLU`` (in place or not), ``F.relu``,
    ``torch.relu``, ``Tensor.relu`` and their in-place forms - backpropagates guided.

    A torch-function override rather than module hooks: it also catches functional calls
    (DenseNet's ``F.relu(x, inplace=True)``, Inception) and needs no module backward hook,
    which in-place ReLUs break. In-place calls write the guided result into their input, as
    the original would. Other activations (ReLU6, LeakyReLU, GELU...) backpropagate normally.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _RELU_OUT_OF_PLACE or func in _RELU_IN_PLACE:
            x = args[0]
            inplace = func in _RELU_IN_PLACE or bool(
                kwargs.get("inplace", args[1] if len(args) > 1 else False)
            )
            if not torch.is_grad_enabled() or not x.requires_grad:
                return func(*args, **kwargs)
            out = _GuidedReLU.apply(x)
            return x.copy_(out) if inplace else out
        return func(*args, **kwargs)


def guided_backprop(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    channel_reduce: str = "sum",
    normalization: Normalization | None = None,
    internal_batch_size: int | None = None,
    **unknown: Any,
) -> Tensor:
    """Guided backpropagation: ``(N, C, *S) -> (N, K, *S)`` (``(N, K, C, *S)`` with
    ``channel_reduce="none"``, the per-channel maps Guided Grad-CAM multiplies).

    Springenberg et al., 2015, "Striving for Simplicity: The All Convolutional Net": the input
    gradient where every ReLU passes back only positive gradients at positive inputs,
    ``R_in = (x > 0) * max(R_out, 0)`` - the rule of captum's GuidedBackprop, applied through
    :class:`GuidedReLUMode` so in-place and functional ReLUs are covered too.
    """
    _reject_unknown("guided-backprop", unknown, _COMMON)
    x, t = _prepare(inputs, targets)
    with _lent(forward), GuidedReLUMode():
        grads = _input_gradients(_checked(forward, t), x, t)
    return reduce_channels(grads, channel_reduce)


# --------------------------------------------------------------------------- occlusion


def _per_dim(
    value: int | Sequence[int] | None,
    sizes: Sequence[int],
    default: Callable[[int], int],
    name: str,
) -> tuple[int, ...]:
    if value is None:
        return tuple(default(s) for s in sizes)
    values = (value,) * len(sizes) if isinstance(value, int) else tuple(value)
    if len(values) != len(sizes) or any(not isinstance(v, int) or v < 1 for v in values):
        raise XaikitConfigError(
            f"occlusion {name} must be a positive int or {len(sizes)} positive ints (one per "
            f"spatial dimension of {tuple(sizes)}), got {value!r}"
        )
    return values


def occlusion(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    baseline: Baseline = "black",
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "mean",
    show_progress: bool = False,
    **unknown: Any,
) -> Tensor:
    """Occlusion: the score drop when a sliding window is replaced by the baseline.

    Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional Networks".
    ``(N, C, *S) -> (N, K, *S)``: each position gets the mean of ``S(x) - S(x occluded)`` over
    the windows that cover it (captum's :class:`~captum.attr.Occlusion`; windows span every
    channel). ``window``/``stride``: an int or one per spatial dimension (default: an eighth
    of each size, stride half the window). ``baseline``: see :func:`make_baseline`.
    ``internal_batch_size``: rows per forward pass (default 256). All K targets of a
    perturbed batch are scored by the same forward pass. ``show_progress``: captum's
    progress bar over the perturbed batches.
    """
    accepted = (*_COMMON, "window", "stride", "baseline", "blur_sigma", "show_progress")
    _reject_unknown("occlusion", unknown, accepted)
    x, t = _prepare(inputs, targets)
    n, k = t.shape
    sizes = tuple(x.shape[2:])
    win = _per_dim(window, sizes, lambda s: max(1, s // 8), "window")
    if any(w > s for w, s in zip(win, sizes)):
        raise XaikitConfigError(
            f"occlusion window {win} is larger than the inputs' spatial size {sizes}"
        )
    strides = _per_dim(stride, win, lambda w: max(1, w // 2), "stride")
    base = make_baseline(x, baseline, normalization=normalization, blur_sigma=blur_sigma)
    checked = _checked(forward, t)

    def selected(batch: Tensor, rows: Tensor) -> Tensor:
        return checked(batch).gather(1, rows)

    per_pass = _positive_batch(internal_batch_size)
    windows = math.prod((s - w) // st + 1 for s, w, st in zip(sizes, win, strides))
    # Windows per pass and inputs per pass depend on internal_batch_size and the windows only,
    # not on N: an input's sum over windows is the same whatever batch it came in.
    per_eval = max(1, min(windows, per_pass))
    block = max(1, per_pass // per_eval)
    channels = x.shape[1]
    parts = []
    with _lent(forward):
        for start in range(0, n, block):
            stop = min(n, start + block)
            parts.append(
                Occlusion(selected)
                .attribute(
                    x[start:stop],
                    sliding_window_shapes=(channels, *win),
                    strides=(channels, *strides),
                    baselines=base[start:stop],
                    target=None,
                    additional_forward_args=(t[start:stop],),
                    perturbations_per_eval=per_eval,
                    show_progress=show_progress,
                )
                .reshape(stop - start, k, *x.shape[1:])
            )
    attr = parts[0] if len(parts) == 1 else torch.cat(parts)
    # captum attributes each output element (n, k) separately, in row-major order.
    return reduce_channels(attr, channel_reduce)


GRADIENT_METHODS: dict[str, GradientMethod] = {
    "saliency": saliency,
    "inputxgrad": input_x_gradient,
    "ig": integrated_gradients,
    "smoothgrad": smoothgrad,
    "guided-backprop": guided_backprop,
    "occlusion": occlusion,
}

# captum's other attributions (deeplift, deepliftshap, gradientshap, deconvolution,
# feature-ablation, lime, kernelshap) build on this module and add their CAPTUM_METHODS to
# GRADIENT_METHODS at the end of theirs; imported last, whichever of the two is imported first.
import xaikit.explain.captum_methods  # noqa: E402, F401
