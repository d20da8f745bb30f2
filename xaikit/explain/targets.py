"""The one target resolver: what to explain, for every input, as an ``(N, K)`` index tensor.

Accepted forms (``N`` inputs, ``C`` model outputs):

============================  ================================================  =========
target                        meaning                                           result
============================  ================================================  =========
``"predicted"`` / ``None``    the top class (argmax of the logits; the          one
                              positive logit of a binary head)
int, or a label name          the same class for every input                    one
``(N,)`` tensor, list of N    one class (index or label name) per input         one
``"positive"``                every label the head predicts (a multi-label     many
                              head's thresholds; the argmax for multi-class;
                              the positive logit where a binary head says 1)
``"all"``                     every output                                      many
``(N, K)`` integer tensor     K classes per input                               many
list of N lists               a (ragged) list of classes per input              many
``(N, C)`` bool/float tensor  a multi-hot mask: its non-zero entries            many
callable                      ``f(logits (N, C))`` returning any form above     as it
============================  ================================================  =========

"one" forms give explanations shaped ``(N, *S)``; "many" forms ``(N, K, *S)``. Ragged
requests (``"positive"``, multi-hot masks, lists of lists) are padded to ``K`` = the largest
count; padding has index ``-1`` and ``valid == False`` (its maps are zeros).

Label names are looked up in ``class_names``; the keywords above win over a class that
happens to be named ``"all"``. ``class_names`` is checked by
:func:`xaikit.names.check_class_names`: numbers are read as their text (``1`` -> ``"1"``);
``None``, dicts and other objects, and names over 1,000 characters, are refused.
A binary head has one output (the positive logit, index 0).
Everything is validated before any backward pass; a problem raises
:class:`~xaikit.errors.XaikitConfigError` naming the expected shape.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from xaikit.errors import XaikitConfigError
from xaikit.names import MAX_CLASS_NAME, check_class_names, short_label
from xaikit.zoo.heads import Task

KEYWORDS = ("predicted", "positive", "all")


@dataclass(frozen=True)
class Targets:
    """Resolved targets.

    Attributes:
        indices: ``(N, K)`` long class indices; ``-1`` marks padding.
        valid: ``(N, K)`` bool, ``False`` for padding.
        single: one target per input was asked for (results drop the ``K`` axis).
        padded: some entries are padding (``valid`` is not all ``True``); known without
            reading ``valid``, so the common case needs no host sync.
    """

    indices: torch.Tensor
    valid: torch.Tensor
    single: bool
    padded: bool = False

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    def gather_index(self) -> torch.Tensor:
        """``(N, K)`` indices safe for ``gather`` (padding points at output 0)."""
        return self.indices.clamp_min(0) if self.padded else self.indices

    def names(self, class_names: Sequence[str] | None) -> list[list[str | None]] | None:
        """Label names per input and target (``None`` for padding), if names are known."""
        if class_names is None:
            return None
        return [[class_names[i] if i >= 0 else None for i in row] for row in self.indices.tolist()]


def resolve_targets(
    target: Any,
    logits: torch.Tensor,
    *,
    task: Task,
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None,
) -> Targets:
    """Resolve ``target`` against the ``(N, C)`` logits of the batch being explained.

    Args:
        target: any form of the module table.
        logits: ``(N, C)`` raw model outputs (for ``"predicted"``, ``"positive"``, callables).
        task: the head's task (``binary`` heads have one output, the positive logit).
        predict: the head's prediction rule ``(N, C) -> (N,)`` or ``(N, C)`` bool; defaults
            to ``task.predict`` with 0.5 thresholds.
        class_names: label names, for targets given by name.

    Returns:
        :class:`Targets` with ``(N, K)`` indices on the logits' device.

    Raises:
        XaikitConfigError: unknown names, indices out of ``[0, C)``, wrong shapes.
    """
    logits = logits.detach()
    resolver = _Resolver(logits, task, predict or task.predict, class_names)
    return resolver.resolve(target, from_callable=False)


class _Resolver:
    def __init__(
        self,
        logits: torch.Tensor,
        task: Task,
        predict: Callable[[torch.Tensor], torch.Tensor],
        class_names: Sequence[str] | None,
    ) -> None:
        if logits.dim() != 2:
            raise XaikitConfigError(f"logits must be (N, C); got shape {tuple(logits.shape)}")
        self.logits = logits
        self.n, self.c = logits.shape
        self.task = task
        self.predict = predict
        self.class_names = check_class_names(class_names)
        self.device = logits.device

    # -- public entry ---------------------------------------------------------------------
    def resolve(self, target: Any, *, from_callable: bool) -> Targets:
        if target is None:
            target = "predicted"
        if isinstance(target, str):
            return self._keyword_or_name(target)
        if isinstance(target, bool):
            raise self._error(f"target={target!r} is a bool, not a class")
        if isinstance(target, int):
            return self._single(torch.full((self.n,), self._check_int(target), device=self.device))
        if callable(target) and not isinstance(target, torch.Tensor):
            if from_callable:
                raise self._error("a target callable returned another callable")
            return self.resolve(target(self.logits), from_callable=True)
        if not isinstance(target, (torch.Tensor, list, tuple)) and hasattr(target, "__array__"):
            target = torch.as_tensor(target)
        if isinstance(target, torch.Tensor):
            return self._tensor(target)
        if isinstance(target, (list, tuple)):
            return self._sequence(target)
        raise self._error(f"target of type {type(target).__name__} is not understood")

    # -- forms ------------------------------------------------------------------------------
    def _keyword_or_name(self, text: str) -> Targets:
        if text == "predicted":
            if self.task.name == "binary":
                return self._single(torch.zeros(self.n, dtype=torch.long, device=self.device))
            return self._single(self.logits.argmax(dim=1))
        if text == "positive":
            return self._multi_hot(self._positive_mask())
        if text == "all":
            row = torch.arange(self.c, device=self.device)
            return Targets(row.expand(self.n, self.c).clone(), self._ones(self.c), single=False)
        index = self._name_to_index(text)
        return self._single(torch.full((self.n,), index, device=self.device))

    def _positive_mask(self) -> torch.Tensor:
        predicted = self.predict(self.logits)
        if predicted.dtype == torch.bool and predicted.shape == (self.n, self.c):
            return predicted
        if self.task.name == "binary":
            return predicted.reshape(self.n, 1).bool()
        if predicted.shape == (self.n,):
            mask = torch.zeros(self.n, self.c, dtype=torch.bool, device=self.device)
            return mask.scatter_(1, predicted.long().reshape(self.n, 1), True)
        raise XaikitConfigError(
            f"the head's predict() returned shape {tuple(predicted.shape)}; expected "
            f"({self.n},) class indices or a ({self.n}, {self.c}) bool mask"
        )

    def _tensor(self, target: torch.Tensor) -> Targets:
        target = target.to(self.device)
        if target.dim() == 0:
            if target.is_floating_point() or target.dtype == torch.bool:
                raise self._error(f"a 0-d {target.dtype} tensor is not a class index")
            return self.resolve(int(target), from_callable=False)
        if target.dtype == torch.bool or target.is_floating_point():
            if target.shape != (self.n, self.c):
                raise self._error(
                    f"a {target.dtype} target tensor is read as a multi-hot mask and must be "
                    f"({self.n}, {self.c}); got {tuple(target.shape)}"
                )
            if target.is_floating_point() and not torch.isfinite(target).all():
                raise self._error("the multi-hot target mask contains NaN or inf")
            return self._multi_hot(target != 0)
        if target.dim() == 1:
            if target.shape[0] != self.n:
                raise self._error(
                    f"a 1-D target tensor needs one class per input, shape ({self.n},); got "
                    f"{tuple(target.shape)}"
                )
            return self._single(self._check_tensor(target))
        if target.dim() == 2:
            if target.shape[0] != self.n:
                raise self._error(
                    f"a 2-D target tensor of class indices must be ({self.n}, K); got "
                    f"{tuple(target.shape)}"
                )
            indices = self._check_tensor(target)
            return Targets(indices, self._ones(indices.shape[1]), single=False)
        raise self._error(f"a target tensor of shape {tuple(target.shape)} is not understood")

    def _sequence(self, target: Sequence[Any]) -> Targets:
        if len(target) != self.n:
            raise self._error(
                f"a list target needs one entry per input ({self.n}); got {len(target)}"
            )
        nested = [isinstance(t, (list, tuple, torch.Tensor)) for t in target]
        if not any(nested):
            values = [self._entry(t) for t in target]
            return self._single(torch.tensor(values, dtype=torch.long, device=self.device))
        rows: list[list[int]] = []
        for entry in target:
            if isinstance(entry, torch.Tensor):
                entry = entry.reshape(-1).tolist()
            elif not isinstance(entry, (list, tuple)):
                entry = [entry]
            rows.append([self._entry(t) for t in entry])
        return self._ragged(rows)

    # -- helpers ------------------------------------------------------------------------------
    def _entry(self, value: Any) -> int:
        if isinstance(value, str):
            return self._name_to_index(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(f"list entries must be class indices or label names; got {value!r}")
        return self._check_int(value)

    def _single(self, indices: torch.Tensor) -> Targets:
        indices = indices.to(device=self.device, dtype=torch.long).reshape(self.n, 1)
        return Targets(indices, self._ones(1), single=True)

    def _ones(self, k: int) -> torch.Tensor:
        return torch.ones(self.n, k, dtype=torch.bool, device=self.device)

    def _multi_hot(self, mask: torch.Tensor) -> Targets:
        mask = mask.to(self.device).bool()
        counts = mask.sum(dim=1)
        k = int(counts.max()) if self.n else 0
        # Stable sort puts each row's selected labels first, in increasing index order.
        order = torch.sort(mask.to(torch.uint8), dim=1, descending=True, stable=True).indices
        indices = order[:, :k]
        valid = torch.arange(k, device=self.device).unsqueeze(0) < counts.unsqueeze(1)
        padded = bool((counts < k).any())
        return Targets(indices.masked_fill(~valid, -1), valid, single=False, padded=padded)

    def _ragged(self, rows: list[list[int]]) -> Targets:
        k = max((len(r) for r in rows), default=0)
        rows_k = [r + [-1] * (k - len(r)) for r in rows]
        indices = torch.tensor(rows_k, dtype=torch.long, device=self.device).reshape(self.n, k)
        padded = any(len(r) < k for r in rows)
        return Targets(indices, indices >= 0, single=False, padded=padded)

    def _check_int(self, value: int) -> int:
        if not 0 <= value < self.c:
            raise self._range_error(value)
        return value

    def _check_tensor(self, indices: torch.Tensor) -> torch.Tensor:
        indices = indices.long()
        bad = (indices < 0) | (indices >= self.c)
        if bad.any():
            raise self._range_error(int(indices[bad][0]))
        return indices

    def _range_error(self, value: int) -> XaikitConfigError:
        if self.task.name == "binary":
            return XaikitConfigError(
                f"target {value} is out of range: a binary head has one output, the positive "
                "logit (index 0); use target=0 or 'predicted'"
            )
        return XaikitConfigError(
            f"target {value} is out of range for a model with {self.c} outputs "
            f"(valid class indices: 0..{self.c - 1})"
        )

    def _name_to_index(self, name: str) -> int:
        if self.class_names is None:
            raise XaikitConfigError(
                f"target {name!r} is not one of {', '.join(KEYWORDS)} and no class names are "
                "known to look it up; pass class_names=[...] (the model card's class_names)"
            )
        if name in self.class_names:
            return self._check_int(self.class_names.index(name))
        close = (  # difflib is quadratic in the lengths: only for names of sensible size
            difflib.get_close_matches(name, self.class_names, n=3, cutoff=0.5)
            if len(name) <= MAX_CLASS_NAME
            else []
        )
        hint = f"; did you mean {', '.join(repr(short_label(c)) for c in close)}?" if close else ""
        shown = ", ".join(short_label(c) for c in self.class_names[:12])
        raise XaikitConfigError(
            f"unknown label name {short_label(name)!r} (class names: {shown}"
            f"{', ...' if len(self.class_names) > 12 else ''}){hint}"
        )

    def _error(self, problem: str) -> XaikitConfigError:
        return XaikitConfigError(
            f"{problem}. For {self.n} inputs and {self.c} outputs a target is an int or label "
            f"name, 'predicted', 'positive' or 'all', a ({self.n},) or ({self.n}, K) tensor of "
            f"class indices, a ({self.n}, {self.c}) multi-hot mask, a list of {self.n} classes "
            f"or lists, or a callable on the ({self.n}, {self.c}) logits"
        )
