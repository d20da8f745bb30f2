"""Optimizers and learning-rate schedules by name, so a training recipe is plain data.

=============  ==========================================================================
optimizer      ``torch.optim`` class and the recipe options it uses
=============  ==========================================================================
``sgd``        :class:`~torch.optim.SGD`: ``momentum``, ``nesterov``, ``weight_decay``
``adam``       :class:`~torch.optim.Adam`: ``betas``, ``weight_decay`` (L2, added to grad)
``adamw``      :class:`~torch.optim.AdamW`: ``betas``, ``weight_decay`` (decoupled,
               Loshchilov & Hutter, 2019)
=============  ==========================================================================

Every schedule is stepped once per optimizer step, so it is exact for any number of batches
per epoch and resumes exactly from its state dict:

=============  ==========================================================================
scheduler      learning rate at step ``t`` of ``T = epochs * steps_per_epoch``
=============  ==========================================================================
``None``       constant ``lr``
``step``       ``lr * gamma ** (epoch // step_size)``, i.e. decays at epoch boundaries
``cosine``     ``min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2`` (Loshchilov & Hutter,
               2017, without restarts)
``onecycle``   warm up from ``lr / 25`` to ``lr`` over ``pct_start * T`` steps, then cosine
               down to ``lr / 1e4`` (Smith & Topin, 2019)
=============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from xaikit.errors import XaikitConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("step", "cosine", "onecycle")
# Schedules whose shape depends on the total number of steps: resuming them needs the
# same number of epochs and batches per epoch as the run that was saved.
LENGTH_DEPENDENT_SCHEDULERS = frozenset({"cosine", "onecycle"})


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> Optimizer:
    """Build the optimizer called ``name`` (``"sgd"``, ``"adam"`` or ``"adamw"``).

    Options that an optimizer does not have (``momentum`` for Adam, ``betas`` for SGD) are
    ignored, so one recipe can switch optimizers by name alone.
    """
    key = name.lower()
    if lr <= 0:
        raise XaikitConfigError(f"the learning rate must be positive, got lr={lr}")
    if weight_decay < 0:
        raise XaikitConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    if key == "sgd":
        if nesterov and momentum <= 0:
            raise XaikitConfigError("Nesterov momentum needs momentum > 0 (e.g. momentum=0.9)")
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    if key in ("adam", "adamw"):
        cls = torch.optim.Adam if key == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    raise XaikitConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_scheduler(
    name: str | None,
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    step_size: int = 10,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    pct_start: float = 0.3,
) -> LRScheduler | None:
    """Build the per-step schedule ``name`` for ``optimizer`` (``None`` keeps ``lr`` constant).

    The peak (``onecycle``) or starting (``step``, ``cosine``) learning rate is the one the
    optimizer was built with. ``step_size`` counts epochs.
    """
    if name is None:
        return None
    key = name.lower()
    total = epochs * steps_per_epoch
    if key == "step":
        if step_size < 1:
            raise XaikitConfigError(f"step_size must be at least 1 epoch, got {step_size}")
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=step_size * steps_per_epoch, gamma=gamma
        )
    if key == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(total, 1), eta_min=min_lr
        )
    if key == "onecycle":
        if not 0.0 < pct_start < 1.0:
            raise XaikitConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        if total < 2:
            raise XaikitConfigError("the one-cycle schedule needs at least 2 steps in all")
        lrs = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lrs,
            total_steps=total,
            pct_start=pct_start,
            # Momentum cycling would overwrite the recipe's momentum / betas; keep them.
            cycle_momentum=False,
        )
    raise XaikitConfigError(
        f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)} or none"
    )
