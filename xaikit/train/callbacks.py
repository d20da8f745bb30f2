"""Callbacks: the extension point of :class:`~xaikit.train.Trainer` (Keras / Lightning style).

A callback overrides any of the methods below; the trainer calls them in the order the
callbacks were given. Epochs and steps are counted from 1. A callback can end training with
``trainer.stop()``. Checkpointing, early stopping and the progress bar are built into the
trainer, so a callback sees an epoch's record after its checkpoint is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from xaikit.train.trainer import Trainer


class Callback:
    """Base class with a no-op for every event."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch of a :meth:`~xaikit.train.Trainer.fit` call."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the first batch of ``epoch``."""

    def on_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        """After optimizer step ``step`` of the epoch. ``loss`` is a 0-d tensor on the device:
        calling ``.item()`` on it every step costs a host sync on CUDA."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        """After ``epoch`` was evaluated, recorded in the history and checkpointed.

        ``logs`` is the epoch's history record (``train_loss``, ``val_accuracy``, ...).
        """

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch (also after an early stop or ``trainer.stop()``)."""


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda t, e, logs: ...)``."""

    def __init__(self, **events: Callable[..., None]) -> None:
        unknown = sorted(set(events) - {n for n in dir(Callback) if n.startswith("on_")})
        if unknown:
            raise TypeError(f"LambdaCallback got unknown events: {', '.join(unknown)}")
        for name, function in events.items():
            setattr(self, name, function)
