"""Adapters for torchvision's ``mnist``, ``fashion-mnist`` and ``cifar10`` data sets.

Files are looked for in ``root`` (default: ``$XAIKIT_DATA``, else ``~/.cache/xaikit/datasets``)
in torchvision's layout; nothing is downloaded unless ``download=True``. Missing files, a failed
download (e.g. offline) and corrupt files raise :class:`~xaikit.errors.DataError`. The pixels are
taken from torchvision's decoded arrays and returned as float32 in ``[0, 1]``: ``(1, 28, 28)``
for the MNISTs, ``(3, 32, 32)`` for CIFAR-10; ``normalization`` holds the usual training-set
statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xaikit.data.base import TensorDataset
from xaikit.errors import DataError


@dataclass(frozen=True)
class _VisionSet:
    torchvision_class: str
    classes: tuple[str, ...] | None  # None: torchvision's own class names
    mean: tuple[float, ...]
    std: tuple[float, ...]


VISION_SETS: dict[str, _VisionSet] = {
    "mnist": _VisionSet("MNIST", tuple(str(d) for d in range(10)), (0.1307,), (0.3081,)),
    "fashion-mnist": _VisionSet("FashionMNIST", None, (0.2860,), (0.3530,)),
    "cifar10": _VisionSet("CIFAR10", None, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def default_root() -> Path:
    """``$XAIKIT_DATA`` if set, else ``~/.cache/xaikit/datasets``."""
    return Path(os.environ.get("XAIKIT_DATA", "~/.cache/xaikit/datasets")).expanduser()


def load_vision(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> TensorDataset:
    """``mnist`` / ``fashion-mnist`` / ``cifar10`` from ``root``: ``(C, H, W)`` in ``[0, 1]``."""
    import torchvision.datasets

    spec = VISION_SETS[name]
    folder = default_root() if root is None else Path(root).expanduser()
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        dataset = dataset_class(root=str(folder), train=split == "train", download=download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
        if not download:
            raise DataError(
                f"the {name} files are not in {folder} (or are corrupt); pass download=True "
                f"to download them there, or root=... to point at a folder that has them"
            ) from None
        raise DataError(f"could not download {name} to {folder}: {error}") from None
    data = dataset.data
    pixels = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
    pixels = pixels[:, None] if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2)
    classes = list(spec.classes) if spec.classes is not None else list(dataset.classes)
    return TensorDataset(
        pixels.contiguous(),
        torch.as_tensor(dataset.targets, dtype=torch.int64),
        scale=1.0 / 255.0,
        name=name,
        split=split,
        classes=classes,
        task="multiclass",
        input_kind="image",
        normalization={"mean": list(spec.mean), "std": list(spec.std)},
    )
