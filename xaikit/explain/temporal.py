"""Temporal heatmaps for recurrent classifiers: which time steps decided the output.

Sequences are batch first, ``(N, T, F)``. The raw methods share the signature of
:mod:`xaikit.explain.gradients`::

    fn(forward, sequences (N, T, F), targets (N, K), *, seed=None, **opts) -> (N, K, T)

and are those methods run on the sequence seen channels-first (features as channels, time as
the one spatial axis), so K targets, baselines and captum's implementations are shared:

============== ================================================ ===========================
method         what it measures                                 feature rule (default)
============== ================================================ ===========================
``inputxgrad`` ``x_tf * dS/dx_tf`` (Shrikumar et al., 2016)     ``sum`` over F: signed,
                                                                first-order contribution
``ig``         integrated gradients over time (Sundararajan     ``sum`` over F: the map
               et al., 2017) from a baseline sequence           sums to ``S(x) - S(x')``
``occlusion``  score drop when a window of ``window`` steps is  ``mean`` over F: each
               replaced by the baseline (Zeiler & Fergus, 2014) feature carries the drop
============== ================================================ ===========================

``feature_reduce=`` takes ``"sum"``, ``"mean"``, ``"max_abs"``, ``"sum_abs"`` or ``"none"``
(raw ``(N, K, T, F)``).

:func:`explain_sequence` is the model-level entry point: it borrows the model (eval mode,
frozen parameters; cuDNN off on CUDA, whose RNN kernels refuse backward in eval mode - the
model is never switched to train mode), resolves targets, honours padding via ``lengths`` and
normalizes each map to ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xaikit._names import METHOD_ALIASES
from xaikit.errors import XaikitConfigError
from xaikit.explain.gradients import (
    GradientMethod,
    input_x_gradient,
    integrated_gradients,
    occlusion,
)
from xaikit.explain.state import borrowed, model_device
from xaikit.zoo.heads import get_task

Forward = Callable[[Tensor], Tensor]
Target = str | int | Sequence[int] | Tensor

NORMALIZATIONS = ("abs", "positive", "minmax")
SCORES = ("logit", "prob")


def _check_sequences(sequences: Tensor) -> Tensor:
    if not isinstance(sequences, Tensor) or sequences.dim() != 3:
        shape = tuple(sequences.shape) if isinstance(sequences, Tensor) else type(sequences)
        raise XaikitConfigError(
            f"sequences must be a tensor shaped (N, T, F) (batch first), got {shape}"
        )
    if not sequences.is_floating_point():
        raise XaikitConfigError(f"sequences must be floating point, got {sequences.dtype}")
    if min(sequences.shape) < 1:
        raise XaikitConfigError(f"sequences must not be empty, got shape {tuple(sequences.shape)}")
    return sequences


def _over_time(
    method: GradientMethod,
    forward: Forward,
    sequences: Tensor,
    targets: Tensor,
    feature_reduce: str,
    opts: dict[str, Any],
) -> Tensor:
    """Run an input method on ``(N, F, T)`` and return ``(N, K, T)`` or ``(N, K, T, F)``."""
    sequences = _check_sequences(sequences)
    lend = borrowed(forward) if isinstance(forward, nn.Module) else contextlib.nullcontext()

    def channels_first(x: Tensor) -> Tensor:
        return forward(x.transpose(1, 2))

    with lend:
        attr = method(
            channels_first,
            sequences.transpose(1, 2).contiguous(),
            targets,
            channel_reduce=feature_reduce,
            **opts,
        )
    return attr.transpose(-1, -2) if feature_reduce == "none" else attr


def gradxinput_over_time(
    forward: Forward,
    sequences: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    feature_reduce: str = "sum",
    **opts: Any,
) -> Tensor:
    """Gradient x input per time step: ``(N, T, F) -> (N, K, T)``.

    ``A[n, k, t] = sum_f x[n, t, f] * dS_k / dx[n, t, f]`` (Shrikumar et al., 2016, "Not Just
    a Black Box"; captum's InputXGradient for one target per sequence).
    """
    return _over_time(input_x_gradient, forward, sequences, targets, feature_reduce, opts)


def ig_over_time(
    forward: Forward,
    sequences: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    steps: int = 32,
    baseline: str | float | Tensor = "zero",
    feature_reduce: str = "sum",
    **opts: Any,
) -> Tensor:
    """Integrated gradients per time step: ``(N, T, F) -> (N, K, T)``.

    Sundararajan et al., 2017, "Axiomatic Attribution for Deep Networks", from a baseline
    sequence: ``"zero"`` (zeros in raw feature space; pass ``normalization`` for normalized
    inputs), ``"mean"`` (each feature's mean over time), ``"blur"`` (smoothed over time), a
    number or a tensor ``(T, F)`` / ``(N, T, F)``. The map sums to ``S(x) - S(x')``.
    Other options (``internal_batch_size``, ``normalization``, ``quadrature``) are those of
    :func:`xaikit.explain.gradients.integrated_gradients`.
    """
    if isinstance(baseline, Tensor):
        baseline = baseline.transpose(-1, -2)
    opts = {"steps": steps, "baseline": baseline, **opts}
    return _over_time(integrated_gradients, forward, sequences, targets, feature_reduce, opts)


def occlusion_over_time(
    forward: Forward,
    sequences: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    baseline: str | float | Tensor = "zero",
    feature_reduce: str = "mean",
    **opts: Any,
) -> Tensor:
    """Occlusion by time window: ``(N, T, F) -> (N, K, T)``.

    Zeiler & Fergus, 2014: every step gets the mean score drop ``S(x) - S(x occluded)`` over
    the windows of ``window`` consecutive steps (all features; default ``max(1, T // 32)``)
    that cover it, windows ``stride`` steps apart (default half a window). Baselines as in
    :func:`ig_over_time`.
    """
    steps = _check_sequences(sequences).shape[1]
    window = max(1, steps // 32) if window is None else window
    if not isinstance(window, int) or not 1 <= window <= steps:
        raise XaikitConfigError(
            f"occlusion window must be an int between 1 and the sequence length {steps}, "
            f"got {window!r}"
        )
    if isinstance(baseline, Tensor):
        baseline = baseline.transpose(-1, -2)
    opts = {"window": window, "stride": stride, "baseline": baseline, **opts}
    return _over_time(occlusion, forward, sequences, targets, feature_reduce, opts)


class _MethodTable(dict[str, GradientMethod]):
    """A method table that also answers to the other name of a method.

    Input x gradient is ``inputxgrad`` for sequences as for images; its other name
    ``gradxinput`` (see :data:`xaikit._names.METHOD_ALIASES`) looks up the same function,
    while iteration lists each method once, under its one name.
    """

    def _key(self, name: object) -> object:
        if isinstance(name, str) and not dict.__contains__(self, name):
            for other, canonical in METHOD_ALIASES.items():
                if name == canonical and dict.__contains__(self, other):
                    return other
                if name == other and dict.__contains__(self, canonical):
                    return canonical
        return name

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, self._key(name))

    def __getitem__(self, name: str) -> GradientMethod:
        return dict.__getitem__(self, self._key(name))  # type: ignore[arg-type]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """``table[name]``, else ``default``."""
        return dict.get(self, self._key(name), default)  # type: ignore[arg-type]


TEMPORAL_METHODS: dict[str, GradientMethod] = _MethodTable(
    {
        "inputxgrad": gradxinput_over_time,
        "ig": ig_over_time,
        "occlusion": occlusion_over_time,
    }
)


# --------------------------------------------------------------------------- model level


def resolve_sequence_targets(
    model: nn.Module, target: Target, n: int, logits: Callable[[], Tensor]
) -> tuple[Tensor, bool]:
    """Turn a target spec into ``(N, K)`` long indices and whether K is a singleton.

    * ``"predicted"``: the model's prediction - the argmax class (multi-class), the single
      logit (binary), the most confident label (multi-label).
    * an int: that output for every sequence.
    * a list of ints: those K outputs for every sequence (``(N, K, T)`` maps).
    * a tensor ``(N,)`` (one per sequence) or ``(N, K)``.

    ``logits() -> (N, outputs)`` is called only for ``"predicted"``; indices beyond the
    model's outputs are reported by the attribution method, which sees the outputs anyway.
    """
    squeeze = True
    if isinstance(target, str):
        if target != "predicted":
            raise XaikitConfigError(
                f"unknown target {target!r}; use 'predicted', an int, a list of ints or a tensor"
            )
        out = logits()
        if get_task(model).name == "binary" or out.shape[1] == 1:
            return torch.zeros(n, 1, dtype=torch.long, device=out.device), True
        return out.argmax(dim=1, keepdim=True), True
    if isinstance(target, bool):
        raise XaikitConfigError("a target must be a class index, not a bool")
    if isinstance(target, int):
        targets = torch.full((n, 1), target, dtype=torch.long)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise XaikitConfigError(f"target tensors must hold class indices, got {target.dtype}")
        if target.dim() == 1 and target.shape[0] == n:
            targets = target.reshape(n, 1)
        elif target.dim() == 2 and target.shape[0] == n and target.shape[1] >= 1:
            targets, squeeze = target, False
        else:
            raise XaikitConfigError(
                f"a target tensor must be shaped ({n},) or ({n}, K) for {n} sequences, "
                f"got {tuple(target.shape)}"
            )
    elif (
        isinstance(target, Sequence)
        and len(target) > 0
        and all(isinstance(t, int) and not isinstance(t, bool) for t in target)
    ):
        targets, squeeze = torch.tensor(list(target)).expand(n, -1), False
    else:
        raise XaikitConfigError(
            f"target must be 'predicted', an int, a list of ints or a tensor, got {target!r}"
        )
    if bool((targets < 0).any()):
        raise XaikitConfigError(f"target indices must be >= 0, got {targets.min().item()}")
    return targets.long(), squeeze


def _check_lengths(lengths: Sequence[int] | Tensor, n: int, steps: int) -> Tensor:
    lengths = torch.as_tensor(lengths).reshape(-1).cpu()
    if lengths.is_floating_point() or lengths.shape[0] != n:
        raise XaikitConfigError(
            f"lengths must hold one integer length per sequence ({n}), got {lengths.tolist()}"
        )
    if bool(((lengths < 1) | (lengths > steps)).any()):
        raise XaikitConfigError(
            f"lengths must lie between 1 and the padded length {steps}, got {lengths.tolist()}"
        )
    return lengths.long()


def normalize_maps(maps: Tensor, mode: str, valid: Tensor | None = None) -> Tensor:
    """Scale each map to ``[0, 1]``: ``(N, K, T[, F]) -> same shape``.

    * ``"abs"``: ``|a| / max |a|`` - how much each step matters, either direction.
    * ``"positive"``: ``max(a, 0) / max a`` - evidence for the target only.
    * ``"minmax"``: ``(a - min) / (max - min)`` over the valid steps.

    ``valid`` (broadcastable bool) marks real steps; the rest are 0. A map without spread
    (all zero, constant) becomes all zeros instead of NaN.
    """
    if mode not in NORMALIZATIONS:
        raise XaikitConfigError(
            f"unknown normalize {mode!r}; choose one of {', '.join(NORMALIZATIONS)} or None"
        )
    dims = tuple(range(2, maps.dim()))
    valid = torch.ones_like(maps, dtype=torch.bool) if valid is None else valid.expand_as(maps)
    if mode == "abs":
        scaled = maps.abs()
    elif mode == "positive":
        scaled = maps.clamp(min=0)
    else:
        low = maps.masked_fill(~valid, float("inf")).amin(dim=dims, keepdim=True)
        scaled = maps - low
    scaled = scaled.masked_fill(~valid, 0.0)
    peak = scaled.amax(dim=dims, keepdim=True)
    tiny = torch.finfo(maps.dtype).tiny
    return torch.where(peak > tiny, scaled / peak.clamp(min=tiny), torch.zeros_like(scaled))


def _group_options(opts: dict[str, Any], index: Tensor, size: int) -> dict[str, Any]:
    """Options for the sequences ``index`` cut to ``size`` steps: a baseline tensor
    ``(T, F)`` or ``(N, T, F)`` is cut the same way."""
    baseline = opts.get("baseline")
    if not isinstance(baseline, Tensor) or baseline.dim() not in (2, 3):
        return opts
    if baseline.dim() == 3:
        baseline = baseline.to(index.device)[index]
    return {**opts, "baseline": baseline[..., :size, :]}


def explain_sequence(
    model: nn.Module,
    sequences: Tensor,
    method: str = "inputxgrad",
    target: Target = "predicted",
    *,
    lengths: Sequence[int] | Tensor | None = None,
    normalize: str | None = "abs",
    score: str = "logit",
    **opts: Any,
) -> Tensor:
    """Temporal heatmaps of a recurrent classifier: ``(N, T, F) -> (N, T)`` or ``(N, K, T)``.

    Args:
        model: a sequence classifier ``(N, T, F) -> (N, outputs)`` (e.g. a zoo
            :class:`~xaikit.zoo.RecurrentClassifier`); borrowed for the call.
        sequences: batch-first sequences, right-padded when ``lengths`` is given.
        method: ``"inputxgrad"`` (or its other name ``"gradxinput"``), ``"ig"`` or
            ``"occlusion"`` (see :data:`TEMPORAL_METHODS`).
        target: see :func:`resolve_sequence_targets`. ``"predicted"``, an int or an ``(N,)``
            tensor give ``(N, T)``; a list of ints or an ``(N, K)`` tensor give ``(N, K, T)``.
        lengths: ``(N,)`` true lengths. Each sequence is explained on its first
            ``lengths[n]`` steps only (sequences of equal length are batched together), so the
            model never sees the padding: the map of the real steps is identical to
            explaining the unpadded sequence, and padded steps are exactly 0.
        normalize: ``"abs"`` (default), ``"positive"``, ``"minmax"`` (see
            :func:`normalize_maps`; per sequence and target, into ``[0, 1]``) or ``None`` for
            the raw signed attributions.
        score: ``"logit"`` (default; no saturation) or ``"prob"`` (the task's probability:
            softmax or sigmoid).
        **opts: options of the method (``steps``, ``baseline``, ``window``, ``stride``,
            ``feature_reduce``, ``internal_batch_size``, ``normalization`` ...).

    Returns:
        maps on the model's device; with ``feature_reduce="none"`` one more trailing ``F``
        dimension.
    """
    try:
        fn = TEMPORAL_METHODS[method]
    except (KeyError, TypeError):
        raise XaikitConfigError(
            f"unknown temporal method {method!r}; choose one of {', '.join(TEMPORAL_METHODS)}"
        ) from None
    if score not in SCORES:
        raise XaikitConfigError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise XaikitConfigError(
            f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZATIONS)} or None"
        )
    sequences = _check_sequences(sequences).to(model_device(model))
    device = sequences.device
    n, steps, _ = sequences.shape
    valid = None
    if lengths is None:
        groups = [(torch.arange(n, device=device), steps)]
    else:
        lengths = _check_lengths(lengths, n, steps).to(device)
        groups = [
            (torch.nonzero(lengths == size).reshape(-1), int(size))
            for size in lengths.unique().tolist()
        ]
        valid = torch.arange(steps, device=device).reshape(1, 1, -1) < lengths.reshape(-1, 1, 1)
    if isinstance(target, Tensor):
        if target.dim() not in (1, 2) or target.shape[0] != n:
            raise XaikitConfigError(
                f"a target tensor must be shaped ({n},) or ({n}, K) for {n} sequences, "
                f"got {tuple(target.shape)}"
            )
        target = target.to(device)
    task = get_task(model)

    def forward(x: Tensor) -> Tensor:
        logits = model(x)
        return task.probabilities(logits) if score == "prob" else logits

    maps: Tensor | None = None
    squeeze = True
    with borrowed(model):
        for index, size in groups:
            part = sequences[index, :size]

            def logits(part: Tensor = part) -> Tensor:
                with torch.no_grad():
                    return model(part)

            part_target = target[index] if isinstance(target, Tensor) else target
            targets, squeeze = resolve_sequence_targets(model, part_target, len(index), logits)
            raw = fn(forward, part, targets.to(device), **_group_options(opts, index, size))
            if maps is None:
                maps = raw.new_zeros((n, raw.shape[1], steps, *raw.shape[3:]))
            maps[index, :, :size] = raw
    assert maps is not None
    if valid is not None and maps.dim() == 4:
        valid = valid.unsqueeze(-1)
    if normalize is not None:
        maps = normalize_maps(maps, normalize, valid)
    return maps[:, 0] if squeeze else maps
