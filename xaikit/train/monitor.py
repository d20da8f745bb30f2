"""Track the best value of one logged quantity: it picks the best checkpoint and drives
early stopping (stop after ``patience`` epochs without an improvement of ``min_delta``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Monitor:
    """Best-so-far bookkeeping for ``name`` (``"val_accuracy"``, ``"val_loss"``, ...).

    ``mode`` is ``"min"`` for losses and ``"max"`` otherwise. ``patience=None`` never stops.
    """

    name: str
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    @classmethod
    def for_quantity(cls, name: str, patience: int | None, min_delta: float = 0.0) -> Monitor:
        """A monitor that minimizes names ending in ``loss`` and maximizes everything else."""
        return cls(name, "min" if name.endswith("loss") else "max", patience, min_delta)

    def update(self, value: float, epoch: int) -> bool:
        """Record ``epoch``'s value; return whether it is a new best. ``nan`` never is."""
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs in a row brought no improvement."""
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best", "best_epoch", "bad_epochs"):
            setattr(self, key, state[key])
