"""Score-CAM (Wang et al., 2020) and a fast variant that evaluates only the top-k channels.

Score-CAM, Algorithm 1 of Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
Convolutional Neural Networks", CVPR Workshops 2020:

1. every channel ``A_c`` of the target layer is upsampled to the input size and min-max
   normalized to ``[0, 1]`` (a constant channel becomes an all-zero mask, never NaN);
2. the input is multiplied by each mask, and the masked inputs are run forward in batches of
   ``batch_size`` (all inputs and channels together, no per-image loop);
3. ``S_c`` = the explained score of the masked input (the target's logit by default, its
   probability with ``score="prob"``); the channel weights are ``softmax_c(S_c)`` over the
   channels. The paper subtracts the baseline score ``f(X_b)`` first, a constant over
   channels that a softmax over channels cancels, so it is not computed;
4. the raw map is ``sum_c softmax(S)_c * A_c`` (ReLU and normalization come after, as for
   every CAM method).

Fast Score-CAM runs the masked forward passes for only the ``top_k`` channels of each input
with the largest mean activation (the channels whose masks carry the most of the map; by
default ``C // 8``), the rest are not evaluated. Their weights are not dropped to zero:
each unevaluated channel gets the mean of the evaluated scores ``mean(S)`` in the softmax, so
the map keeps their (smaller) contribution at an average weight instead of losing it. This
is the "fill" rule; ``fill="drop"`` keeps only the evaluated channels.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from xaikit.errors import XaikitConfigError
from xaikit.explain.postprocess import upsample

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FILL_RULES = ("mean", "drop")
DEFAULT_BATCH_SIZE = 64


def channel_masks(activations: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Score-CAM masks: ``(B, *s)`` activation maps -> ``(B, 1, *size)`` in ``[0, 1]``.

    Each map is upsampled and min-max normalized; a constant map gives an all-zero mask.
    """
    up = upsample(activations.unsqueeze(1), size)
    flat = up.flatten(start_dim=1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)  # faster than torch.aminmax on the CPU
    span = hi - lo
    inv = torch.where(span > 0, 1.0 / span.clamp_min(torch.finfo(span.dtype).tiny), 0.0)
    view = (-1,) + (1,) * (up.dim() - 1)
    return (up - lo.reshape(view)) * inv.reshape(view)


def masked_scores(
    forward: Forward,
    x: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    channels: torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    quiet: bool | None = None,
) -> torch.Tensor:
    """The explained scores of every masked input, in batched forward passes.

    Args:
        forward: ``(x (B, C_in, *S), rows (B,) long) -> (B, num_outputs)`` scores, where
            ``rows`` says which input each masked image came from.
        x: ``(N, C_in, *S)`` inputs.
        activations: ``(N, C, *s)`` target-layer activations.
        targets: ``(N, K)`` class indices to read (``>= 0``).
        channels: ``(N, M)`` channel indices to evaluate per input.
        batch_size: masked inputs per forward pass.
        quiet: hide the progress bar (default: the ``XAIKIT_QUIET`` environment variable).
            The bar ticks once per masked batch: its total is ``ceil(N * M / batch_size)``.

    Returns:
        ``(N, M, K)`` scores.
    """
    if batch_size < 1:
        raise XaikitConfigError(f"batch_size must be a positive integer, got {batch_size}")
    n, m = channels.shape
    size = tuple(x.shape[2:])
    rows_all = torch.arange(n, device=x.device).repeat_interleave(m)
    channels_all = channels.reshape(-1)
    total = rows_all.shape[0]
    out = torch.empty(total, targets.shape[1], device=x.device, dtype=torch.float32)
    if quiet is None:
        quiet = os.environ.get("XAIKIT_QUIET", "") not in ("", "0")
    with (
        torch.no_grad(),
        tqdm(
            total=-(-total // batch_size),  # one tick per masked batch (a forward pass)
            desc=f"score-cam ({total} masks)",
            unit="batch",
            disable=True if quiet else None,
            leave=False,
        ) as bar,
    ):
        for start in range(0, total, batch_size):
            rows = rows_all[start : start + batch_size]
            chans = channels_all[start : start + batch_size]
            masks = channel_masks(activations[rows, chans], size)
            scores = forward(x.index_select(0, rows) * masks.to(x.dtype), rows)
            out[start : start + batch_size] = scores.gather(1, targets.index_select(0, rows))
            bar.update(1)
    return out.reshape(n, m, -1)


def top_channels(activations: torch.Tensor, top_k: int) -> torch.Tensor:
    """``(N, C, *s) -> (N, top_k)``: the channels with the largest mean activation."""
    mean = activations.flatten(start_dim=2).mean(dim=2)
    return mean.topk(min(top_k, mean.shape[1]), dim=1).indices


def score_cam_weights(
    forward: Forward,
    x: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int | None = None,
    fill: str = "mean",
    quiet: bool | None = None,
) -> torch.Tensor:
    """Score-CAM channel weights ``softmax_c(S)``, ``(N, K, C)`` (see :func:`score_cam`)."""
    n, c, *_spatial = activations.shape
    if fill not in FILL_RULES:
        raise XaikitConfigError(f"fill must be one of {', '.join(FILL_RULES)}; got {fill!r}")
    if top_k is None or top_k >= c:
        channels = torch.arange(c, device=x.device).expand(n, c)
    else:
        if top_k < 1:
            raise XaikitConfigError(f"top_k must be a positive integer, got {top_k}")
        channels = top_channels(activations, top_k)
    scores = masked_scores(
        forward, x, activations, targets, channels, batch_size=batch_size, quiet=quiet
    )  # (N, M, K)
    k = targets.shape[1]
    if channels.shape[1] == c:
        full = torch.empty(n, c, k, device=x.device, dtype=scores.dtype)
        full.scatter_(1, channels.unsqueeze(2).expand(n, c, k), scores)
        weights = full.softmax(dim=1)
    elif fill == "drop":
        weights = torch.zeros(n, c, k, device=x.device, dtype=scores.dtype)
        weights.scatter_(1, channels.unsqueeze(2).expand(-1, -1, k), scores.softmax(dim=1))
    else:
        full = scores.mean(dim=1, keepdim=True).expand(n, c, k).clone()
        full.scatter_(1, channels.unsqueeze(2).expand(-1, -1, k), scores)
        weights = full.softmax(dim=1)
    return weights.transpose(1, 2)


def score_cam(
    forward: Forward,
    x: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int | None = None,
    fill: str = "mean",
    quiet: bool | None = None,
) -> torch.Tensor:
    """Score-CAM raw maps (Wang et al., 2020), exact or fast.

    Args:
        forward: see :func:`masked_scores`.
        x: ``(N, C_in, *S)`` inputs.
        activations: ``(N, C, *s)`` target-layer activations.
        targets: ``(N, K)`` class indices (``>= 0``).
        batch_size: masked inputs per forward pass.
        top_k: evaluate only this many channels per input (fast Score-CAM); ``None`` = all.
        fill: for fast Score-CAM, ``"mean"`` gives unevaluated channels the mean evaluated
            score, ``"drop"`` leaves them out.

    Returns:
        ``(N, K, *s)`` raw maps ``sum_c softmax_c(S)[c] * A_c``.
    """
    n, _c, *spatial = activations.shape
    weights = score_cam_weights(
        forward,
        x,
        activations,
        targets,
        batch_size=batch_size,
        top_k=top_k,
        fill=fill,
        quiet=quiet,
    )
    flat = activations.flatten(start_dim=2).float()  # (N, C, P)
    maps = torch.bmm(weights, flat)  # (N, K, P)
    return maps.reshape(n, targets.shape[1], *spatial).to(activations.dtype)


# ------------------------------------------------------------------ SS-CAM and IS-CAM

#: Defaults of torchcam's ``SSCAM`` and ``ISCAM``.
SSCAM_SAMPLES, SSCAM_STD = 35, 2.0
ISCAM_SAMPLES = 10
#: torchcam's ``_normalize`` epsilon (added to the channel's range).
NORMALIZE_EPS = 1e-8


def normalized_channels(activations: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """torchcam's Score-CAM masks: each channel min-max normalized at the layer's resolution
    (``(a - min) / (max - min + 1e-8)``), then upsampled: ``(N, C, *s)`` -> ``(N, C, *size)``."""
    flat = activations.flatten(start_dim=2).float()
    lo = flat.amin(dim=2, keepdim=True)
    shifted = flat - lo
    normed = shifted / (shifted.amax(dim=2, keepdim=True) + NORMALIZE_EPS)
    return upsample(normed.reshape(activations.shape), size)


def noise_generator(seed: int, index: int) -> torch.Generator:
    """The private CPU generator of input ``index``'s noise under the call's ``seed`` (the
    rule of SmoothGrad, :func:`xaikit.explain.gradients.noise_seed`)."""
    from xaikit.explain.gradients import noise_seed

    return torch.Generator().manual_seed(noise_seed(seed, index))


def fresh_seed(seed: int | None) -> int:
    """``seed``, or a fresh one from the OS when ``None``."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    return seed


def smoothed_score_cam_weights(
    forward: Forward,
    x: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    *,
    variant: str,
    num_samples: int,
    std: float = SSCAM_STD,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int | None = None,
    first_index: int = 0,
    quiet: bool | None = None,
) -> torch.Tensor:
    """SS-CAM or IS-CAM channel weights ``(N, K, C)``, as torchcam's ``SSCAM`` / ``ISCAM``.

    The masks are the channels normalized then upsampled (:func:`normalized_channels`).

    * SS-CAM (Wang et al., 2020, "SS-CAM: Smoothed Score-CAM"): ``num_samples`` times,
      Gaussian noise ``N(0, std^2)`` is added to every mask at the input resolution (one
      value per channel and pixel, shared by the input's colour channels), the input is
      multiplied by the noisy mask, and the scores are averaged over the samples.
    * IS-CAM (Naidu et al., 2020, "IS-CAM: Integrated Score-CAM"): the input is multiplied
      by the mask scaled by ``c_i = sum_{j <= i} j / num_samples``, ``i = 1..num_samples``
      (torchcam's integration rule), and the scores are averaged.

    The weights are ``softmax_c`` of the averaged scores (the baseline score of the paper, a
    constant over channels, cancels in the softmax). The noise of input ``i`` comes from a
    private generator seeded by ``(seed, first_index + i)``, drawn sample after sample as
    ``(C, *S)`` blocks: with one input and the global generator seeded alike, the draws are
    torchcam's. The masked inputs of every input, sample and channel are run in batches of
    ``batch_size``.
    """
    if variant not in ("sscam", "iscam"):
        raise XaikitConfigError(f"variant must be 'sscam' or 'iscam', got {variant!r}")
    if batch_size < 1:
        raise XaikitConfigError(f"batch_size must be a positive integer, got {batch_size}")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise XaikitConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
    n, c, *_s = activations.shape
    k = targets.shape[1]
    size = tuple(x.shape[2:])
    masks = normalized_channels(activations, size)  # (N, C, *S)
    seed = fresh_seed(seed) if variant == "sscam" else 0
    totals = torch.zeros(n, c, k, device=x.device, dtype=torch.float32)
    total_rows = n * num_samples * c
    if quiet is None:
        quiet = os.environ.get("XAIKIT_QUIET", "") not in ("", "0")
    pending: list[tuple[torch.Tensor, int, int, int]] = []  # (masked, row, c0, c1)
    filled = 0

    def flush() -> None:
        nonlocal filled
        if not pending:
            return
        batch = torch.cat([piece for piece, *_ in pending], dim=0)
        rows = torch.cat(
            [torch.full((c1 - c0,), row, dtype=torch.long) for _p, row, c0, c1 in pending]
        ).to(x.device)
        scores = forward(batch, rows).gather(1, targets.index_select(0, rows)).float()
        start = 0
        for _piece, row, c0, c1 in pending:
            totals[row, c0:c1] += scores[start : start + c1 - c0]
            start += c1 - c0
        pending.clear()
        filled = 0
        bar.update(1)

    with (
        torch.no_grad(),
        tqdm(
            total=-(-total_rows // batch_size),
            desc=f"{variant} ({total_rows} masks)",
            unit="batch",
            disable=True if quiet else None,
            leave=False,
        ) as bar,
    ):
        coeff = 0.0
        for i in range(n):
            generator = noise_generator(seed, first_index + i) if variant == "sscam" else None
            coeff = 0.0
            for sample in range(num_samples):
                if variant == "sscam":
                    noise = torch.randn(masks.shape[1:], generator=generator) * std
                    mask = masks[i] + noise.to(device=masks.device, dtype=masks.dtype)
                else:
                    coeff += (sample + 1) / num_samples
                    mask = masks[i] * coeff
                c0 = 0
                while c0 < c:
                    c1 = min(c, c0 + batch_size - filled)
                    piece = x[i].unsqueeze(0) * mask[c0:c1].unsqueeze(1).to(x.dtype)
                    pending.append((piece, i, c0, c1))
                    filled += c1 - c0
                    c0 = c1
                    if filled >= batch_size:
                        flush()
        flush()
    return (totals / num_samples).softmax(dim=1).transpose(1, 2)
