"""Classification metrics, and which of them each task reports.

Counting metrics (accuracy, top-k, confusion matrix, F1) are exact torch ops on the
model's device; ranking metrics (average precision, ROC AUC) come from scikit-learn, whose
tie handling is the reference everyone compares against.

==============  =================================================  ============  ===========
task            evaluation metrics                                 main          train
==============  =================================================  ============  ===========
``multiclass``  accuracy, top-5 accuracy (more than 5 classes),    accuracy      accuracy
                per-class accuracy, confusion matrix
``multilabel``  micro / macro F1, mAP, subset accuracy,            map           f1_micro
                per-class AP
``binary``      accuracy, F1, AUROC                                accuracy      accuracy
==============  =================================================  ============  ===========

*main* picks the best checkpoint; *train* is accumulated on the device during training
from the predictions the loss already needed, without a host sync per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xaikit.errors import XaikitConfigError
from xaikit.zoo.heads import Task


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N,)`` predicted and ``(N,)`` true class indices -> ``(C, C)`` long counts.

    Row ``i`` is the true class, column ``j`` the predicted one (scikit-learn's convention).
    """
    index = target.long().reshape(-1) * num_classes + pred.long().reshape(-1)
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N,)`` predictions and ``(N,)`` targets -> scalar fraction that are equal."""
    return (pred.reshape(-1) == target.reshape(-1).to(pred.dtype)).double().mean()


def top_k_accuracy(scores: torch.Tensor, target: torch.Tensor, k: int = 5) -> torch.Tensor:
    """``(N, C)`` scores, ``(N,)`` class indices -> scalar fraction whose class is in the top k."""
    k = min(k, scores.shape[-1])
    top = scores.topk(k, dim=-1).indices
    return (top == target.long().reshape(-1, 1)).any(dim=-1).double().mean()


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """``(C, C)`` confusion matrix -> ``(C,)`` accuracy on each true class (its recall).

    A class without examples gets ``nan``.
    """
    support = confusion.sum(dim=1).double()
    return confusion.diagonal().double() / support


def f1_score(pred: torch.Tensor, target: torch.Tensor, average: str = "micro") -> torch.Tensor:
    """F1 of 0/1 predictions: ``(N, C)`` multi-label (or ``(N,)`` binary) -> scalar.

    ``average="micro"`` pools the counts of every label; ``"macro"`` averages the labels'
    F1 scores. A label with no positive prediction and no positive target scores 0, as in
    scikit-learn's default.
    """
    if average not in ("micro", "macro"):
        raise XaikitConfigError(f"F1 average must be 'micro' or 'macro', got {average!r}")
    pred = pred.bool().reshape(pred.shape[0], -1)
    truth = target.reshape(pred.shape).bool()
    dim = None if average == "micro" else 0
    tp = (pred & truth).sum(dim=dim).double()
    wrong = (pred ^ truth).sum(dim=dim).double()  # false positives + false negatives
    denominator = 2 * tp + wrong
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), 0.0)
    return f1.mean()


def subset_accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` 0/1 predictions and targets -> scalar fraction with every label right."""
    return (pred.bool() == target.bool()).all(dim=-1).double().mean()


def average_precision(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` scores, ``(N, C)`` 0/1 targets -> ``(C,)`` average precision per label.

    Uses :func:`sklearn.metrics.average_precision_score`; a label with no positive example
    has no defined AP and gets ``nan``.
    """
    from sklearn.metrics import average_precision_score  # 1 s to import: only when needed

    s = _numpy(scores).reshape(scores.shape[0], -1)
    t = _numpy(target).reshape(s.shape) >= 0.5
    values = [
        average_precision_score(t[:, c], s[:, c]) if t[:, c].any() else float("nan")
        for c in range(s.shape[1])
    ]
    return torch.tensor(values, dtype=torch.float64)


def mean_average_precision(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` scores, ``(N, C)`` 0/1 targets -> scalar mean AP over labels with a positive."""
    return average_precision(scores, target).nanmean()


def auroc(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N,)`` positive-class scores, ``(N,)`` 0/1 targets -> scalar ROC AUC.

    Uses :func:`sklearn.metrics.roc_auc_score`; ``nan`` when only one class is present.
    """
    from sklearn.metrics import roc_auc_score

    s = _numpy(scores).reshape(-1)
    t = _numpy(target).reshape(-1) >= 0.5
    if t.all() or not t.any():
        return torch.tensor(float("nan"), dtype=torch.float64)
    return torch.tensor(roc_auc_score(t, s), dtype=torch.float64)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def class_targets(target: torch.Tensor) -> torch.Tensor:
    """Multi-class targets as ``(N,)`` indices: soft ``(N, C)`` labels become their argmax."""
    return target.argmax(dim=-1) if target.dim() == 2 else target.long()


# --- running (on-device) training metrics ---------------------------------------------------


class RunningMetric:
    """A metric accumulated batch by batch on the device; :meth:`compute` syncs once."""

    name: str

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def totals(self) -> list[float]:
        """The counts behind the metric, as plain numbers (what ranks exchange)."""
        raise NotImplementedError

    def merge(self, totals: list[list[float]]) -> None:
        """Replace the counts by the sums of ``totals`` (every rank's :meth:`totals`), so
        :meth:`compute` gives the metric over the union of the ranks' batches, exactly."""
        raise NotImplementedError


class RunningAccuracy(RunningMetric):
    """Fraction of correct predictions; targets go through ``to_labels`` first."""

    name = "accuracy"

    def __init__(self, to_labels: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.to_labels = to_labels
        self.correct: torch.Tensor | int = 0
        self.total = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        labels = self.to_labels(target).reshape(-1)
        self.correct = self.correct + (pred.reshape(-1) == labels).sum()
        self.total += labels.numel()

    def compute(self) -> float:
        return float(self.correct) / max(self.total, 1)

    def totals(self) -> list[float]:
        return [float(self.correct), float(self.total)]

    def merge(self, totals: list[list[float]]) -> None:
        self.correct = int(sum(t[0] for t in totals))
        self.total = int(sum(t[1] for t in totals))


class RunningMicroF1(RunningMetric):
    """Micro-averaged F1 of multi-label predictions, from pooled TP / FP + FN counts."""

    name = "f1_micro"

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        truth = target.reshape(pred.shape) >= 0.5
        batch = torch.stack([(pred & truth).sum(), (pred ^ truth).sum()])
        self.counts = batch if self.counts is None else self.counts + batch

    def compute(self) -> float:
        if self.counts is None:
            return float("nan")
        tp, wrong = (float(v) for v in self.counts.tolist())
        return 2 * tp / (2 * tp + wrong) if tp + wrong > 0 else 0.0

    def totals(self) -> list[float]:
        return [] if self.counts is None else [float(v) for v in self.counts.tolist()]

    def merge(self, totals: list[list[float]]) -> None:
        present = [t for t in totals if t]
        if not present:
            self.counts = None
            return
        self.counts = torch.tensor(
            [sum(t[0] for t in present), sum(t[1] for t in present)], dtype=torch.float64
        )


# --- what each task reports -----------------------------------------------------------------


def _multiclass(
    scores: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    labels = class_targets(target)
    confusion = confusion_matrix(pred, labels, num_classes)
    out: dict[str, Any] = {"accuracy": accuracy(pred, labels)}
    if num_classes > 5:
        out["top5_accuracy"] = top_k_accuracy(scores, labels, 5)
    out["per_class_accuracy"] = per_class_accuracy(confusion)
    out["confusion_matrix"] = confusion
    return out


def _multilabel(
    scores: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    truth = target >= 0.5
    per_class = average_precision(scores, truth)
    return {
        "f1_micro": f1_score(pred, truth, "micro"),
        "f1_macro": f1_score(pred, truth, "macro"),
        "map": per_class.nanmean(),
        "subset_accuracy": subset_accuracy(pred, truth),
        "per_class_ap": per_class,
    }


def _binary(
    scores: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    truth = (target.reshape(-1) >= 0.5).long()
    return {
        "accuracy": accuracy(pred, truth),
        "f1": f1_score(pred, truth, "micro"),
        "auroc": auroc(scores, truth),
    }


@dataclass(frozen=True)
class TaskMetrics:
    """The metrics of one task.

    Attributes:
        main: the metric that is higher-is-better and picks the best checkpoint.
        compute: ``(scores, pred, target, num_classes) -> {name: tensor}`` where ``scores``
            are the head's probabilities and ``pred`` its predictions.
        running: a fresh :class:`RunningMetric` for the training set.
    """

    main: str
    compute: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], dict[str, Any]]
    running: Callable[[], RunningMetric]


TASK_METRICS: dict[str, TaskMetrics] = {
    "multiclass": TaskMetrics("accuracy", _multiclass, lambda: RunningAccuracy(class_targets)),
    "multilabel": TaskMetrics("map", _multilabel, RunningMicroF1),
    "binary": TaskMetrics(
        "accuracy", _binary, lambda: RunningAccuracy(lambda t: (t >= 0.5).long())
    ),
}


def metrics_for(task: Task) -> TaskMetrics:
    """The :class:`TaskMetrics` registered for ``task``."""
    try:
        return TASK_METRICS[task.name]
    except KeyError:
        raise XaikitConfigError(
            f"no metrics are registered for task {task.name!r}; known: {', '.join(TASK_METRICS)}"
        ) from None


def to_python(metrics: dict[str, Any]) -> dict[str, Any]:
    """Tensors to floats (0-d) and nested lists, so the result is JSON-ready."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.item() if value.dim() == 0 else value.tolist()
        out[name] = value
    return out
