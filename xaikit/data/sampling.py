"""Class-balanced, seeded subsets: which items a report or an evaluation looks at.

Taking the first ``n`` items of a test split shows one class only when the split is sorted
by class (an image folder lists ``cat/`` before ``rocket/``). :func:`balanced_indices` takes
the same number of items from every class instead (as near as the class sizes allow), chosen
at random with a seed, so the same call always gives the same subset.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import Any

__all__ = ["balanced_indices", "balanced_order", "dataset_targets"]


def _key(target: Any) -> Hashable:
    """A hashable class key: an int label, or the tuple of a multi-label row."""
    if hasattr(target, "tolist"):
        target = target.tolist()
    if isinstance(target, list):
        return tuple(_key(part) for part in target)
    return target


def balanced_order(targets: Sequence[Any] | Any, seed: int = 0) -> list[int]:
    """Every index of ``targets`` in a class-balanced, seeded order.

    Classes take turns, in an order drawn with ``seed``, each giving its next item from a
    seeded shuffle of its own items; a class that runs out drops out of the turns. So every
    prefix of the order is as balanced as the class sizes allow: the first ``n`` are
    :func:`balanced_indices` ``(targets, n, seed)``.
    """
    if hasattr(targets, "tolist"):
        targets = targets.tolist()
    groups: dict[Hashable, list[int]] = {}
    for index, target in enumerate(targets):
        groups.setdefault(_key(target), []).append(index)
    rng = random.Random(seed)
    keys = sorted(groups, key=repr)
    rng.shuffle(keys)
    queues = []
    for key in keys:
        members = groups[key][:]
        rng.shuffle(members)
        queues.append(members)
    longest = max((len(q) for q in queues), default=0)
    return [q[depth] for depth in range(longest) for q in queues if depth < len(q)]


def balanced_indices(targets: Sequence[Any] | Any, n: int, seed: int = 0) -> list[int]:
    """``n`` indices into ``targets`` with each class represented about equally, sorted.

    A class smaller than its share gives all it has and the others fill the rest (see
    :func:`balanced_order`, whose first ``n`` these are). With ``n`` at least
    ``len(targets)`` every index is returned.

    Args:
        targets: one target per item: int labels, or rows of a multi-label matrix (a row is
            its own class: each distinct combination of labels); a list, tensor or array.
        n: how many indices to return.
        seed: the seed of the choice: the same seed gives the same indices.

    Returns:
        the chosen indices, sorted ascending.
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    return sorted(balanced_order(targets, seed)[:n])


def dataset_targets(dataset: Any) -> list[Any] | None:
    """The targets of ``dataset`` without loading its inputs: its ``targets`` attribute
    (looking through ``torch.utils.data.Subset``), else ``None``."""
    indices: list[int] | None = None
    while hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        inner = [int(i) for i in dataset.indices]
        indices = inner if indices is None else [inner[i] for i in indices]
        dataset = dataset.dataset
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    if hasattr(targets, "tolist"):
        targets = targets.tolist()
    targets = list(targets)
    return targets if indices is None else [targets[i] for i in indices]
