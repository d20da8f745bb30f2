"""Faithfulness metrics, batched: does the model's output change the way the attributions say?

Each function takes ``(model, x (N, C, H, W), attributions, targets (N,))`` - ``x`` as the model
takes it - and returns per-sample values ``(N,)`` on the model's device (sensitivity-n returns one
value per subset size ``n``: it correlates across samples). Definitions, defaults and quirks follow
Quantus 0.6 (see :mod:`xaikit.evaluate._batched` for the shared conventions); each docstring
names the paper. Every (sample, perturbation) pair is one row of a chunked forward pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from xaikit.errors import XaikitConfigError
from xaikit.evaluate._batched import (
    as_features,
    baseline_values,
    generator_for,
    on_device,
    patch_ids,
    pearson,
    predict,
    preprocess,
    ranks_of,
    scores_of_rows,
    spearman_rows,
    target_outputs,
)
from xaikit.evaluate._common import is_quiet


def _curve(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    groups: torch.Tensor,
    steps: int,
    *,
    fill: torch.Tensor,
    keep: torch.Tensor | None = None,
    cumulative: bool,
    softmax: bool,
    batch_size: int | None,
    quiet: bool | None,
    desc: str,
) -> torch.Tensor:
    """``(N, steps)`` target outputs: at step ``k`` the features whose group is ``<= k``
    (cumulative) or ``== k`` take ``fill`` (``(N, F)`` or ``(N, 1)``); the others keep ``keep``
    (default ``x``)."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    keep = flat if keep is None else keep

    def make(index: torch.Tensor):
        item, step = index // steps, index % steps
        g = groups[item]
        mask = g <= step[:, None] if cumulative else g == step[:, None]
        batch = torch.where(mask, fill[item].expand_as(g), keep[item].expand_as(g))
        return batch.view(-1, *x.shape[1:]), targets[item]

    out = scores_of_rows(
        model, n * steps, make, softmax=softmax, batch_size=batch_size, desc=desc, quiet=quiet
    )
    return out.view(n, steps)


def _prepare(model, x, attributions, targets, normalise, absolute):
    x, targets = on_device(model, x, targets)
    a = preprocess(as_features(x, attributions), normalise=normalise, absolute=absolute)
    return x, a.reshape(x.shape[0], -1), targets


def _check_step(features_in_step: int, x: torch.Tensor) -> None:
    """``features_in_step`` must be positive; the last group may be smaller (Quantus also
    asserts that it divides ``H * W``)."""
    if int(features_in_step) < 1:
        raise XaikitConfigError(f"features_in_step must be at least 1, got {features_in_step}")


def faithfulness_correlation(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    nr_runs: int = 100,
    subset_size: int = 224,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Faithfulness correlation (Bhatt, Weller & Moura, 2020, IJCAI): Pearson correlation, over
    ``nr_runs`` random feature subsets of ``subset_size``, between the attribution sum of the
    subset and the output drop when the subset is set to the baseline. Higher is better, in
    [-1, 1]. Stochastic (``seed``)."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    n, f = a.shape
    if not 0 < subset_size <= f:
        raise XaikitConfigError(f"subset_size must lie in [1, {f}], got {subset_size}")
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    subsets = torch.stack(
        [
            torch.rand(n, f, generator=gen, device=x.device).topk(subset_size, dim=1).indices
            for _ in range(nr_runs)
        ],
        dim=1,
    )  # (N, runs, s), drawn on the model's device
    y = target_outputs(model, x, targets, softmax=softmax)
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    flat = x.reshape(n, -1)

    def make(index: torch.Tensor):
        item, run = index // nr_runs, index % nr_runs
        batch = flat[item].clone()
        batch.scatter_(1, subsets[item, run], fill[item].expand(-1, subset_size).to(batch))
        return batch.view(-1, *x.shape[1:]), targets[item]

    perturbed = scores_of_rows(
        model, n * nr_runs, make, softmax=softmax, batch_size=batch_size,
        desc="faithfulness correlation", quiet=quiet,
    ).view(n, nr_runs)  # fmt: skip
    att_sums = torch.gather(a[:, None].expand(-1, nr_runs, -1), 2, subsets).sum(-1)
    return pearson(att_sums, y[:, None] - perturbed).to(x.dtype)


def faithfulness_estimate(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = False,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Faithfulness estimate (Alvarez-Melis & Jaakkola, 2018, NeurIPS): Pearson correlation
    between the attribution of each group of ``features_in_step`` features (most relevant
    first) and the output drop when that group alone is set to the baseline. Higher is better,
    in [-1, 1]. Deterministic."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    _check_step(features_in_step, x)
    n, f = a.shape
    steps = math.ceil(f / features_in_step)
    groups = ranks_of(a, descending=True) // features_in_step
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    y = target_outputs(model, x, targets, softmax=softmax)
    perturbed = _curve(
        model, x, targets, groups, steps, fill=fill, cumulative=False, softmax=softmax,
        batch_size=batch_size, quiet=quiet, desc="faithfulness estimate",
    )  # fmt: skip
    att_sums = torch.zeros(n, steps, device=a.device, dtype=torch.float64)
    att_sums.scatter_add_(1, groups, a.double())
    return pearson(att_sums, y[:, None] - perturbed).to(x.dtype)


def monotonicity(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = True,
    softmax: bool = True,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Monotonicity (Arya et al., 2019, "One Explanation Does Not Fit All"): starting from the
    baseline image, the original features are inserted ``features_in_step`` at a time, least
    relevant first; 1 when the target output never decreases, else 0. Higher is better.
    Deterministic.

    Quantus 0.6 writes the *baseline* value into the baseline image at each step (so its image
    never changes and every sample scores 1); this is the paper's insertion of the original
    features, which Quantus computes when given a perturbation function that copies ``x``.
    """
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    _check_step(features_in_step, x)
    n, f = a.shape
    steps = math.ceil(f / features_in_step)
    groups = ranks_of(a, descending=False) // features_in_step
    base = baseline_values(x, perturb_baseline).view(n, 1)
    preds = _curve(
        model, x, targets, groups, steps, fill=x.reshape(n, -1), keep=base, cumulative=True,
        softmax=softmax, batch_size=batch_size, quiet=quiet, desc="monotonicity",
    )  # fmt: skip
    return (preds.diff(dim=1) >= 0).all(dim=1).to(x.dtype)


def monotonicity_correlation(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    nr_samples: int = 100,
    features_in_step: int = 1,
    eps: float = 1e-5,
    perturb_baseline: str | float = "uniform",
    normalise: bool = True,
    abs: bool = True,
    softmax: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Monotonicity correlation (Nguyen & Martínez, 2020): Spearman correlation between the
    attribution of each group of features (least relevant first) and the variance of the output
    when that group is replaced ``nr_samples`` times by a random value (``"uniform"``: one
    U(0, 1) value per sample and draw), scaled by ``1 / y^2``. Higher is better, in [-1, 1].
    Stochastic (``seed``)."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    _check_step(features_in_step, x)
    n, f = a.shape
    steps = math.ceil(f / features_in_step)
    groups = ranks_of(a, descending=False) // features_in_step
    gen = generator_for(seed)
    if perturb_baseline == "uniform":
        fills = torch.rand(n, steps, nr_samples, generator=gen).to(x)
    else:
        fills = baseline_values(x, perturb_baseline).view(n, 1, 1).expand(n, steps, nr_samples)
    y = target_outputs(model, x, targets, softmax=softmax)
    inv = torch.where(y.abs() >= eps, 1.0 / y.abs(), torch.ones_like(y)).double() ** 2
    flat = x.reshape(n, -1)
    per = steps * nr_samples

    def make(index: torch.Tensor):
        item, rest = index // per, index % per
        step, draw = rest // nr_samples, rest % nr_samples
        mask = groups[item] == step[:, None]
        value = fills[item, step, draw][:, None]
        batch = torch.where(mask, value.expand_as(mask).to(flat), flat[item])
        return batch.view(-1, *x.shape[1:]), targets[item]

    perturbed = scores_of_rows(
        model, n * per, make, softmax=softmax, batch_size=batch_size,
        desc="monotonicity correlation", quiet=quiet,
    ).view(n, steps, nr_samples)  # fmt: skip
    variances = (perturbed.double() - y.double()[:, None, None]).square().mean(-1) * inv[:, None]
    att_sums = torch.zeros(n, steps, device=a.device, dtype=torch.float64)
    att_sums.scatter_add_(1, groups, a.double())
    return spearman_rows(att_sums, variances).to(x.dtype)


def pixel_flipping(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = True,
    return_curve: bool = False,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Pixel flipping (Bach et al., 2015, PLoS ONE): features are set to the baseline
    ``features_in_step`` at a time, most relevant first, cumulatively; the value is the area
    under the target-output curve (trapezoid rule, unit spacing, as Quantus's
    ``return_auc_per_sample``). Lower is better. Deterministic. ``return_curve`` gives the
    ``(N, steps)`` curve instead."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    _check_step(features_in_step, x)
    n, f = a.shape
    steps = math.ceil(f / features_in_step)
    groups = ranks_of(a, descending=True) // features_in_step
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    curve = _curve(
        model, x, targets, groups, steps, fill=fill, cumulative=True, softmax=softmax,
        batch_size=batch_size, quiet=quiet, desc="pixel flipping",
    )  # fmt: skip
    return curve if return_curve else torch.trapezoid(curve.double(), dx=1.0, dim=1).to(x.dtype)


def _patch_groups(a: torch.Tensor, x: torch.Tensor, patch_size: int, order: str, seed: int):
    """``(feature groups (N, F), patches)``: each feature's patch rank (most relevant first)."""
    n, c = x.shape[:2]
    ids, patches = patch_ids(tuple(x.shape[2:]), patch_size, x.device)
    pixel_sum = a.view(n, c, -1).sum(1)  # (N, P)
    sums = torch.zeros(n, patches, device=x.device, dtype=torch.float64)
    sums.scatter_add_(1, ids.reshape(1, -1).expand(n, -1), pixel_sum.double())
    if order == "morf":
        rank = ranks_of(sums, descending=True)
    elif order == "lerf":
        rank = ranks_of(sums, descending=False)
    elif order == "random":
        gen = generator_for(seed)
        rank = torch.stack([torch.randperm(patches, generator=gen) for _ in range(n)])
        rank = ranks_of(rank.to(x.device).double(), descending=False)
    else:
        raise XaikitConfigError(f"order must be 'morf', 'lerf' or 'random', got {order!r}")
    pixel_rank = rank.gather(1, ids.reshape(1, -1).expand(n, -1))  # (N, P)
    return pixel_rank.repeat(1, c), patches


def region_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    patch_size: int = 8,
    order: str = "morf",
    regions_evaluation: int = 100,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = True,
    seed: int = 0,
    return_curve: bool = False,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Region perturbation (Samek et al., 2017, IEEE TNNLS; MoRF): non-overlapping
    ``patch_size`` patches (the image padded to a multiple) are set to the baseline in order of
    their attribution sum, cumulatively, for ``regions_evaluation`` steps; the curve is the output
    drop ``y - y_perturbed`` and the value its area (trapezoid, unit spacing; the AOPC times the
    number of steps). Higher is better for MoRF. Deterministic unless ``order="random"``."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    n = x.shape[0]
    groups, patches = _patch_groups(a, x, patch_size, order, seed)
    steps = min(regions_evaluation, patches)
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    y = target_outputs(model, x, targets, softmax=softmax)
    curve = y[:, None] - _curve(
        model, x, targets, groups, steps, fill=fill, cumulative=True, softmax=softmax,
        batch_size=batch_size, quiet=quiet, desc="region perturbation",
    )  # fmt: skip
    return curve if return_curve else torch.trapezoid(curve.double(), dx=1.0, dim=1).to(x.dtype)


def selectivity(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    patch_size: int = 8,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = True,
    return_curve: bool = False,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Selectivity (Montavon, Samek & Müller, 2018, Digital Signal Processing): every
    ``patch_size`` patch is removed (set to the baseline) in order of attribution sum,
    cumulatively; the value is the area under the target-output curve (trapezoid, unit spacing).
    Lower is better. Deterministic."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    n = x.shape[0]
    groups, patches = _patch_groups(a, x, patch_size, "morf", 0)
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    curve = _curve(
        model, x, targets, groups, patches, fill=fill, cumulative=True, softmax=softmax,
        batch_size=batch_size, quiet=quiet, desc="selectivity",
    )  # fmt: skip
    return curve if return_curve else torch.trapezoid(curve.double(), dx=1.0, dim=1).to(x.dtype)


def sensitivity_n(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    features_in_step: int = 1,
    n_max_percentage: float = 0.8,
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = True,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Sensitivity-n (Ancona et al., 2018, ICLR): features are removed ``features_in_step`` at a
    time, most relevant first, cumulatively; for each step ``n`` (up to ``n_max_percentage`` of
    ``H * W // features_in_step``) the Pearson correlation *across the samples* of the output
    drop and the attribution of the features removed at that step. Returns one value per ``n``
    ``(n_max,)``, not per sample (as Quantus). Higher is better, in [-1, 1]. Deterministic."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    _check_step(features_in_step, x)
    n, f = a.shape
    steps = int(n_max_percentage * math.prod(x.shape[2:]) // features_in_step)
    steps = max(1, min(steps, math.ceil(f / features_in_step)))
    groups = ranks_of(a, descending=True) // features_in_step
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    y = target_outputs(model, x, targets, softmax=softmax)
    deltas = y[:, None] - _curve(
        model, x, targets, groups, steps, fill=fill, cumulative=True, softmax=softmax,
        batch_size=batch_size, quiet=quiet, desc="sensitivity-n",
    )  # fmt: skip
    total = math.ceil(f / features_in_step)
    att_sums = torch.zeros(n, total, device=a.device, dtype=torch.float64)
    att_sums.scatter_add_(1, groups, a.double())
    return pearson(deltas.T, att_sums[:, :steps].T).to(x.dtype)


def infidelity(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    perturb_patch_sizes: tuple[int, ...] = (4,),
    perturb_baseline: str | float = "black",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = False,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Infidelity (Yeh et al., 2019, NeurIPS), as Quantus computes it: patches of each size are
    set to the baseline one after another (row-major, cumulatively); at every step the squared
    difference between the output drop and ``sum(a * (x - x_perturbed))``, averaged over steps
    and patch sizes. Lower is better, >= 0. Deterministic (Quantus's ``n_perturb_samples``
    repeats the same perturbations)."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    n, c = x.shape[:2]
    flat = x.reshape(n, -1)
    fill = baseline_values(x, perturb_baseline).view(n, 1)
    y = target_outputs(model, x, targets, softmax=softmax)
    results = []
    for size in perturb_patch_sizes:
        ids, patches = patch_ids(tuple(x.shape[2:]), size, x.device)
        groups = ids.reshape(1, -1).repeat(1, c).expand(n, -1)
        perturbed = _curve(
            model, x, targets, groups, patches, fill=fill, cumulative=True, softmax=softmax,
            batch_size=batch_size, quiet=quiet, desc="infidelity",
        )  # fmt: skip
        # sum(a * (x - x_k)) over the features perturbed by step k: a cumulative sum per patch.
        diff = a.double() * (flat.double() - fill.double())
        per_patch = torch.zeros(n, patches, device=x.device, dtype=torch.float64)
        per_patch.scatter_add_(1, groups, diff)
        a_sums = per_patch.cumsum(1)
        deltas = y.double()[:, None] - perturbed.double()
        results.append((deltas - a_sums).square().mean(1))
    return torch.stack(results, 1).mean(1).to(x.dtype)


def superpixels(x: torch.Tensor, method: str = "slic") -> torch.Tensor:
    """``(N, H, W)`` superpixel labels ``0..S-1`` of each image, as Quantus segments them
    (``skimage.segmentation.slic(img, start_label=0)`` or ``felzenszwalb(img, scale=448,
    sigma=0.8, min_size=56)`` on the channel-last image). Needs scikit-image (not a xaikit
    dependency: pass ``segments=`` to :func:`irof` to do without it)."""
    try:
        from skimage.segmentation import felzenszwalb, slic
    except ImportError:  # pragma: no cover - depends on the environment
        raise XaikitConfigError(
            "irof needs superpixels: install scikit-image or pass segments= (N, H, W) labels"
        ) from None
    out = []
    for image in x.detach().cpu().double().numpy():
        img = image.transpose(1, 2, 0)
        if method == "slic":
            labels = slic(img, start_label=0)
        elif method == "felzenszwalb":
            labels = felzenszwalb(img, scale=448, sigma=0.8, min_size=56)
        else:
            raise XaikitConfigError(f"segmentation_method must be slic or felzenszwalb: {method!r}")
        out.append(torch.as_tensor(labels, dtype=torch.long))
    return torch.stack(out).to(x.device)


def irof(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    segments: torch.Tensor | None = None,
    segmentation_method: str = "slic",
    baseline_scope: str = "batch",
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = True,
    return_curve: bool = False,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """IROF, iterative removal of features (Rieger & Hansen, 2020, "IROF: a low resource
    evaluation metric for explanation methods"): superpixels are replaced by the mean value,
    most relevant (highest mean attribution) first, cumulatively; the value is the area over
    the curve of ``y_perturbed / y`` (number of segments minus the trapezoid area, unit spacing).
    Higher is better. Deterministic.

    ``segments`` ``(N, H, W)`` labels ``0..S-1`` (default: :func:`superpixels`). The mean a
    removed segment takes is that of the images perturbed so far, over the whole batch
    (``baseline_scope="batch"``, what Quantus 0.6 computes) or over the sample alone
    (``"sample"``).
    """
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    n, c = x.shape[:2]
    seg = superpixels(x, segmentation_method) if segments is None else segments.to(x.device)
    seg = seg.long().reshape(n, -1)
    counts = seg.amax(1) + 1  # segments per image
    steps = int(counts.max())
    # Mean attribution per segment (over channels and pixels), most relevant first.
    a_pix = a.view(n, c, -1).double().mean(1)
    total = torch.zeros(n, steps, device=x.device, dtype=torch.float64)
    total.scatter_add_(1, seg, a_pix)
    size = torch.zeros_like(total).scatter_add_(1, seg, torch.ones_like(a_pix))
    mean_att = torch.where(size > 0, total / size.clamp(min=1), torch.full_like(total, -torch.inf))
    seg_rank = ranks_of(mean_att, descending=True)  # (N, S)
    pixel_rank = seg_rank.gather(1, seg)  # (N, P) step at which each pixel is replaced
    groups = pixel_rank.repeat(1, c)
    # The fill of step k is the mean of the images after step k - 1 (sequential, cheap).
    flat = x.reshape(n, -1)
    current = flat.clone()
    fills = torch.empty(n, steps, device=x.device, dtype=x.dtype)
    for k in range(steps):
        if baseline_scope == "batch":
            value = current.mean().expand(n)
        elif baseline_scope == "sample":
            value = current.mean(1)
        else:
            raise XaikitConfigError(
                f"baseline_scope must be batch or sample, got {baseline_scope!r}"
            )
        fills[:, k] = value
        current = torch.where(groups == k, value[:, None], current)
    per_feature_fill = fills.gather(1, groups.clamp(max=steps - 1))
    y = target_outputs(model, x, targets, softmax=softmax)
    curve = _curve(
        model, x, targets, groups, steps, fill=per_feature_fill, cumulative=True,
        softmax=softmax, batch_size=batch_size, quiet=quiet, desc="irof",
    ) / y[:, None]  # fmt: skip
    valid = torch.arange(steps, device=x.device)[None] < counts[:, None]
    curve = torch.where(valid, curve, torch.zeros_like(curve))
    if return_curve:
        return curve
    # The trapezoid area over each image's own segments: the zeros padded past an image with
    # fewer segments than the batch's most must not add half its last point.
    c = curve.double()
    last = c.gather(1, (counts - 1)[:, None])[:, 0]
    area = c.sum(1) - 0.5 * (c[:, 0] + last)
    return (counts.double() - area).to(x.dtype)


_ROAD_WEIGHTS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
                 (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))  # fmt: skip


def noisy_linear_imputation(
    x: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-10,
    max_iter: int = 2000,
) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al., 2022), batched: every removed pixel
    (``removed`` ``(N, H, W)`` bool) becomes the weighted mean of its 8 neighbours (weights 1/6
    for edge, 1/12 for corner neighbours), neighbours that are removed too being unknowns of
    the same sparse linear system, plus N(0, noise^2). The system of all images and channels is
    solved at once by conjugate gradients (to ``tol``) instead of a sparse factorisation."""
    n, c, h, w = x.shape
    xd = x.double()
    known = (~removed).double()[:, None].expand(n, c, h, w)
    unknown = 1.0 - known
    kernel = torch.zeros(3, 3, dtype=torch.float64, device=x.device)
    for dy, dx, weight in _ROAD_WEIGHTS:
        kernel[1 + dy, 1 + dx] = weight
    kernel = kernel.view(1, 1, 3, 3)

    def conv(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t.reshape(n * c, 1, h, w), kernel, padding=1).view(
            n, c, h, w
        )

    degree = conv(torch.ones_like(xd))  # sum of the weights of the neighbours inside the image

    def operator(v: torch.Tensor) -> torch.Tensor:  # SPD on the unknowns
        return unknown * (degree * v - conv(v * unknown))

    rhs = unknown * conv(xd * known)
    v = torch.zeros_like(xd)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).flatten(1).sum(1)
    scale = rs.clamp(min=1e-300)
    for _ in range(max_iter):
        if bool((rs <= tol * tol * scale).all()):
            break
        ap = operator(p)
        alpha = rs / (p * ap).flatten(1).sum(1).clamp(min=1e-300)
        v = v + alpha.view(-1, 1, 1, 1) * p
        r = r - alpha.view(-1, 1, 1, 1) * ap
        rs_new = (r * r).flatten(1).sum(1)
        p = r + (rs_new / rs.clamp(min=1e-300)).view(-1, 1, 1, 1) * p
        rs = rs_new
    if noise:
        gen = generator
        eps = torch.randn(xd.shape, generator=gen, device="cpu" if gen is None else gen.device)
        v = v + noise * eps.to(xd)
    return torch.where(unknown > 0, v, xd).to(x.dtype)


def road(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    percentages: tuple[float, ...] | None = None,
    noise: float = 0.01,
    normalise: bool = True,
    abs: bool = False,
    softmax: bool = True,
    seed: int = 0,
    return_curve: bool = False,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """ROAD, remove and debias (Rong, Leemann, Borisov, Kasneci & Kasneci, 2022, ICML): for each
    percentage ``p`` (default 1, 3, ..., 99) the ``p`` % most relevant pixels (attributions
    summed over channels) are imputed by :func:`noisy_linear_imputation`, and the model is right
    when its prediction is still the target. The value is the accuracy averaged over the
    percentages (MoRF: lower is better, in [0, 1]); ``return_curve`` gives ``(N, P)`` 0/1.
    Stochastic (``seed``; ``noise=0`` makes it deterministic).

    Quantus 0.6 ranks the C*H*W broadcast features and indexes an H*W mask with them, which only
    works for one-channel inputs; there the two agree.
    """
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    n, c, h, w = x.shape
    percentages = tuple(range(1, 100, 2)) if percentages is None else tuple(percentages)
    pixel_rank = ranks_of(a.view(n, c, -1).sum(1), descending=True)  # (N, HW)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    columns = []
    for p in tqdm(percentages, desc="road", disable=is_quiet(quiet), leave=False):
        removed = (pixel_rank < int(h * w * p / 100)).view(n, h, w)
        imputed = noisy_linear_imputation(x, removed, noise=noise, generator=gen)
        logits = predict(model, imputed, softmax=softmax, batch_size=batch_size)
        columns.append(logits.argmax(1) == targets)
    correct = torch.stack(columns, 1).to(x.dtype)
    return correct if return_curve else correct.mean(1)
