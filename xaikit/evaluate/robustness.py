"""Robustness metrics, batched: do the attributions stay put when the input barely changes?

Each function takes ``(model, x (N, C, H, W), attributions, targets (N,), explain_fn)`` with
``explain_fn(x, targets) -> attributions`` the method being scored, draws ``nr_samples`` noisy
copies of every input, re-explains them all (chunks of ``batch_size`` rows, whole draws at a
time so the noise does not depend on the chunking) and returns per-sample values ``(N,)``.
Definitions and defaults follow Quantus 0.6; all are stochastic (``seed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.evaluate._batched import (
    DEFAULT_ROWS,
    ExplainFn,
    as_maps,
    on_device,
    predict,
    preprocess,
)
from xaikit.evaluate._common import is_quiet
from xaikit.explain.state import borrowed


def _generator(x: torch.Tensor, seed: int) -> torch.Generator:
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(seed))
    return gen


def _noise(x: torch.Tensor, kind: str, low: float, high: float, gen) -> torch.Tensor:
    if kind == "uniform":
        return (
            torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * (high - low) + low
        )
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * high + low


def _draws(
    x: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ExplainFn,
    nr_samples: int,
    *,
    noise: str,
    low: float,
    high: float,
    seed: int,
    normalise: bool,
    absolute: bool,
    batch_size: int | None,
    quiet: bool | None,
    desc: str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x_perturbed (N, C, H, W), attributions (N, c, H, W))`` per draw."""
    from tqdm.auto import tqdm

    gen = _generator(x, seed)
    rows = max(1, int(batch_size or DEFAULT_ROWS))
    for _ in tqdm(range(nr_samples), desc=desc, disable=is_quiet(quiet), leave=False):
        xp = x + _noise(x, noise, low, high, gen)
        maps = []
        for start in range(0, x.shape[0], rows):
            part = slice(start, start + rows)
            maps.append(explain_fn(xp[part], targets[part]).detach())
        ap = as_maps(xp, torch.cat(maps)).to(x.dtype)
        yield xp, preprocess(ap, normalise=normalise, absolute=absolute)


def _norm(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).double().norm(dim=1)


def _predicted(model: nn.Module, x: torch.Tensor, rows, wanted: bool) -> torch.Tensor | None:
    """The clean inputs' predicted classes, once per metric call (``None`` when unused)."""
    return predict(model, x, softmax=False, batch_size=rows).argmax(-1) if wanted else None


def _changed(model: nn.Module, before: torch.Tensor, xp: torch.Tensor, rows) -> torch.Tensor:
    return before != predict(model, xp, softmax=False, batch_size=rows).argmax(-1)


def _prepare(model, x, attributions, targets, normalise, absolute):
    x, targets = on_device(model, x, targets)
    a = preprocess(as_maps(x, attributions).to(x.dtype), normalise=normalise, absolute=absolute)
    return x, a, targets


def _sensitivity(
    model, x, attributions, targets, explain_fn, *, reduce: str, nr_samples, lower_bound,
    upper_bound, normalise, abs, return_nan_when_prediction_changes, seed, batch_size, quiet,
):  # fmt: skip
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    low, high = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    values = []
    denominator = _norm(a)
    before = _predicted(model, x, batch_size, return_nan_when_prediction_changes)
    for xp, ap in _draws(
        x, targets, explain_fn, nr_samples, noise="uniform", low=low, high=high, seed=seed,
        normalise=normalise, absolute=abs, batch_size=batch_size, quiet=quiet,
        desc=f"{reduce} sensitivity",
    ):  # fmt: skip
        value = _norm(a - ap) / denominator
        if return_nan_when_prediction_changes:
            value = torch.where(_changed(model, before, xp, batch_size), torch.nan, value)
        values.append(value)
    stacked = torch.stack(values, 1)
    if reduce == "max":
        out = stacked.amax(1) if return_nan_when_prediction_changes else _nanmax(stacked)
    else:
        out = stacked.mean(1) if return_nan_when_prediction_changes else stacked.nanmean(1)
    return out.to(x.dtype)


def _nanmax(t: torch.Tensor) -> torch.Tensor:
    filled = torch.where(torch.isnan(t), torch.full_like(t, -torch.inf), t).amax(1)
    return torch.where(torch.isinf(filled) & (filled < 0), torch.nan, filled)


def max_sensitivity(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ExplainFn,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    normalise: bool = True,
    abs: bool = False,
    return_nan_when_prediction_changes: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al., 2019, NeurIPS): the largest relative change
    ``||a - a'||_F / ||a||_F`` over ``nr_samples`` inputs with U(-0.2, 0.2) noise added
    (``lower_bound``; U(lower, upper) when ``upper_bound`` is given). Lower is better, >= 0."""
    return _sensitivity(
        model, x, attributions, targets, explain_fn, reduce="max", nr_samples=nr_samples,
        lower_bound=lower_bound, upper_bound=upper_bound, normalise=normalise, abs=abs,
        return_nan_when_prediction_changes=return_nan_when_prediction_changes, seed=seed,
        batch_size=batch_size, quiet=quiet,
    )  # fmt: skip


def avg_sensitivity(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ExplainFn,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    normalise: bool = True,
    abs: bool = False,
    return_nan_when_prediction_changes: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Avg-sensitivity (Yeh et al., 2019, NeurIPS): the mean of the relative change
    ``||a - a'||_F / ||a||_F`` over the noisy inputs of :func:`max_sensitivity`. Lower is
    better, >= 0."""
    return _sensitivity(
        model, x, attributions, targets, explain_fn, reduce="avg", nr_samples=nr_samples,
        lower_bound=lower_bound, upper_bound=upper_bound, normalise=normalise, abs=abs,
        return_nan_when_prediction_changes=return_nan_when_prediction_changes, seed=seed,
        batch_size=batch_size, quiet=quiet,
    )  # fmt: skip


def local_lipschitz_estimate(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ExplainFn,
    *,
    nr_samples: int = 200,
    perturb_mean: float = 0.0,
    perturb_std: float = 0.1,
    normalise: bool = True,
    abs: bool = False,
    return_nan_when_prediction_changes: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018, "On the Robustness of
    Interpretability Methods"): the largest ``||a - a'||_2 / (||x - x'||_2 + 1e-10)`` over
    ``nr_samples`` inputs with N(mean, std) noise. Lower is better, >= 0."""
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    values = []
    before = _predicted(model, x, batch_size, return_nan_when_prediction_changes)
    for xp, ap in _draws(
        x, targets, explain_fn, nr_samples, noise="gaussian", low=perturb_mean,
        high=perturb_std, seed=seed, normalise=normalise, absolute=abs,
        batch_size=batch_size, quiet=quiet, desc="local Lipschitz",
    ):  # fmt: skip
        value = _norm(a - ap) / (_norm(x - xp) + 1e-10)
        if return_nan_when_prediction_changes:
            value = torch.where(_changed(model, before, xp, batch_size), torch.nan, value)
        values.append(value)
    stacked = torch.stack(values, 1)
    out = stacked.amax(1) if return_nan_when_prediction_changes else _nanmax(stacked)
    return out.to(x.dtype)


def _relative(t: torch.Tensor, ref: torch.Tensor, eps: float) -> torch.Tensor:
    return t / (ref + (ref == 0) * eps)


def _relative_stability(
    model, x, attributions, targets, explain_fn, *, kind: str, layers, nr_samples,
    lower_bound, upper_bound, eps_min, normalise, abs, return_nan_when_prediction_changes,
    seed, batch_size, quiet,
):  # fmt: skip
    x, a, targets = _prepare(model, x, attributions, targets, normalise, abs)
    if kind == "output":
        ref = predict(model, x, softmax=False, batch_size=batch_size)
    elif kind == "representation":
        ref = _representations(model, x, layers, batch_size)
    values = []
    before = _predicted(model, x, batch_size, return_nan_when_prediction_changes)
    for xp, ap in _draws(
        x, targets, explain_fn, nr_samples, noise="uniform", low=lower_bound,
        high=upper_bound, seed=seed, normalise=normalise, absolute=abs,
        batch_size=batch_size, quiet=quiet, desc=f"relative {kind} stability",
    ):  # fmt: skip
        numerator = _norm(_relative(a - ap, a, eps_min))
        if kind == "input":
            denominator = _norm(_relative(x - xp, x, eps_min))
        elif kind == "output":
            denominator = _norm(ref - predict(model, xp, softmax=False, batch_size=batch_size))
        else:
            rep = _representations(model, xp, layers, batch_size)
            denominator = _norm(_relative(ref - rep, ref, eps_min))
        denominator = denominator + (denominator == 0) * eps_min
        value = numerator / denominator
        if return_nan_when_prediction_changes:
            value = torch.where(_changed(model, before, xp, batch_size), torch.nan, value)
        values.append(value)
    return torch.stack(values, 1).amax(1).to(x.dtype)


def _representations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None, batch_size: int | None
) -> torch.Tensor:
    """``(N, D)`` the flattened outputs of the named ``layers`` (every module when ``None``, as
    Quantus), concatenated in module order."""
    modules = dict(model.named_modules())
    names = [name for name in modules if name] if not layers else list(layers)
    missing = [name for name in names if name not in modules]
    if missing:
        raise XaikitConfigError(f"no layer named {missing[0]!r} in the model")
    wanted = set(names)
    order = [name for name in modules if name in wanted]
    outs: list[torch.Tensor] = []
    rows = max(1, int(batch_size or DEFAULT_ROWS))
    for start in range(0, x.shape[0], rows):
        captured: dict[str, torch.Tensor] = {}
        hooks = [
            modules[name].register_forward_hook(
                lambda _m, _i, out, name=name, store=captured: store.__setitem__(name, out)
            )
            for name in order
        ]
        try:
            with borrowed(model), torch.no_grad():
                part = x[start : start + rows]
                model(part)
        finally:
            for hook in hooks:
                hook.remove()
        outs.append(torch.cat([captured[n].reshape(part.shape[0], -1) for n in order], 1))
    return torch.cat(outs)


def relative_input_stability(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ExplainFn,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float = 0.2,
    eps_min: float = 1e-6,
    normalise: bool = True,
    abs: bool = False,
    return_nan_when_prediction_changes: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Relative input stability (Agarwal et al., 2022, "Rethinking Stability for Attribution-based
    Explanations"): the largest ``||(a - a') / a|| / ||(x - x') / x||`` over inputs with
    U(0.02, 0.2) noise; NaN when a perturbation changes the prediction (Quantus's default).
    Lower is better, >= 0."""
    return _relative_stability(
        model, x, attributions, targets, explain_fn, kind="input", layers=None,
        nr_samples=nr_samples, lower_bound=lower_bound, upper_bound=upper_bound,
        eps_min=eps_min, normalise=normalise, abs=abs,
        return_nan_when_prediction_changes=return_nan_when_prediction_changes, seed=seed,
        batch_size=batch_size, quiet=quiet,
    )  # fmt: skip


def relative_output_stability(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ExplainFn,
    *,
    nr_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float = 0.2,
    eps_min: float = 1e-6,
    normalise: bool = True,
    abs: bool = False,
    return_nan_when_prediction_changes: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Relative output stability (Agarwal et al., 2022): the largest
    ``||(a - a') / a|| / ||logits(x) - logits(x')||`` over the noisy inputs of
    :func:`relative_input_stability`. Lower is better, >= 0."""
    return _relative_stability(
        model, x, attributions, targets, explain_fn, kind="output", layers=None,
        nr_samples=nr_samples, lower_bound=lower_bound, upper_bound=upper_bound,
        eps_min=eps_min, normalise=normalise, abs=abs,
        return_nan_when_prediction_changes=return_nan_when_prediction_changes, seed=seed,
        batch_size=batch_size, quiet=quiet,
    )  # fmt: skip


def relative_representation_stability(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    explain_fn: ExplainFn,
    *,
    layer_names: Sequence[str] | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float = 0.2,
    eps_min: float = 1e-6,
    normalise: bool = True,
    abs: bool = False,
    return_nan_when_prediction_changes: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Relative representation stability (Agarwal et al., 2022): the largest
    ``||(a - a') / a|| / ||(L(x) - L(x')) / L(x)||`` with ``L`` the concatenated outputs of
    ``layer_names`` (every module when ``None``). Lower is better, >= 0."""
    return _relative_stability(
        model, x, attributions, targets, explain_fn, kind="representation",
        layers=layer_names, nr_samples=nr_samples, lower_bound=lower_bound,
        upper_bound=upper_bound, eps_min=eps_min, normalise=normalise, abs=abs,
        return_nan_when_prediction_changes=return_nan_when_prediction_changes, seed=seed,
        batch_size=batch_size, quiet=quiet,
    )  # fmt: skip
