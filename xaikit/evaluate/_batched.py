"""Shared machinery of the batched explanation-quality metrics (the Quantus-compatible catalogue).

Every metric follows the conventions of Quantus 0.6 (Hedström et al., 2023) so that numbers can be
compared one to one:

* attributions ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, C, H, W)`` are broadcast to the input
  shape ``(N, C, H, W)`` and flattened to ``C * H * W`` *features*, channel-major, as Quantus
  does; ``features_in_step`` counts such features (use a multiple of ``C`` to perturb whole
  pixels);
* ``normalise`` divides each sample's attributions by their largest absolute value (Quantus
  divides by the largest value of the whole batch it is given; for the rank- and
  correlation-based metrics the two are the same);
* ``"black"`` / ``"white"`` / ``"mean"`` baselines are each sample's minimum / maximum / mean
  over all its features, ``"uniform"`` one U(0, 1) value per sample and perturbation;
* model outputs are logits, or softmax probabilities when ``softmax=True`` (each metric's default
  is Quantus's); the probabilities follow the head, as Quantus cannot: a one-logit (binary)
  head gives ``(1 - p, p)`` (and its logits ``(-z, z)``), so targets 0 and 1 both read a
  score, and ``softmax="multilabel"`` gives each label's sigmoid
  (:func:`xaikit.evaluate.catalogue.run_metric` passes it for a multi-label xaikit head);
* rankings are stable sorts (equal attributions are taken in feature-index order; numpy's
  default sort used by Quantus leaves that order unspecified).

Every (sample, perturbation step) pair is one row of a chunked forward pass; no Python loop runs
over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from xaikit.errors import XaikitConfigError
from xaikit.evaluate._common import is_quiet
from xaikit.explain.state import borrowed, model_device

#: ``explain_fn(x (N, C, H, W), targets (N,)) -> attributions`` used by metrics that re-explain.
ExplainFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Rows per forward pass when no ``batch_size`` is given (CPU convolutions are fastest per
#: image around 64 rows; on a GPU pass the memory budget's rows, see ``suite.metric_rows``).
DEFAULT_ROWS = 64


def as_features(x: torch.Tensor, attributions: torch.Tensor) -> torch.Tensor:
    """Attributions broadcast to ``x``'s shape ``(N, C, *S)`` (float, on ``x``'s device)."""
    a = attributions.to(device=x.device, dtype=x.dtype)
    if a.dim() == x.dim() - 1:
        a = a.unsqueeze(1)
    if a.dim() != x.dim() or a.shape[0] != x.shape[0] or a.shape[2:] != x.shape[2:]:
        raise XaikitConfigError(
            f"attributions of shape {tuple(attributions.shape)} do not fit inputs "
            f"{tuple(x.shape)}; pass (N, H, W), (N, 1, H, W) or (N, C, H, W)"
        )
    if a.shape[1] not in (1, x.shape[1]):
        raise XaikitConfigError(f"attributions have {a.shape[1]} channels, the inputs {x.shape[1]}")
    return a.expand_as(x).contiguous()


def as_maps(x: torch.Tensor, attributions: torch.Tensor) -> torch.Tensor:
    """Attributions as ``(N, c, *S)`` with ``c`` 1 or C (not broadcast): Quantus's layout for
    the metrics that read the map alone (localisation, complexity)."""
    a = attributions.to(device=x.device if x is not None else attributions.device).float()
    if a.dim() == 3:
        a = a.unsqueeze(1)
    return a


def preprocess(a: torch.Tensor, *, normalise: bool, absolute: bool) -> torch.Tensor:
    """Quantus's attribution preprocessing, per sample: divide by the max |a| (an all-zero map is
    left as it is), then take ``abs`` when asked."""
    if normalise:
        flat = a.reshape(a.shape[0], -1)
        peak = flat.abs().amax(dim=1)
        peak = torch.where(peak == 0, torch.ones_like(peak), peak)
        a = a / peak.view(-1, *([1] * (a.dim() - 1)))
    if absolute:
        a = a.abs()
    return a


def baseline_values(x: torch.Tensor, baseline: str | float, generator=None) -> torch.Tensor:
    """``(N,)`` one fill value per sample: ``"black"`` (min), ``"white"`` (max), ``"mean"``,
    ``"uniform"`` (U(0, 1), drawn with ``generator``) or a number."""
    flat = x.reshape(x.shape[0], -1)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full((x.shape[0],), float(baseline), device=x.device, dtype=x.dtype)
    if baseline == "black":
        return flat.amin(dim=1)
    if baseline == "white":
        return flat.amax(dim=1)
    if baseline == "mean":
        return flat.mean(dim=1)
    if baseline == "uniform":
        return torch.rand(x.shape[0], generator=generator, device="cpu").to(x)
    raise XaikitConfigError(
        f"perturb_baseline must be 'black', 'white', 'mean', 'uniform' or a number; got "
        f"{baseline!r}"
    )


def ranks_of(a: torch.Tensor, *, descending: bool) -> torch.Tensor:
    """Rank of each feature (0 first) of ``(N, F)`` scores: stable sort, ties by index."""
    order = torch.argsort(a, dim=1, descending=descending, stable=True)
    positions = torch.arange(a.shape[1], device=a.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def outputs(logits: torch.Tensor, softmax: bool | str) -> torch.Tensor:
    """What a metric reads of the model's ``(N, K)`` logits: the logits (``softmax`` false),
    softmax probabilities (true), or each label's sigmoid (``"multilabel"``). A binary head
    (``K == 1``, one logit ``z`` for class 1) reads as two classes: ``(-z, z)``, or
    ``(1 - sigmoid(z), sigmoid(z))`` as probabilities."""
    if logits.dim() == 2 and logits.shape[-1] == 1:
        if not softmax:
            return torch.cat([-logits, logits], dim=-1)
        p = logits.sigmoid()
        return torch.cat([1 - p, p], dim=-1)
    if softmax == "multilabel":
        return logits.sigmoid()
    return logits.softmax(dim=-1) if softmax else logits


def iter_rows(total: int, batch_size: int | None, desc: str, quiet: bool | None) -> Iterator[slice]:
    """Chunks of ``batch_size`` rows covering ``range(total)``, with a progress bar."""
    size = max(1, int(batch_size or DEFAULT_ROWS))
    chunks = [slice(s, min(s + size, total)) for s in range(0, total, size)]
    yield from tqdm(chunks, desc=desc, disable=is_quiet(quiet) or len(chunks) < 2, leave=False)


def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    softmax: bool,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Model outputs ``(N, K)`` (logits or softmax) in eval mode, without gradients, in chunks."""
    outs = []
    with borrowed(model), torch.no_grad():
        for rows in iter_rows(x.shape[0], batch_size, "predict", True):
            outs.append(outputs(model(x[rows]), softmax))
    return torch.cat(outs)


def scores_of_rows(
    model: nn.Module,
    rows: int,
    make: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    *,
    softmax: bool,
    batch_size: int | None,
    desc: str,
    quiet: bool | None,
    full: bool = False,
) -> torch.Tensor:
    """Evaluate ``rows`` perturbed inputs in chunks: ``make(row indices) -> (inputs, targets)``;
    returns ``(rows,)`` target outputs (``(rows, K)`` every output when ``full``)."""
    device = model_device(model)
    out: torch.Tensor | None = None
    with borrowed(model), torch.no_grad():
        for chunk in iter_rows(rows, batch_size, desc, quiet):
            index = torch.arange(chunk.start, chunk.stop, device=device)
            batch, targets = make(index)
            y = outputs(model(batch), softmax)
            if out is None:
                shape = (rows, y.shape[1]) if full else (rows,)
                out = torch.empty(shape, device=device, dtype=y.dtype)
            out[chunk] = y if full else y.gather(1, targets[:, None].long())[:, 0]
    assert out is not None
    return out


def target_outputs(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, softmax: bool, batch_size=None
) -> torch.Tensor:
    """``(N,)`` the output of each sample's target class."""
    y = predict(model, x, softmax=softmax, batch_size=batch_size)
    return y.gather(1, targets.to(y.device)[:, None].long())[:, 0]


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pearson correlation along ``dim`` in float64 (NaN for a constant row, like scipy)."""
    a = a.double()
    b = b.double()
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    num = (a * b).sum(dim=dim)
    den = (a.square().sum(dim=dim) * b.square().sum(dim=dim)).sqrt()
    return torch.where(den > 0, num / den, torch.full_like(num, float("nan")))


def average_ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks 1..F along the last axis with ties given their average rank (scipy ``rankdata``)."""
    a = a.double()
    order = torch.argsort(a, dim=-1, stable=True)
    sorted_a = torch.gather(a, -1, order)
    f = a.shape[-1]
    new_group = torch.ones_like(sorted_a, dtype=torch.bool)
    new_group[..., 1:] = sorted_a[..., 1:] != sorted_a[..., :-1]
    group = new_group.long().cumsum(-1) - 1  # group id per sorted position
    pos = torch.arange(1, f + 1, device=a.device, dtype=torch.float64).expand_as(sorted_a)
    total = torch.zeros_like(sorted_a).scatter_add_(-1, group, pos)
    count = torch.zeros_like(sorted_a).scatter_add_(-1, group, torch.ones_like(pos))
    mean_rank = torch.gather(total / count.clamp(min=1), -1, group)
    return torch.empty_like(a).scatter_(-1, order, mean_rank)


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row pair ``(N, F)`` with average ranks (NaN if constant)."""
    return pearson(average_ranks(a), average_ranks(b))


def generator_for(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (0 when ``None``)."""
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def patch_ids(shape: tuple[int, int], patch_size: int, device) -> tuple[torch.Tensor, int]:
    """``(ids (H, W), patches)``: the row-major index of the ``patch_size`` block each pixel
    lies in, on the grid padded symmetrically (``floor`` before, ``ceil`` after) to a multiple
    of ``patch_size``, as Quantus pads."""
    ids = []
    counts = []
    for dim in shape:
        pad = (-dim) % patch_size
        before = pad // 2
        ids.append((torch.arange(dim, device=device) + before) // patch_size)
        counts.append((dim + pad) // patch_size)
    grid = ids[0][:, None] * counts[1] + ids[1][None, :]
    return grid, counts[0] * counts[1]


def check_batch(x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise XaikitConfigError("x must be a float tensor batch shaped (N, C, H, W)")
    targets = torch.as_tensor(targets, device=x.device).long().reshape(-1)
    if targets.shape[0] != x.shape[0]:
        raise XaikitConfigError(f"targets must hold one class per input (N = {x.shape[0]})")
    return x, targets


def on_device(model: nn.Module, x: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (float) and ``targets`` (long) moved to the model's device, checked."""
    device = model_device(model)
    x = x.to(device)
    if not x.is_floating_point():
        x = x.float()
    return check_batch(x, torch.as_tensor(targets).to(device))
