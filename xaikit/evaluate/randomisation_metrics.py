"""Randomisation metrics, batched: does the explanation depend on the model and on the class?

* :func:`model_parameter_randomisation` (MPRT; Adebayo et al., 2018): re-explain on copies of the
  model whose layers are re-initialised top-down, cumulatively, and correlate with the original
  maps (Spearman); :func:`smooth_model_parameter_randomisation` (sMPRT; Hedström et al., 2024)
  averages the explanations over noisy inputs first; :func:`efficient_model_parameter_
  randomisation` (eMPRT; Hedström et al., 2024): the relative rise of the explanation complexity
  (histogram entropy) from the original to the fully randomised model.
* :func:`random_logit` (Sixt, Granz & Landgraf, 2020): SSIM between the map of the target class
  and the map of a random other class.

``explain_fn(model, x, targets) -> attributions`` is the method scored (it is called on the
randomised copies). Definitions follow Quantus 0.6: layers are every module with
``reset_parameters``, each reset after ``torch.manual_seed(seed + 1)`` (the global RNG is
restored afterwards); the model itself is never modified.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.evaluate._batched import as_maps, on_device, predict, preprocess, spearman_rows
from xaikit.evaluate._common import num_outputs

ModelExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _explain(explain_fn, model, x, targets, normalise, absolute, batch_size):
    rows = max(1, int(batch_size or x.shape[0]))
    maps = [
        explain_fn(model, x[s : s + rows], targets[s : s + rows]).detach()
        for s in range(0, x.shape[0], rows)
    ]
    return preprocess(
        as_maps(x, torch.cat(maps)).to(x.dtype), normalise=normalise, absolute=absolute
    )


def randomised_layers(
    model: nn.Module, *, order: str = "top_down", seed: int = 42
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer name, copy)`` with the copy's layers re-initialised one more at a time
    (``"top_down"``: head first; ``"bottom_up"``; ``"independent"``: one layer at a time)."""
    if order not in ("top_down", "bottom_up", "independent"):
        raise XaikitConfigError(f"order must be top_down, bottom_up or independent, got {order!r}")
    original = copy.deepcopy(model.state_dict())
    randomised = copy.deepcopy(model)
    modules = [(n, m) for n, m in randomised.named_modules() if hasattr(m, "reset_parameters")]
    if order == "top_down":
        modules = modules[::-1]
    for name, module in modules:
        if order == "independent":
            randomised.load_state_dict(original)
        # manual_seed reseeds every CUDA device too: fork the one the copy lives on as well.
        device = next(module.parameters(), torch.empty(0)).device
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed + 1)
            module.reset_parameters()
        yield name, randomised


def model_parameter_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ModelExplainFn,
    *,
    layer_order: str = "top_down",
    seed: int = 42,
    return_average_correlation: bool = False,
    return_per_layer: bool = False,
    normalise: bool = True,
    abs: bool = True,
    batch_size: int | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """MPRT (Adebayo et al., 2018, NeurIPS): Spearman correlation between ``attributions`` and
    the maps of the model with every layer re-initialised (the last cascade step; the mean over
    steps with ``return_average_correlation``; ``{layer: (N,)}`` with ``return_per_layer``).
    Lower is better, in [-1, 1]: an explanation of the model must change. Deterministic."""
    x, targets = on_device(model, x, targets)
    a = preprocess(as_maps(x, attributions).to(x.dtype), normalise=normalise, absolute=abs)
    n = x.shape[0]
    per_layer: dict[str, torch.Tensor] = {}
    for name, randomised in randomised_layers(model, order=layer_order, seed=seed):
        ap = _explain(explain_fn, randomised, x, targets, normalise, abs, batch_size)
        per_layer[name] = spearman_rows(a.reshape(n, -1), ap.reshape(n, -1)).to(x.dtype)
    if return_per_layer:
        return per_layer
    if return_average_correlation:
        return torch.stack(list(per_layer.values()), 1).mean(1)
    return list(per_layer.values())[-1]


def smooth_model_parameter_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ModelExplainFn,
    *,
    nr_samples: int = 50,
    noise_magnitude: float = 0.1,
    layer_order: str = "bottom_up",
    seed: int = 42,
    return_average_correlation: bool = False,
    return_per_layer: bool = False,
    normalise: bool = True,
    abs: bool = True,
    batch_size: int | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Smooth MPRT (Hedström et al., 2024, TMLR, "Sanity Checks Revisited"): as :func:`model_
    parameter_randomisation` (bottom-up by default) but every explanation - of the original and of
    the randomised model - is the mean over ``nr_samples`` inputs, as Quantus 0.6 draws them:
    ``nr_samples - 1`` with N(0, (noise_magnitude * (max - min))^2) noise and the clean input as
    the last (so ``nr_samples=1`` is the noise-free MPRT). Each smoothing draws fresh noise (the
    original and the randomised model do not share draws, which would correlate their maps).
    Returns the Spearman correlation after the last layer (``{layer: (N,)}`` with
    ``return_per_layer``; the mean over the layers with ``return_average_correlation`` -
    Quantus 0.6 also averages in its ``"original"`` entry, a second smoothing of the original
    model, as it skips ``"orig"``). Lower is better. Stochastic (``seed``). ``attributions``
    are not used: the original model's maps are re-explained and smoothed, as Quantus does
    when it is given no ``a_batch`` (given one, it correlates the unsmoothed ``a_batch`` with
    the smoothed maps instead)."""
    if nr_samples < 1:
        raise XaikitConfigError(f"nr_samples must be at least 1, got {nr_samples}")
    x, targets = on_device(model, x, targets)
    n = x.shape[0]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    spread = (x.reshape(n, -1).amax(1) - x.reshape(n, -1).amin(1)).view(n, *[1] * (x.dim() - 1))

    def smoothed(m: nn.Module) -> torch.Tensor:
        total = None
        for k in range(nr_samples):
            xs = x
            if k < nr_samples - 1:
                noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
                xs = x + noise * noise_magnitude * spread
            maps = _explain(explain_fn, m, xs, targets, False, False, batch_size) / nr_samples
            total = maps if total is None else total + maps
        return preprocess(total, normalise=normalise, absolute=abs)

    a = smoothed(model).reshape(n, -1)
    every = return_per_layer or return_average_correlation
    per_layer: dict[str, torch.Tensor] = {}
    name, last = None, None
    for name, randomised in randomised_layers(model, order=layer_order, seed=seed):
        last = randomised
        if every:
            ap = smoothed(randomised).reshape(n, -1)
            per_layer[name] = spearman_rows(a, ap).to(x.dtype)
    assert last is not None and name is not None
    if return_per_layer:
        return per_layer
    if return_average_correlation:
        return torch.stack(list(per_layer.values()), 1).mean(1)
    return spearman_rows(a, smoothed(last).reshape(n, -1)).to(x.dtype)


def _histogram_entropy(a: torch.Tensor, bins: int) -> torch.Tensor:
    """Shannon entropy (nats) of each row's ``bins``-bin histogram as ``numpy.histogram`` bins
    it (Quantus's ``discrete_entropy``): equal-width bins over [min, max], each half-open but the
    last, edges ``min + i * (max - min) / bins``; a constant row spans [v - 0.5, v + 0.5]."""
    lo = a.amin(1, keepdim=True)
    hi = a.amax(1, keepdim=True)
    flat = hi == lo
    lo = torch.where(flat, lo - 0.5, lo)
    hi = torch.where(flat, hi + 0.5, hi)
    steps = torch.arange(bins + 1, device=a.device, dtype=a.dtype)
    edges = lo + steps * ((hi - lo) / bins)
    edges[:, -1:] = hi
    index = torch.searchsorted(edges.contiguous(), a.contiguous(), right=True) - 1
    index = index.clamp(0, bins - 1)
    counts = torch.zeros(a.shape[0], bins, device=a.device, dtype=torch.float64)
    counts.scatter_add_(1, index, torch.ones_like(a, dtype=torch.float64))
    p = counts / counts.sum(1, keepdim=True)
    return -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(1)


def _output_entropy(model: nn.Module, x: torch.Tensor, softmax: bool, batch_size) -> torch.Tensor:
    """Shannon entropy (nats) of each sample's model output (softmax probabilities by default),
    Quantus's ``entropy`` of the prediction: the model complexity of eMPRT's extra scores."""
    out = predict(model, x, softmax=softmax, batch_size=batch_size)  # borrowed, in chunks
    out = out.reshape(out.shape[0], -1).double()
    if softmax:
        pass
    elif bool((out < 0).any()):
        raise XaikitConfigError("the model complexity needs non-negative outputs: use softmax")
    p = out / out.abs().sum(1, keepdim=True)
    return -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(1)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, 1.0), math.nan)


def efficient_model_parameter_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ModelExplainFn,
    *,
    bins: int = 100,
    layer_order: str = "bottom_up",
    seed: int = 42,
    softmax: bool = True,
    return_extra_scores: bool = False,
    normalise: bool = False,
    abs: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """eMPRT (Hedström et al., 2024, TMLR), Quantus 0.6's ``EfficientMPRT``: the relative rise
    of the explanation complexity ``(H_rand - H_orig) / H_orig``, ``H`` the entropy of the map's
    ``bins``-bin histogram, ``H_orig`` of ``attributions`` and ``H_rand`` of the map on the model
    with every layer re-initialised. Higher is better (a randomised model should give a noisier
    map), in [-1, inf); 0 means no change; NaN where ``H_orig`` is 0 (a constant map).
    Deterministic. Quantus's defaults: no ``normalise`` (it would not change the histogram) and
    no ``abs``.

    The model-complexity weighting is, in Quantus too, one of the extra scores
    (``compute_extra_scores=True``), not the score: ``return_extra_scores`` returns the dict
    ``{"scores", "scores_delta_explanation" (H_rand - H_orig), "scores_fraction_explanation"
    (H_rand / H_orig), "scores_delta_model", "scores_fraction_model" (the same for the entropy of
    the model's softmax output), "scores_delta_explanation_vs_models" (the explanation fraction
    over the model fraction)}`` of ``(N,)`` tensors (fractions NaN where the denominator is 0).
    Quantus's two others need every layer and are left out. Quantus scores ``H_orig`` on maps it
    re-explains; here it is ``attributions`` (the same when they are ``explain_fn``'s maps)."""
    x, targets = on_device(model, x, targets)
    n = x.shape[0]
    a = preprocess(as_maps(x, attributions).to(x.dtype), normalise=normalise, absolute=abs)
    last = None
    for _, randomised in randomised_layers(model, order=layer_order, seed=seed):
        last = randomised
    assert last is not None
    ap = _explain(explain_fn, last, x, targets, normalise, abs, batch_size)
    before = _histogram_entropy(a.reshape(n, -1).double(), bins)
    after = _histogram_entropy(ap.reshape(n, -1).double(), bins)
    scores = _ratio(after - before, before).to(x.dtype)
    if not return_extra_scores:
        return scores
    model_before = _output_entropy(model, x, softmax, batch_size)
    model_after = _output_entropy(last, x, softmax, batch_size)
    fraction_explanation = _ratio(after, before)
    fraction_model = _ratio(model_after, model_before)
    extra = {
        "scores": scores,
        "scores_delta_explanation": after - before,
        "scores_fraction_explanation": fraction_explanation,
        "scores_delta_model": model_after - model_before,
        "scores_fraction_model": fraction_model,
        "scores_delta_explanation_vs_models": _ratio(fraction_explanation, fraction_model),
    }
    return {k: v.to(x.dtype) for k, v in extra.items()}


def ssim_1d(a: torch.Tensor, b: torch.Tensor, win_size: int = 7) -> torch.Tensor:
    """SSIM of each row pair ``(N, F)`` as ``skimage.metrics.structural_similarity`` computes it
    on 1-D signals (what Quantus's ``ssim`` passes it): uniform window, sample covariance,
    ``data_range`` the joint max - min of the pair, border of ``win_size // 2`` cropped."""
    a = a.double()
    b = b.double()
    both = torch.cat([a, b], 1)
    data_range = (both.amax(1) - both.amin(1)).abs()
    kernel = torch.full((1, 1, win_size), 1.0 / win_size, dtype=a.dtype, device=a.device)

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv1d(t[:, None], kernel)[:, 0]

    ux, uy = mean(a), mean(b)
    uxx, uyy, uxy = mean(a * a), mean(b * b), mean(a * b)
    cov = win_size / (win_size - 1)
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1 = ((0.01 * data_range) ** 2)[:, None]
    c2 = ((0.03 * data_range) ** 2)[:, None]
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(1)


def off_classes(targets: torch.Tensor, num_classes: int, seed: int = 42) -> torch.Tensor:
    """One random class other than the target per sample, drawn exactly as Quantus draws it
    (``numpy.random.seed(seed)``, ``randint(0, num_classes - 1)`` over the other classes)."""
    draw = np.random.RandomState(seed).randint(0, num_classes - 1, targets.shape[0])
    draw = torch.as_tensor(draw, device=targets.device)
    return draw + (draw >= targets).long()


def random_logit(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ModelExplainFn,
    *,
    num_classes: int | None = None,
    seed: int = 42,
    normalise: bool = True,
    abs: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Random logit (Sixt, Granz & Landgraf, 2020, ICML): SSIM between the map of the target
    class and the map of a random other class (:func:`off_classes`). Lower is better, in
    [-1, 1]: a class-sensitive method gives different maps. Deterministic given ``seed``."""
    x, targets = on_device(model, x, targets)
    n = x.shape[0]
    if num_classes is None:
        num_classes = num_outputs(model, x)  # in eval mode, the model's state restored
    a = preprocess(as_maps(x, attributions).to(x.dtype), normalise=normalise, absolute=abs)
    off = off_classes(targets, num_classes, seed)
    ap = _explain(explain_fn, model, x, off, normalise, abs, batch_size)
    return ssim_1d(a.reshape(n, -1), ap.reshape(n, -1)).to(x.dtype)
