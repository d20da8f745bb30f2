"""Track the best value of one logged quantity: it picks the best checkpoint and drives
early stopping (stop after ``patience`` epochs without an improvement of ``min_delta``).

The rule for "better" is strict: a later epoch replaces the best only if its value is
better by more than ``min_delta`` (lower for ``mode="min"``, higher for ``"max"``); an equal
value never does. One refinement for quantities that saturate, such as an accuracy on a
small validation set (every epoch at 1.0): on an **exact tie**, the ``tiebreak`` quantity
(the loss of the same split) decides, again strictly (lower wins). Without it the first
epoch to reach the ceiling would be kept however much the later ones improved.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Monitor:
    """Best-so-far bookkeeping for ``name`` (``"val_accuracy"``, ``"val_loss"``, ...).

    ``mode`` is ``"min"`` for losses and ``"max"`` otherwise. ``patience=None`` never stops.
    ``tiebreak`` names the (minimized) quantity that decides exact ties, or ``None``.
    """

    name: str
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    tiebreak: str | None = None
    best_tiebreak: float | None = None

    @classmethod
    def for_quantity(cls, name: str, patience: int | None, min_delta: float = 0.0) -> Monitor:
        """A monitor that minimizes names ending in ``loss`` and maximizes everything else;
        ties of a ``train_``/``val_`` metric are broken by that split's loss."""
        if name.endswith("loss"):
            return cls(name, "min", patience, min_delta)
        split = name.split("_", 1)[0]
        tiebreak = f"{split}_loss" if split in ("train", "val") and "_" in name else None
        return cls(name, "max", patience, min_delta, tiebreak=tiebreak)

    def update(self, value: float, epoch: int, tiebreak: float | None = None) -> bool:
        """Record ``epoch``'s value (and its ``tiebreak`` value); return whether it is a new
        best. ``nan`` never is, and neither is an equal value with an equal or no tiebreak."""
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if (
            not improved
            and value == self.best
            and tiebreak is not None
            and self.best_tiebreak is not None
        ):
            improved = tiebreak < self.best_tiebreak  # False for nan
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_tiebreak = tiebreak
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
        # Checkpoints written before tie-breaking existed have no tiebreak value.
        self.best_tiebreak = state.get("best_tiebreak")
