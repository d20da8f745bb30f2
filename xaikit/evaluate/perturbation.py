"""Deletion and insertion curves and their AUC (Petsiuk, Das & Saenko, 2018, "RISE").

Pixels are ranked by the heatmap, highest first. **Deletion** replaces the top-ranked pixels
of the image with a baseline (default: zeros, as in RISE) in ``steps`` equal increments;
**insertion** starts from a blurred copy of the image and puts the original pixels back in
the same order. After each step the model's probability for the explained class is recorded
(the head's probability function: softmax for multi-class, the label's sigmoid for
multi-label). A faithful map makes the deletion curve fall fast (low AUC, lower is better) and
the insertion curve rise fast (high AUC, higher is better).

Definitions pinned down here:

* ``P`` pixels (``H * W``); step ``k = 0 .. steps`` perturbs the ``floor(k * P / steps)``
  top-ranked pixels (all channels of a pixel together), so the curve has ``steps + 1`` points
  at the fractions of pixels actually perturbed (``k / steps`` when ``steps`` divides ``P``)
  and ends with the image fully removed / fully inserted.
* Ranking is deterministic: a stable sort by decreasing value, so equal values are taken in
  pixel-index order (row-major: left to right, then top to bottom). A constant map therefore
  removes pixels row by row from the top-left corner.
* AUC is the trapezoid rule over the fractions ``[0, 1]``.
* Heatmaps smaller than the input are upsampled bilinearly first.

Every (image, step) pair is one row of a batched forward pass (``batch_size`` rows per pass);
no Python loop runs over images or steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from xaikit._names import DEFAULT_STEPS
from xaikit._names import DELETION_BASELINES as BASELINES
from xaikit.errors import XaikitConfigError
from xaikit.evaluate._common import (
    Normalization,
    TargetSpec,
    check_inputs,
    check_maps,
    class_probability,
    fit_maps,
    is_quiet,
    iter_batches,
    model_inputs,
    resolve_targets,
)
from xaikit.evaluate.blur import gaussian_blur
from xaikit.evaluate.metadata import MetricInfo, metric_info
from xaikit.explain.state import borrowed, model_device
from xaikit.zoo.heads import get_task


@dataclass(frozen=True)
class CurveResult:
    """A deletion or insertion curve per explained map.

    Attributes:
        fractions: ``(steps + 1,)`` fraction of pixels perturbed at each step, 0 to 1.
        curve: ``(N, steps + 1)`` (or ``(N, K, steps + 1)`` for K maps per input) the
            probability of the explained class after each step.
        auc: ``(N,)`` (or ``(N, K)``) trapezoid area under each curve over ``[0, 1]``.
        info: the metric's metadata (direction, baseline, paper).
        settings: the options used (steps, baseline, ...), for reports.
    """

    fractions: torch.Tensor
    curve: torch.Tensor
    auc: torch.Tensor
    info: MetricInfo
    settings: dict[str, object]

    def mean(self) -> float:
        """The mean AUC over all maps."""
        return float(self.auc.mean())


def auc(curve: torch.Tensor, fractions: torch.Tensor | None = None) -> torch.Tensor:
    """Trapezoid area under curves: ``(..., S) -> (...)``.

    ``fractions`` ``(S,)`` are the x positions; by default ``S`` equally spaced points on
    ``[0, 1]``.
    """
    if curve.shape[-1] < 2:
        raise XaikitConfigError("a curve needs at least 2 points to have an area")
    if fractions is None:
        fractions = torch.linspace(0.0, 1.0, curve.shape[-1], device=curve.device)
    return torch.trapezoid(curve, fractions.to(device=curve.device, dtype=curve.dtype), dim=-1)


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel, 0 for the most salient: ``(M, *S) -> (M, P)`` int64 (``P`` pixels).

    Stable: equal values are ranked by pixel index (row-major), so results are deterministic.
    """
    flat = maps.reshape(maps.shape[0], -1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def step_counts(pixels: int, steps: int, device=None) -> torch.Tensor:
    """``(steps + 1,)`` number of pixels perturbed after each step: ``floor(k * P / steps)``."""
    if steps < 1:
        raise XaikitConfigError(f"steps must be at least 1, got {steps}")
    return torch.arange(steps + 1, device=device) * pixels // steps


def _baseline_images(inputs: torch.Tensor, baseline: str | float | torch.Tensor) -> torch.Tensor:
    """The image perturbed pixels take their values from: ``(N, C, *S)``."""
    if isinstance(baseline, torch.Tensor):
        value = baseline.to(device=inputs.device, dtype=inputs.dtype)
        try:
            return value.expand_as(inputs)
        except RuntimeError:
            raise XaikitConfigError(
                f"a baseline tensor must broadcast to the inputs {tuple(inputs.shape)}; got "
                f"{tuple(value.shape)}"
            ) from None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if baseline == "zeros":
        return torch.zeros_like(inputs)
    if baseline == "blur":
        return gaussian_blur(inputs)
    if baseline == "mean":
        dims = tuple(range(2, inputs.dim()))
        return inputs.mean(dim=dims, keepdim=True).expand_as(inputs)
    raise XaikitConfigError(
        f"baseline must be one of {', '.join(BASELINES)}, a number or a tensor; got {baseline!r}"
    )


def _curves(
    model: nn.Module,
    inputs: torch.Tensor,
    heatmaps: torch.Tensor,
    target: TargetSpec,
    *,
    steps: int,
    fill: str | float | torch.Tensor,
    insertion: bool,
    batch_size: int,
    normalization: Normalization | None,
    quiet: bool | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fractions (S+1,), curves (*lead, S+1))`` for deletion or insertion."""
    check_inputs(inputs)
    n = inputs.shape[0]
    check_maps(heatmaps, n)
    device = model_device(model)
    inputs = inputs.to(device)
    spatial = tuple(inputs.shape[2:])
    lead = tuple(heatmaps.shape[: heatmaps.dim() - len(spatial)])
    if len(lead) not in (1, 2):
        raise XaikitConfigError(
            f"heatmaps must be (N, *S) or (N, K, *S) for inputs with spatial shape {spatial}; "
            f"got {tuple(heatmaps.shape)}"
        )
    targets = resolve_targets(
        model, inputs, target, batch_size=batch_size, normalization=normalization
    )
    if len(lead) == 2 and targets.dim() == 1:
        raise XaikitConfigError(
            f"heatmaps hold {lead[1]} maps per input; pass one target per map, shaped (N, K)"
        )
    if tuple(targets.shape) != lead:
        raise XaikitConfigError(
            f"target shape {tuple(targets.shape)} does not match the heatmaps' leading shape {lead}"
        )
    maps = fit_maps(heatmaps.to(device).reshape(-1, *heatmaps.shape[len(lead) :]), spatial)
    targets = targets.reshape(-1)
    per_input = lead[1] if len(lead) == 2 else 1
    image_of = torch.arange(n, device=device).repeat_interleave(per_input)  # (M,)

    ranks = pixel_ranks(maps)  # (M, P)
    pixels = ranks.shape[1]
    counts = step_counts(pixels, steps, device=device)  # (S + 1,)
    other = _baseline_images(inputs, fill)
    # Deletion: top-ranked pixels come from the baseline, the rest from the image.
    # Insertion: top-ranked pixels come from the image, the rest from the blurred start.
    chosen, rest = (inputs, other) if insertion else (other, inputs)

    task = get_task(model)
    points = steps + 1
    total = maps.shape[0] * points
    scores = torch.empty(total, device=device)
    kind = "insertion" if insertion else "deletion"
    with borrowed(model), torch.no_grad():
        for rows in tqdm(
            list(iter_batches(total, batch_size)), desc=kind, disable=is_quiet(quiet), leave=False
        ):
            row = torch.arange(rows.start, rows.stop, device=device)
            item, step = row // points, row % points
            image = image_of[item]
            take = ranks[item] < counts[step][:, None]  # (B, P)
            take = take.view(-1, 1, *spatial)
            batch = torch.where(take, chosen[image], rest[image])
            logits = model(model_inputs(batch, normalization))
            scores[rows] = class_probability(task, logits, targets[item]).float()
    fractions = (counts.double() / pixels).float()
    return fractions, scores.view(*lead, points)


def deletion_curve(
    model: nn.Module,
    inputs: torch.Tensor,
    heatmaps: torch.Tensor,
    target: TargetSpec = "predicted",
    *,
    steps: int = DEFAULT_STEPS,
    baseline: str | float | torch.Tensor = "zeros",
    batch_size: int = 64,
    normalization: Normalization | None = None,
    quiet: bool | None = None,
) -> CurveResult:
    """Deletion curve and AUC (RISE, Petsiuk et al. 2018): remove the most salient pixels
    first; a faithful map makes the class probability fall fast (lower AUC is better).

    Args:
        model: the classifier; borrowed in eval mode, never modified.
        inputs: ``(N, C, H, W)`` (or ``(N, C, L)``) images, before ``normalization``.
        heatmaps: ``(N, H, W)`` one map per input, or ``(N, K, H, W)`` K maps per input
            (smaller maps are upsampled bilinearly). Only the ranking matters.
        target: the class each map explains: ``"predicted"`` (default), an int, ``(N,)``
            indices, or ``(N, K)`` indices for ``(N, K, H, W)`` maps.
        steps: number of equal increments; the curve has ``steps + 1`` points.
        baseline: what removed pixels become: ``"zeros"`` (default, RISE), ``"blur"`` (the
            image blurred like the insertion start), ``"mean"`` (each image's per-channel
            mean), a number, or a tensor broadcastable to ``inputs``.
        batch_size: rows (one image at one step each) per forward pass.
        normalization: ``{"mean": [...], "std": [...]}`` applied after perturbing, before
            the model (so ``"zeros"`` means black pixels); ``None`` feeds inputs as they are.
        quiet: hide the progress bar (default: ``$XAIKIT_QUIET``).

    Returns:
        :class:`CurveResult` with ``curve`` ``(N, steps + 1)`` and ``auc`` ``(N,)``
        (``(N, K, ...)`` for K maps per input).
    """
    fractions, curve = _curves(
        model, inputs, heatmaps, target, steps=steps, fill=baseline, insertion=False,
        batch_size=batch_size, normalization=normalization, quiet=quiet,
    )  # fmt: skip
    settings = {"steps": steps, "baseline": _describe(baseline)}
    return CurveResult(
        fractions, curve, auc(curve, fractions), metric_info("deletion_auc"), settings
    )


def insertion_curve(
    model: nn.Module,
    inputs: torch.Tensor,
    heatmaps: torch.Tensor,
    target: TargetSpec = "predicted",
    *,
    steps: int = DEFAULT_STEPS,
    start: str | float | torch.Tensor = "blur",
    batch_size: int = 64,
    normalization: Normalization | None = None,
    quiet: bool | None = None,
) -> CurveResult:
    """Insertion curve and AUC (RISE, Petsiuk et al. 2018): insert the most salient pixels
    first into a blurred image; a faithful map makes the class probability rise fast (higher
    AUC is better).

    Args:
        start: the image pixels are inserted into: ``"blur"`` (default, RISE: Gaussian blur,
            sigma 5 px, 11x11 kernel), ``"zeros"``, ``"mean"``, a number or a tensor.
        model, inputs, heatmaps, target, steps, batch_size, normalization, quiet: as for
            :func:`deletion_curve`.

    Returns:
        :class:`CurveResult` with ``curve`` ``(N, steps + 1)`` and ``auc`` ``(N,)``.
    """
    fractions, curve = _curves(
        model, inputs, heatmaps, target, steps=steps, fill=start, insertion=True,
        batch_size=batch_size, normalization=normalization, quiet=quiet,
    )  # fmt: skip
    settings = {"steps": steps, "start": _describe(start)}
    return CurveResult(
        fractions, curve, auc(curve, fractions), metric_info("insertion_auc"), settings
    )


def _describe(value: str | float | torch.Tensor) -> str | float:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)}"
    return value
