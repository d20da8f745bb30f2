"""The data set classes every loader returns: a torch ``Dataset`` that describes itself.

Every data set from :func:`xaikit.data.load` has

- ``classes``: class names, index ``k`` is output ``k`` of a model;
- ``task``: ``"multiclass"`` (targets are int64 scalars) or ``"multilabel"`` (targets are
  float32 ``(K,)`` 0/1 vectors);
- ``input_kind``: ``"image"`` ``(C, H, W)``, ``"signal"`` ``(C, L)`` or ``"sequence"`` ``(T, F)``;
- ``normalization``: the per-channel ``{"mean": [...], "std": [...]}`` already applied to the
  inputs, or ``None``. Items are model-ready, like torchvision data with a ``Normalize``
  transform; ``raw_input(i)`` (or :func:`xaikit.data.denormalize`) gives the ``[0, 1]`` pixels
  back for display. A model trained on a data set records it in its card, and the image-file
  loader applies the card's normalization, so files and data set items agree;
- ``targets``: all targets at once, ``(N,)`` int64 or ``(N, K)`` float32;
- ``has_ground_truth``: whether items are ``(input, target, mask)`` rather than ``(input, target)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from xaikit.data.normalization import normalize
from xaikit.errors import DataError

TASKS = ("multiclass", "multilabel")
INPUT_KINDS = ("image", "signal", "sequence")


class XaiDataset(Dataset):
    """Base class: the attributes above, ``len()`` and a readable ``repr``."""

    def __init__(
        self,
        *,
        name: str,
        split: str,
        classes: list[str],
        task: str,
        input_kind: str,
        targets: torch.Tensor,
        normalization: dict[str, list[float]] | None = None,
        has_ground_truth: bool = False,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
        self.name = name
        self.split = split
        self.classes = list(classes)
        self.task = task
        self.input_kind = input_kind
        self.normalization = normalization
        self.has_ground_truth = has_ground_truth
        if task == "multiclass":
            self.targets = targets.to(torch.int64)
        else:
            self.targets = targets.to(torch.float32)

    @property
    def num_classes(self) -> int:
        """``len(self.classes)``."""
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def _check_index(self, index: int) -> int:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {self.name!r} with {n} items")
        return index % n

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"task={self.task!r}, input_kind={self.input_kind!r}, classes={self.classes})"
        )


class TensorDataset(XaiDataset):
    """A data set held in memory as tensors.

    ``inputs`` is ``(N, ...)``; an integer tensor is stored compactly and returned as float32
    multiplied by ``scale`` (e.g. uint8 pixels with ``scale=1/255``). ``ground_truth``
    ``(N, ...)``, when given, is returned as float32 as the third element of each item.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        ground_truth: torch.Tensor | None = None,
        *,
        scale: float | None = None,
        **info: Any,
    ) -> None:
        super().__init__(targets=targets, has_ground_truth=ground_truth is not None, **info)
        if inputs.shape[0] != len(self) or (
            ground_truth is not None and ground_truth.shape[0] != len(self)
        ):
            raise DataError(
                f"data set {info.get('name')!r} has {inputs.shape[0]} inputs but "
                f"{len(self)} targets"
            )
        self.inputs = inputs
        self.ground_truth = ground_truth
        self.scale = scale

    def raw_input(self, index: int) -> torch.Tensor:
        """Input ``index`` as float32 before normalization (``[0, 1]`` pixels for images)."""
        x = self.inputs[self._check_index(index)].to(torch.float32)
        return x * self.scale if self.scale is not None else x

    def input(self, index: int) -> torch.Tensor:
        """Input ``index`` as the model sees it: normalized when ``normalization`` is set."""
        x = self.raw_input(index)
        if self.normalization is None:
            return x
        channel_dim = -1 if self.input_kind == "sequence" else 0
        return normalize(x, self.normalization, channel_dim=channel_dim)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        index = self._check_index(index)
        item: tuple[torch.Tensor, ...] = (self.input(index), self.targets[index])
        if self.ground_truth is not None:
            item += (self.ground_truth[index].to(torch.float32),)
        return item
