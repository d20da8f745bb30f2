"""Turn what the user passes (a Dataset, a DataLoader, or an ``(inputs, targets)`` pair of
tensors) into a DataLoader of ``(inputs, targets)`` batches, and pick the device."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from xaikit.errors import DataError, XaikitConfigError

TrainData = Dataset | DataLoader | tuple[torch.Tensor, torch.Tensor]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
    ``"mps"`` as given.

    Raises:
        XaikitConfigError: an unknown device, or one this machine does not have (CUDA or a
            CUDA index, MPS), in one line that names it.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise XaikitConfigError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise XaikitConfigError(
                f"device {str(device)!r} was asked for but CUDA is not available; "
                "use 'cpu' or 'auto'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise XaikitConfigError(
                f"device {str(device)!r} was asked for but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); use 'cuda:0' or 'auto'"
            )
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise XaikitConfigError(
                f"device {str(device)!r} was asked for but MPS (Apple GPU) is not available "
                "on this machine; use 'cpu' or 'auto'"
            )
    elif resolved.type != "cpu":
        raise XaikitConfigError(
            f"device {str(device)!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'"
        )
    return resolved


def collate_pairs(items: list[Any]) -> list[Any]:
    """Collate dataset items ``(input, target, ...)`` into ``[inputs, targets]``.

    Extra elements of an item (a ground-truth mask, an id) are dropped: training needs only
    the first two.
    """
    try:
        return default_collate([(item[0], item[1]) for item in items])
    except (TypeError, IndexError, KeyError):
        raise DataError(
            f"a training item must be a tuple (input, target, ...); got {type(items[0]).__name__}"
        ) from None


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(inputs, targets)`` of a batch that is a tuple or list ``(inputs, targets, ...)``."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise DataError(f"a batch must be a tuple (inputs, targets, ...); got {type(batch).__name__}")


def make_loader(
    data: TrainData,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader for ``data``; a DataLoader is returned unchanged (its own batch size,
    sampler and workers apply). ``generator`` drives shuffling and worker seeds."""
    if isinstance(data, DataLoader):
        return data
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        data = TensorDataset(*data)
    if not isinstance(data, Dataset):
        raise XaikitConfigError(
            "training data must be a torch Dataset, a DataLoader or a tuple (inputs, targets) "
            f"of tensors; got {type(data).__name__}"
        )
    if batch_size < 1:
        raise XaikitConfigError(f"batch_size must be at least 1, got {batch_size}")
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_pairs,
    )


def dataset_of(data: TrainData) -> Any:
    """The dataset behind ``data`` (for its ``classes`` / ``task`` / ``normalization``),
    looking through a DataLoader and through ``Subset`` s (``random_split``)."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset
