"""Turn what the user passes (a Dataset, a DataLoader, or an ``(inputs, targets)`` pair of
tensors) into a DataLoader of ``(inputs, targets)`` batches, and pick the device."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate
from torch.utils.data.distributed import DistributedSampler

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


def _as_dataset(data: TrainData) -> Dataset:
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        return TensorDataset(*data)
    if not isinstance(data, Dataset):
        raise XaikitConfigError(
            "training data must be a torch Dataset, a DataLoader or a tuple (inputs, targets) "
            f"of tensors; got {type(data).__name__}"
        )
    return data


def make_distributed_loader(
    data: TrainData,
    *,
    batch_size: int,
    rank: int,
    world: int,
    seed: int,
    generator: torch.Generator | None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The training loader of one rank of ``world``: a :class:`DistributedSampler` seeded with
    ``seed`` (call ``loader.sampler.set_epoch(e)`` before epoch ``e``) and ``batch_size``
    items per rank per step.

    Each epoch the sampler draws one permutation of the ``N`` items from ``seed + epoch``
    (the same on every rank), pads it to a multiple of ``world`` by repeating its first
    items, and gives rank ``r`` the items ``r, r + world, r + 2 world, ...`` of it. Step
    ``t`` of the run is then made of the items ``[t * world * batch_size, (t + 1) * world *
    batch_size)`` of the permutation, dealt over the ranks: the same items a single process
    with ``DistributedSampler(data, num_replicas=1, rank=0, seed=seed)`` and a batch of
    ``world * batch_size`` takes at step ``t``. ``generator`` seeds the loader's worker
    processes.

    A DataLoader is kept when its sampler is a :class:`DistributedSampler` (it is the
    caller's sharding); any other DataLoader is refused, since it would feed every rank the
    whole data set.
    """
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, DistributedSampler):
            return data
        raise XaikitConfigError(
            f"under torchrun ({world} processes) the training data must be a Dataset or a "
            "tuple (inputs, targets), which the trainer shards over the processes, or a "
            "DataLoader with a DistributedSampler; this DataLoader would give every process "
            "the whole data set"
        )
    if batch_size < 1:
        raise XaikitConfigError(f"batch_size must be at least 1, got {batch_size}")
    dataset = _as_dataset(data)
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_pairs,
    )


def make_sharded_eval_loader(
    data: TrainData,
    *,
    batch_size: int,
    group: Any,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, int]:
    """This rank's part of an evaluation set and the number of batches of the whole set.

    The set is cut into batches of ``batch_size`` consecutive items, the batches a single
    process makes, and batch ``c`` goes to rank ``c % world`` (:meth:`Group.shard
    <xaikit.distributed.Group.shard>`), so every batch, and every logit, is bit for bit the
    one a single process computes. ``(loader, n_batches)``.
    """
    if batch_size < 1:
        raise XaikitConfigError(f"batch_size must be at least 1, got {batch_size}")
    dataset = _as_dataset(data)
    n = len(dataset)  # type: ignore[arg-type]
    mine = Subset(dataset, group.shard(n, batch_size))
    loader = DataLoader(
        mine,
        batch_size=batch_size,
        shuffle=False,
        generator=torch.Generator(),
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_pairs,
    )
    return loader, -(-n // batch_size)


def dataset_of(data: TrainData) -> Any:
    """The dataset behind ``data`` (for its ``classes`` / ``task`` / ``normalization``),
    looking through a DataLoader and through ``Subset`` s (``random_split``)."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset
