"""The learning-rate range test (Smith, 2017, "Cyclical Learning Rates for Training Neural
Networks", section 3.3): train for a few hundred steps while the learning rate grows
exponentially, and read a good rate off the loss curve.

The model is borrowed: its weights, buffers, train/eval mode and device are restored after
the test, and so is the state of an optimizer passed in.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xaikit.errors import DataError, XaikitConfigError
from xaikit.io import atomic_path
from xaikit.train.loaders import TrainData, make_loader, split_batch
from xaikit.train.state import private_global_rng

if TYPE_CHECKING:
    from xaikit.train.trainer import Trainer


@dataclass
class LRFindResult:
    """What the range test measured.

    Attributes:
        lrs: ``(S,)`` learning rate of each step taken.
        losses: ``(S,)`` the smoothed loss after each step.
        raw_losses: ``(S,)`` the loss of each step's batch.
        suggestion: the suggested learning rate (by ``method``).
        suggestions: every rule's suggestion: ``"steepest"`` (where the smoothed loss falls
            fastest against log lr) and ``"min/10"`` (a tenth of the rate at the lowest loss).
        plot: the figure written, if any.
    """

    lrs: torch.Tensor
    losses: torch.Tensor
    raw_losses: torch.Tensor
    suggestion: float
    suggestions: dict[str, float] = field(default_factory=dict)
    plot: Path | None = None


def lr_find(
    model: nn.Module,
    data: TrainData,
    *,
    optimizer: str | Optimizer = "adam",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    method: str = "steepest",
    skip_start: int = 5,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
    batch_size: int = 64,
    grad_clip: float | None = None,
    device: str | torch.device = "auto",
    amp: bool = True,
    seed: int = 0,
    quiet: bool = False,
    plot: str | os.PathLike[str] | None = None,
) -> LRFindResult:
    """Run the range test: ``num_steps`` steps with ``lr`` going from ``start_lr`` to
    ``end_lr`` geometrically, stopping early once the smoothed loss exceeds
    ``diverge_factor`` times its minimum (or is not finite).

    Args:
        model: the classifier; its task (loss) comes from its head.
        data: a Dataset, DataLoader or ``(inputs, targets)`` pair; cycled if shorter than
            ``num_steps`` batches.
        optimizer: a name (``"sgd"``, ``"adam"``, ``"adamw"``) or an optimizer of
            ``model``'s parameters, whose state is restored afterwards.
        smoothing: ``beta`` of the bias-corrected exponential moving average of the loss.
        method: which rule gives ``suggestion``: ``"steepest"`` or ``"min/10"``.
        skip_start: steps ignored by the steepest-slope rule (the average is still noisy).
        plot: write the loss-vs-lr figure (PNG) here.
        momentum, nesterov, weight_decay, betas, batch_size, grad_clip, device, amp, seed,
        quiet: as for :class:`~xaikit.train.Trainer`.

    Returns:
        An :class:`LRFindResult`.
    """
    from xaikit.train.trainer import Trainer  # the trainer imports this module for its method

    if not 0 < start_lr < end_lr:
        raise XaikitConfigError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_steps < 2:
        raise XaikitConfigError(f"num_steps must be at least 2, got {num_steps}")
    if method not in ("steepest", "min/10"):
        raise XaikitConfigError(f"method must be 'steepest' or 'min/10', got {method!r}")
    if not 0 <= smoothing < 1:
        raise XaikitConfigError(f"smoothing must be in [0, 1), got {smoothing}")

    saved_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_mode = {m: m.training for m in model.modules()}
    saved_device = next(iter(model.parameters()), torch.empty(0)).device
    saved_optimizer = (
        copy.deepcopy(optimizer.state_dict()) if isinstance(optimizer, Optimizer) else None
    )
    try:
        trainer = Trainer(
            model,
            optimizer,
            lr=start_lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            betas=betas,
            batch_size=batch_size,
            grad_clip=grad_clip,
            device=device,
            amp=amp,
            seed=seed,
            quiet=True,
        )
        loader = make_loader(
            data,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        with private_global_rng(trainer.device):
            torch.default_generator.manual_seed(seed + 1)
            lrs, raw = _sweep(
                trainer, loader, start_lr, end_lr, num_steps, smoothing, diverge_factor, quiet
            )
    finally:
        model.to(saved_device)
        model.load_state_dict(saved_weights)
        for module, training in saved_mode.items():
            module.training = training
        if isinstance(optimizer, Optimizer) and saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    smoothed = _smooth(raw, smoothing)
    suggestions = _suggest(lrs, smoothed, skip_start)
    result = LRFindResult(
        lrs=torch.tensor(lrs, dtype=torch.float64),
        losses=torch.tensor(smoothed, dtype=torch.float64),
        raw_losses=torch.tensor(raw, dtype=torch.float64),
        suggestion=suggestions[method],
        suggestions=suggestions,
    )
    if plot is not None:
        result.plot = plot_lr_find(result, plot)
    return result


def _cycle(loader: DataLoader) -> Iterator[Any]:
    """The batches of ``loader``, epoch after epoch, for as long as they are asked for."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise DataError("the data for lr_find is empty (no batches)")


def _sweep(
    trainer: Trainer,
    loader: DataLoader,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    smoothing: float,
    diverge_factor: float,
    quiet: bool,
) -> tuple[list[float], list[float]]:
    """Take the steps; return the learning rates and raw losses up to divergence."""
    ratio = (end_lr / start_lr) ** (1.0 / (num_steps - 1))
    lrs: list[float] = []
    raw: list[float] = []
    average, best = 0.0, math.inf
    trainer.model.train()
    batches = _cycle(loader)
    with tqdm(total=num_steps, desc="lr_find", disable=quiet, leave=False, file=sys.stderr) as bar:
        for step in range(num_steps):
            batch = next(batches)
            lr = start_lr * ratio**step
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = split_batch(batch)
            loss, _ = trainer.train_step(
                inputs.to(trainer.device, non_blocking=True),
                targets.to(trainer.device, non_blocking=True),
            )
            # The range test needs every loss on the host to decide when to stop.
            value = float(loss)
            lrs.append(lr)
            raw.append(value)
            bar.update()
            average = smoothing * average + (1 - smoothing) * value
            smoothed = average / (1 - smoothing ** (step + 1))
            if not math.isfinite(smoothed) or smoothed > diverge_factor * best:
                break
            best = min(best, smoothed)
    return lrs, raw


def _smooth(raw: Sequence[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average of ``raw``."""
    out, average = [], 0.0
    for i, value in enumerate(raw):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta ** (i + 1)))
    return out


def _suggest(lrs: Sequence[float], smoothed: Sequence[float], skip_start: int) -> dict[str, float]:
    """The steepest-descent and min/10 rules, on the finite part of the curve."""
    losses = np.asarray(smoothed, dtype=np.float64)
    rates = np.asarray(lrs, dtype=np.float64)
    finite = np.isfinite(losses)
    if not finite.any():
        raise XaikitConfigError(
            "the loss was never finite during lr_find; lower start_lr or check the data"
        )
    lowest = int(np.nanargmin(np.where(finite, losses, np.nan)))
    suggestions = {"min/10": float(rates[lowest] / 10)}
    # Steepest descent: the most negative slope against log(lr), before the minimum.
    window = slice(min(skip_start, max(lowest - 1, 0)), lowest + 1)
    if window.stop - window.start >= 2:
        slopes = np.gradient(losses[window], np.log(rates[window]))
        suggestions["steepest"] = float(rates[window][int(np.argmin(slopes))])
    else:
        suggestions["steepest"] = suggestions["min/10"]
    return suggestions


def plot_lr_find(result: LRFindResult, path: str | os.PathLike[str]) -> Path:
    """Draw the smoothed (and raw) loss against the learning rate on a log axis, mark the
    suggestion, and save a PNG at ``path`` atomically."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    lrs = result.lrs.numpy()
    axes.plot(lrs, result.raw_losses.numpy(), color="0.75", linewidth=1, label="loss")
    axes.plot(lrs, result.losses.numpy(), color="C0", linewidth=2, label="smoothed loss")
    axes.axvline(
        result.suggestion, color="C3", linestyle="--", label=f"suggested lr {result.suggestion:.2g}"
    )
    axes.set_xscale("log")
    finite = result.losses[torch.isfinite(result.losses)]
    if finite.numel():
        low, high = float(finite.min()), float(finite[0])
        axes.set_ylim(low - 0.1 * abs(high - low), high + 0.5 * abs(high - low) + 1e-12)
    axes.set(xlabel="learning rate", ylabel="loss", title="learning-rate range test")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="best")
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return target
