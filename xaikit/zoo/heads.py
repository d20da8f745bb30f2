"""Task heads: the one place that knows what a model's outputs mean.

A task decides the number of outputs, the loss, the probability function and the prediction
rule. Training, evaluation and explanation code ask the head instead of branching on the task:

==============  ==========  ====================  ===============  ==========================
task            outputs     loss                  probabilities    prediction
==============  ==========  ====================  ===============  ==========================
``multiclass``  C logits    cross-entropy         softmax          argmax, ``(N,)`` long
``multilabel``  C logits    BCE with logits       sigmoid each     prob >= threshold, ``(N, C)``
``binary``      1 logit     BCE with logits       sigmoid          prob >= threshold, ``(N,)``
==============  ==========  ====================  ===============  ==========================
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from xaikit.errors import XaikitConfigError


class Task:
    """The meaning of a classifier's outputs. Subclasses are stateless and registered in TASKS."""

    name: ClassVar[str]
    activation: ClassVar[str]

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, logits: torch.Tensor, thresholds: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


class MultiClassTask(Task):
    """One class per input: softmax over C logits, cross-entropy against an index target."""

    name = "multiclass"
    activation = "softmax"

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` logits, ``(N,)`` class indices (or ``(N, C)`` soft labels) -> scalar."""
        return F.cross_entropy(logits, target)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=-1)

    def predict(self, logits: torch.Tensor, thresholds: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C) -> (N,)`` long: the argmax class."""
        return logits.argmax(dim=-1)


class MultiLabelTask(Task):
    """Any number of labels per input: an independent sigmoid per logit."""

    name = "multilabel"
    activation = "sigmoid"

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` logits, ``(N, C)`` 0/1 (or soft) targets -> scalar mean BCE."""
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def predict(self, logits: torch.Tensor, thresholds: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C) -> (N, C)`` bool: labels whose probability reaches their threshold."""
        thresholds = _default_thresholds(logits, thresholds)
        return logits.sigmoid() >= thresholds


class BinaryTask(Task):
    """Two classes from one logit: ``p(positive) = sigmoid(logit)``."""

    name = "binary"
    activation = "sigmoid"

    def num_outputs(self, num_classes: int) -> int:
        if num_classes not in (1, 2):
            raise XaikitConfigError(
                f"a binary head has one output logit; num_classes must be 1 or 2, got {num_classes}"
            )
        return 1

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N, 1)`` logits, ``(N,)`` or ``(N, 1)`` 0/1 targets -> scalar mean BCE."""
        return F.binary_cross_entropy_with_logits(
            logits.reshape(-1), target.reshape(-1).to(logits.dtype)
        )

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def predict(self, logits: torch.Tensor, thresholds: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 1) -> (N,)`` long: 1 where the positive probability reaches the threshold."""
        thresholds = _default_thresholds(logits, thresholds)
        return (logits.sigmoid() >= thresholds).reshape(-1).long()


TASKS: dict[str, Task] = {t.name: t for t in (MultiClassTask(), MultiLabelTask(), BinaryTask())}


def get_task(task: str | Task | nn.Module) -> Task:
    """Return the :class:`Task` for a name, a task, or a model (its head's task).

    A model without an xaikit head (a torchvision classifier, a user's own network) is taken
    to be multi-class, the convention of every torchvision classifier.
    """
    if isinstance(task, Task):
        return task
    if isinstance(task, nn.Module):
        head = getattr(task, "head", None)
        return head.task if isinstance(head, ClassifierHead) else TASKS["multiclass"]
    try:
        return TASKS[task]
    except KeyError:
        raise XaikitConfigError(
            f"unknown task {task!r}; choose one of {', '.join(TASKS)}"
        ) from None


def _default_thresholds(logits: torch.Tensor, thresholds: torch.Tensor | None) -> torch.Tensor:
    if thresholds is None:
        return torch.full(logits.shape[-1:], 0.5, dtype=logits.dtype, device=logits.device)
    return thresholds.to(device=logits.device, dtype=logits.dtype)


class GlobalPool(nn.Module):
    """Pool every dimension after the channel dimension away: ``(N, C, *S) -> (N, C)``."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise XaikitConfigError(f"global pooling must be 'avg' or 'max', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(start_dim=2)
        return flat.mean(dim=2) if self.mode == "avg" else flat.amax(dim=2)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class ClassifierHead(nn.Module):
    """pool -> dropout -> linear, plus the task that gives the logits their meaning.

    ``(N, C, *S)`` features (or ``(N, T, H)`` for a recurrent encoder with a time pool)
    -> ``(N, outputs)`` logits, where ``outputs`` is ``num_classes`` (1 for ``binary``).

    The multi-label and binary prediction thresholds are a buffer, so they travel with the
    weights in a checkpoint.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        task: str = "multiclass",
        *,
        pool: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.task = get_task(task)
        self.num_classes = num_classes
        outputs = self.task.num_outputs(num_classes)
        self.pool = pool if pool is not None else GlobalPool("avg")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, outputs)
        self.register_buffer("thresholds", torch.full((outputs,), 0.5))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(features)))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.task.loss(logits, target)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self.task.probabilities(logits)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return self.task.predict(logits, self.thresholds)

    def extra_repr(self) -> str:
        return f"task={self.task.name!r}"
