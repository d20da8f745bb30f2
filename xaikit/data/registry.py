"""``load(name, split, **options)``: every data set by name, and ``list_datasets()``.

Names: ``shapes``, ``shapes-multilabel``, ``digits``, ``mnist1d``, ``recall`` (generated or
bundled, offline), ``mnist``, ``fashion-mnist``, ``cifar10`` (torchvision files), and the
patterns ``imagefolder:<dir>`` and ``idx:<dir>`` for a user's own files. Each loader's
keyword-only parameters are its options; an unknown name, split or option raises
:class:`~xaikit.errors.DataError` listing the valid ones. Every data set has a ``train`` and a
``test`` split; ``imagefolder:<dir>`` also has ``val`` (see :func:`dataset_splits`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from xaikit.data.base import XaiDataset
from xaikit.data.digits import load_digits_dataset
from xaikit.data.folders import FOLDER_SPLITS, load_idx_folder, load_image_folder
from xaikit.data.mnist1d import load_mnist1d
from xaikit.data.sequences import load_recall
from xaikit.data.shapes import load_shapes, load_shapes_multilabel
from xaikit.data.vision import VISION_SETS, load_vision
from xaikit.errors import DataError

SPLITS = ("train", "test")
#: Data sets with more splits than :data:`SPLITS`: an image folder is split three ways so a
#: trainer picks its epoch on ``val`` and reports ``test`` (see :mod:`xaikit.data.folders`).
_SPLITS_OF_PATTERN = {"imagefolder": FOLDER_SPLITS}
_INT_OPTIONS = ("n", "size", "seed", "length", "num_classes", "channels")
_FLOAT_OPTIONS = ("test_fraction",)


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: its loader ``(split, **options) -> XaiDataset`` and a summary."""

    name: str
    loader: Callable[..., XaiDataset]
    description: str


_REGISTRY: dict[str, DatasetInfo] = {}
_PATTERNS: dict[str, DatasetInfo] = {}  # "imagefolder" -> loader(root, split, **options)


def register_dataset(name: str, loader: Callable[..., XaiDataset], description: str) -> None:
    """Add a data set under ``name`` (which must be new)."""
    if name in _REGISTRY:
        raise DataError(f"a data set named {name!r} is already registered")
    _REGISTRY[name] = DatasetInfo(name, loader, description)


register_dataset(
    "shapes", load_shapes, "synthetic RGB shapes, one per image, with ground-truth masks"
)
register_dataset(
    "shapes-multilabel",
    load_shapes_multilabel,
    "synthetic RGB images with 1-3 shapes, label vectors and a mask per shape",
)
register_dataset("digits", load_digits_dataset, "scikit-learn's real 8x8 handwritten digits")
register_dataset("mnist1d", load_mnist1d, "MNIST-1D (Greydanus 2020), 40-step signals")
register_dataset("recall", load_recall, "long-range recall sequences, marker position as truth")
for _name in VISION_SETS:
    register_dataset(
        _name, partial(load_vision, _name), f"torchvision {_name} (files in root=..., offline)"
    )
_PATTERNS["imagefolder"] = DatasetInfo(
    "imagefolder:<dir>", load_image_folder, "your images, one subfolder per class"
)
_PATTERNS["idx"] = DatasetInfo("idx:<dir>", load_idx_folder, "MNIST-style IDX files")


def list_datasets() -> list[str]:
    """The data set names :func:`load` knows, the two folder patterns last."""
    return [*_REGISTRY, *(info.name for info in _PATTERNS.values())]


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name`` (``imagefolder:...``/``idx:...`` give the pattern's)."""
    prefix, colon, _ = name.partition(":") if isinstance(name, str) else ("", "", "")
    if colon and prefix in _PATTERNS:
        return _PATTERNS[prefix]
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    raise DataError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")


def dataset_splits(name: str) -> tuple[str, ...]:
    """The splits :func:`load` accepts for ``name``: ``("train", "test")``, or
    ``("train", "val", "test")`` for ``imagefolder:<dir>``, whose ``val`` is its own."""
    prefix, colon, _ = name.partition(":") if isinstance(name, str) else ("", "", "")
    return _SPLITS_OF_PATTERN.get(prefix, SPLITS) if colon else SPLITS


def _options_of(loader: Callable[..., XaiDataset]) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(loader).parameters.values()
    return {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _coerce(dataset: str, key: str, value: Any) -> Any:
    """Accept numeric options given as text (e.g. from a command line)."""
    if key in _INT_OPTIONS and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise DataError(f"option {key} of data set {dataset!r} must be an integer") from None
    if key in _FLOAT_OPTIONS and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise DataError(f"option {key} of data set {dataset!r} must be a number") from None
    if key == "download" and not isinstance(value, bool):
        raise DataError(f"option download of data set {dataset!r} must be True or False")
    return value


def load(name: str, split: str = "train", **options: Any) -> XaiDataset:
    """Load a data set by name: ``load("shapes", "test", n=500, seed=1)``.

    Returns a :class:`~xaikit.data.base.XaiDataset` (a torch ``Dataset`` with ``classes``,
    ``task``, ``input_kind``, ``normalization`` and ``targets``); items are
    ``(input, target)`` or ``(input, target, mask)`` for data sets with ground truth.
    ``split`` is ``"train"`` or ``"test"`` (or ``"val"`` where :func:`dataset_splits` has it).
    Generated data sets are deterministic in ``seed``.
    """
    info = dataset_info(name)
    loader = info.loader
    if name.partition(":")[0] in _PATTERNS:
        folder = name.partition(":")[2]
        if not folder:
            raise DataError(f"{info.name} needs a folder after the colon, e.g. {info.name}")
        loader = partial(loader, folder)
    splits = dataset_splits(name)
    if split not in splits:
        raise DataError(f"unknown split {split!r} for data set {name!r}; use one of {splits}")
    accepted = _options_of(loader)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) or "none"
        raise DataError(
            f"data set {name!r} has no option {', '.join(unknown)}; its options are: {valid}"
        )
    options = {key: _coerce(name, key, value) for key, value in options.items()}
    return loader(split, **options)
