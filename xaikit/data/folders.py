"""A user's own data: ``imagefolder:<dir>`` (class subfolders of images) and ``idx:<dir>``.

``imagefolder:<dir>``: each subfolder of ``<dir>`` is a class (sorted names), its image files
(any depth, see :func:`~xaikit.data.images.list_images`) are the examples. The folder has three
disjoint splits, ``train``, ``val`` and ``test``, so that a model is chosen on images it was not
trained on and scored on images neither step has seen:

* a folder of class subfolders is split **per class** (stratified) in the proportions
  ``fractions`` (default 70 / 15 / 15; ``--data-option fractions=0.8,0.1,0.1``). Which file goes
  where depends only on ``seed`` and the file's path (files are ordered by the SHA-256 of
  ``"<seed>/<path>"``), so the same seed gives the same split on any machine and adding a file
  moves no other. Every class needs at least one image per split (a class with fewer, or an
  empty class folder, is an error naming it and the counts);
* a folder with ``train/``, ``val/`` (or ``valid/``) and ``test/`` subfolders, each holding the
  class subfolders, uses them as they are. A missing ``val/`` or ``test/`` is drawn, stratified
  and seeded as above, out of ``train/`` in the proportions of ``fractions`` (so ``train/`` +
  ``test/`` gives a validation split of 15 / 85 of ``train/`` by default). The classes are the
  union over the splits, sorted, so indices agree; a class missing from a split is an error
  naming it.

:meth:`ImageFolderDataset.split_manifest` lists the files of every split (``xaikit train``
writes it to ``<run>/split.json``). Images are read lazily by
:func:`~xaikit.data.images.load_image` at ``size`` x ``size`` with ``channels`` channels, in
``[0, 1]``. With ``normalize=True`` items are normalized with the per-channel mean and standard
deviation of the **train** split's images (whatever split is loaded, so train, val and test
agree), recorded in ``normalization`` as every data set does; ``raw_input(i)`` gives the pixels.

``idx:<dir>``: MNIST-style IDX files (``<prefix>-images-idx3-ubyte[.gz]`` and
``<prefix>-labels-idx1-ubyte[.gz]``). ``train`` uses the pair whose prefix is ``train``, ``test``
the one whose prefix is ``t10k`` or ``test``. A folder with a single pair (e.g. only the MNIST
test set) is split into disjoint train/test parts by a fixed stratified split
(``test_fraction`` of each class to test, chosen by ``seed``): 8,000 / 2,000 for MNIST's t10k.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xaikit.data._seed import make_generator
from xaikit.data.base import TensorDataset, XaiDataset
from xaikit.data.idx import read_idx
from xaikit.data.images import list_images, load_image
from xaikit.data.normalization import normalize as apply_normalization
from xaikit.errors import DataError

#: The splits of an image folder, in the order the files are drawn for them.
FOLDER_SPLITS = ("train", "val", "test")
#: The subfolder names that mark each split (``valid/`` is a common name for ``val/``).
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid"),
    "test": ("test",),
}
#: Default ``(train, val, test)`` shares of each class.
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_FORMAT = "xaikit-split/1"
#: At most this many training images are read to measure the normalization statistics
#: (evenly spaced through the sorted list): enough for stable means, bounded on big folders.
STATISTICS_MAX_IMAGES = 1000


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def parse_fractions(value: Any) -> tuple[float, float, float]:
    """``(train, val, test)`` shares from ``"0.7,0.15,0.15"`` or a sequence of three numbers.

    Each share lies in ``[0, 1]``, train and test are positive (val may be 0: no validation
    split) and they sum to 1.
    """
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        shares = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        shares = ()
    if len(shares) != 3 or not all(math.isfinite(s) for s in shares):
        raise DataError(
            f"fractions must be three numbers train,val,test (e.g. 0.7,0.15,0.15), got {value!r}"
        )
    train, val, test = shares
    if min(shares) < 0 or train <= 0 or test <= 0 or abs(sum(shares) - 1.0) > 1e-6:
        raise DataError(
            f"fractions train,val,test must be non-negative, with train and test above 0, and "
            f"sum to 1; got {','.join(f'{s:g}' for s in shares)}"
        )
    return (train, val, test)


def _share_text(fractions: Sequence[float]) -> str:
    return "/".join(f"{100 * f:.3g}" for f in fractions) + " (train/val/test %)"


@dataclass(frozen=True)
class FolderSplit:
    """Where every image of a folder goes: ``files[split]`` is ``[(path, label), ...]`` sorted
    by label, then path. ``layout`` is ``"stratified"`` (one set, split per class) or
    ``"folders"`` (split subfolders; ``carved`` names the splits drawn out of ``train/``)."""

    root: Path
    layout: str
    seed: int
    fractions: tuple[float, float, float]
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]
    carved: tuple[str, ...] = ()

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {class: images}}``."""
        out: dict[str, dict[str, int]] = {}
        for split, pairs in self.files.items():
            per = dict.fromkeys(self.classes, 0)
            for _, label in pairs:
                per[self.classes[label]] += 1
            out[split] = per
        return out

    def manifest(self) -> dict[str, Any]:
        """A JSON-ready record of the split: settings, counts and every file (as a path
        relative to ``root``, grouped by class), so a user can check what went where."""
        files: dict[str, dict[str, list[str]]] = {}
        for split, pairs in self.files.items():
            grouped: dict[str, list[str]] = {name: [] for name in self.classes}
            for path, label in pairs:
                grouped[self.classes[label]].append(path.relative_to(self.root).as_posix())
            files[split] = grouped
        return {
            "format": SPLIT_FORMAT,
            "data": f"imagefolder:{self.root}",
            "root": str(self.root.resolve()),
            "layout": self.layout,
            "carved_from_train": list(self.carved),
            "seed": self.seed,
            "fractions": list(self.fractions),
            "classes": list(self.classes),
            "counts": self.counts(),
            "files": files,
        }


def _split_key(seed: int, root: Path, path: Path) -> bytes:
    """The order files are drawn in: a hash of the seed and the file's path under ``root``
    (not ``torch.randperm``), so a split is the same on every machine and torch version."""
    return hashlib.sha256(f"{seed}/{path.relative_to(root).as_posix()}".encode()).digest()


def _carve(
    root: Path,
    per_class: dict[str, list[Path]],
    shares: dict[str, float],
    seed: int,
    what: str,
) -> dict[str, dict[str, list[Path]]]:
    """Split each class's files among ``shares`` (``train`` takes what the others leave).

    Every split with a positive share gets ``max(1, round(share * n))`` of a class's ``n``
    files; a class too small for that is an error naming it and every class's count
    (``what`` says which split that is, for the message).
    """
    drawn = [s for s in FOLDER_SPLITS if s != "train" and shares.get(s, 0.0) > 0]
    needed = 1 + len(drawn)
    bad = {name: len(files) for name, files in per_class.items() if len(files) < needed}
    if bad:
        listed = ", ".join(
            f"{name!r} has {n or 'no'} image{'' if n == 1 else 's'}" for name, n in bad.items()
        )
        counts = ", ".join(f"{name} {len(files)}" for name, files in per_class.items())
        raise DataError(
            f"image folder {root}: class {listed}; {what} needs at least {needed} images per "
            f"class, one per split (images per class: {counts})"
        )
    out: dict[str, dict[str, list[Path]]] = {s: {} for s in shares}
    for name, files in per_class.items():
        order = sorted(files, key=lambda p: _split_key(seed, root, p))
        start = 0
        for split in drawn:
            count = max(1, math.floor(shares[split] * len(files) + 0.5))
            out[split][name] = sorted(order[start : start + count])
            start += count
        out["train"][name] = sorted(order[start:])
        for split in shares:
            out[split].setdefault(name, [])  # a split with a zero share is empty
    return out


def _present_split_folders(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, names in SPLIT_FOLDERS.items():
        dirs = [root / n for n in names if (root / n).is_dir()]
        if len(dirs) > 1:
            raise DataError(
                f"image folder {root} has both {' and '.join(d.name + '/' for d in dirs)}; "
                f"keep one {split} split folder"
            )
        if dirs:
            found[split] = dirs[0]
    return found


def _images_of(folder: Path) -> list[Path]:
    return list_images(folder, recursive=True) if folder.is_dir() else []


def split_image_folder(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    fractions: Any = DEFAULT_FRACTIONS,
) -> FolderSplit:
    """Decide the train / val / test files of ``imagefolder:<root>`` (see the module
    docstring). Deterministic in ``(the files, seed, fractions)``; lists files, reads none.

    Raises:
        DataError: no such folder, no class subfolders, a class with too few images for the
            split (or none), a class missing from a split folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    fractions = parse_fractions(fractions)
    shares = dict(zip(FOLDER_SPLITS, fractions))
    seed = int(seed)
    folders = _present_split_folders(root)
    scanned = list(folders.values()) if folders else [root]
    classes = sorted({c for folder in scanned for c in _class_folders(folder)})
    if not classes:
        where = ", ".join(f"{f.name}/" for f in folders.values()) if folders else str(root)
        raise DataError(
            f"image folder {root} has no class subfolders (in {where}); put each class's "
            f"images in a subfolder named after the class (e.g. {root}/cat/1.png)"
        )
    files: dict[str, dict[str, list[Path]]]
    carved: tuple[str, ...] = ()
    if not folders:
        layout = "stratified"
        per_class = {name: _images_of(root / name) for name in classes}
        what = f"the {_share_text(fractions)} split"
        files = _carve(root, per_class, shares, seed, what)
    else:
        layout = "folders"
        files = {s: {name: _images_of(f / name) for name in classes} for s, f in folders.items()}
        for split, per_class in files.items():
            missing = [name for name, found in per_class.items() if not found]
            if missing:
                counts = "; ".join(
                    f"{s}/ {len(files[s][missing[0]])}" for s in files if s in folders
                )
                raise DataError(
                    f"image folder {root}: class {missing[0]!r} has no images in "
                    f"{folders[split].name}/ ({counts}); every split folder needs every class "
                    f"(classes: {', '.join(classes)})"
                )
        absent = [s for s in FOLDER_SPLITS if s not in folders]
        if "train" in folders and absent:
            # Draw the missing splits out of train/, in the proportions they have to train.
            pool = {"train": shares["train"], **{s: shares[s] for s in absent}}
            total = sum(pool.values())
            relative = {s: v / total for s, v in pool.items()}
            what = (
                f"drawing {' and '.join(s + '/' for s in absent)} out of "
                f"{folders['train'].name}/ ({_share_text(fractions)})"
            )
            files.update(_carve(root, files["train"], relative, seed, what))
            carved = tuple(absent)
    ordered = {
        split: [(p, label) for label, name in enumerate(classes) for p in files[split][name]]
        for split in FOLDER_SPLITS
        if split in files
    }
    return FolderSplit(root, layout, seed, fractions, classes, ordered, carved)


@functools.lru_cache(maxsize=8)
def _statistics(
    files: tuple[tuple[str, int, int], ...], size: int, channels: int
) -> dict[str, list[float]]:
    """Per-channel mean / std of ``files`` (path, mtime, bytes: a changed file is a new key)."""
    step = max(1, math.ceil(len(files) / STATISTICS_MAX_IMAGES))
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    pixels = 0
    for path, _, _ in files[::step]:
        x = load_image(path, channels=channels, size=size).to(torch.float64).flatten(1)
        total += x.sum(1)
        squares += (x * x).sum(1)
        pixels += x.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp_min(0).sqrt()
    # A flat channel (every pixel equal) would divide by zero; 1/255 keeps it finite.
    std = std.clamp_min(1 / 255)
    return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std]}


def folder_statistics(split: FolderSplit, size: int, channels: int) -> dict[str, list[float]]:
    """``{"mean": [...], "std": [...]}`` per channel of the train split's images at
    ``size`` x ``size`` (at most :data:`STATISTICS_MAX_IMAGES` of them, evenly spaced), rounded
    to 4 decimals; computed once per process for the same files."""
    if "train" not in split.files:
        raise DataError(
            f"image folder {split.root} has no train split to measure the normalization on"
        )
    key = []
    for path, _ in split.files["train"]:
        stat = path.stat()
        key.append((str(path), stat.st_mtime_ns, stat.st_size))
    return _statistics(tuple(key), int(size), int(channels))


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise DataError(f"option {name} of imagefolder must be true or false, got {value!r}")


class ImageFolderDataset(XaiDataset):
    """Items ``(image (channels, size, size) float32, label int64)`` of one split, read lazily:
    ``[0, 1]`` pixels, or normalized with the train split's statistics when ``normalize``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        *,
        size: int = 64,
        channels: int = 3,
        seed: int = 0,
        fractions: Any = DEFAULT_FRACTIONS,
        normalize: bool = False,
    ) -> None:
        layout = split_image_folder(root, seed=seed, fractions=fractions)
        if split not in layout.files:
            present = [s for s in FOLDER_SPLITS if s in layout.files]
            raise DataError(
                f"image folder {layout.root} has split subfolders {present} but no {split!r} "
                "one (and no train/ to draw it from)"
            )
        pairs = layout.files[split]
        super().__init__(
            name=f"imagefolder:{layout.root}",
            split=split,
            classes=layout.classes,
            task="multiclass",
            input_kind="image",
            targets=torch.tensor([label for _, label in pairs], dtype=torch.int64),
            normalization=None,
        )
        self.files = [path for path, _ in pairs]
        self.layout = layout
        self.size = int(size)
        self.channels = int(channels)
        if normalize:
            self.normalization = folder_statistics(layout, self.size, self.channels)

    def split_manifest(self) -> dict[str, Any]:
        """Every split's files and counts (see :meth:`FolderSplit.manifest`)."""
        return self.layout.manifest()

    def raw_input(self, index: int) -> torch.Tensor:
        """Image ``index`` as ``[0, 1]`` pixels, before any normalization."""
        index = self._check_index(index)
        return load_image(self.files[index], channels=self.channels, size=self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._check_index(index)
        image = self.raw_input(index)
        if self.normalization is not None:
            image = apply_normalization(image, self.normalization)
        return image, self.targets[index]


def load_image_folder(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    size: int = 64,
    channels: int = 3,
    seed: int = 0,
    fractions: Any = DEFAULT_FRACTIONS,
    normalize: bool = False,
) -> ImageFolderDataset:
    """``imagefolder:<dir>``, see the module docstring.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size, channels: every image is resized to ``size`` x ``size`` with 1 or 3 channels.
        seed: which files go to which split (``xaikit train`` passes its ``--seed``).
        fractions: ``(train, val, test)`` shares of each class, e.g. ``"0.8,0.1,0.1"``.
        normalize: normalize items with the train split's per-channel statistics.
    """
    if int(size) < 1 or int(channels) not in (1, 3):
        raise DataError(f"imagefolder needs size >= 1 and channels 1 or 3, got {size}, {channels}")
    if split not in FOLDER_SPLITS:
        raise DataError(f"unknown split {split!r} of an image folder; use one of {FOLDER_SPLITS}")
    return ImageFolderDataset(
        root,
        split,
        size=size,
        channels=channels,
        seed=seed,
        fractions=fractions,
        normalize=_as_bool(normalize, "normalize"),
    )


_IDX_NAME = re.compile(
    r"^(?P<prefix>.*?)[-_.]?(?P<kind>images|labels)[-_.]idx[13][-_.]ubyte(\.gz)?$"
)


def _idx_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``prefix -> (images file, labels file)``; uncompressed files win over ``.gz`` ones."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: (p.name.endswith(".gz"), p.name)):
        match = _IDX_NAME.match(path.name)
        if match and path.is_file():
            found.setdefault((match["prefix"], match["kind"]), path)
    prefixes = sorted({prefix for prefix, _ in found})
    return {
        p: (found[(p, "images")], found[(p, "labels")])
        for p in prefixes
        if (p, "images") in found and (p, "labels") in found
    }


def stratified_split(
    labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, test)``, sorted: ``round(test_fraction * count)`` of each class to test.

    Deterministic in ``(labels, test_fraction, seed)``.
    """
    g = make_generator(seed, "stratified-split")
    test_parts = []
    for label in torch.unique(labels):
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=g)]
        test_parts.append(members[: round(test_fraction * members.numel())])
    is_test = torch.zeros(labels.numel(), dtype=torch.bool)
    is_test[torch.cat(test_parts)] = True
    return (~is_test).nonzero().squeeze(1), is_test.nonzero().squeeze(1)


def _read_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"IDX files {images_path} and {labels_path} disagree: {images.shape[0]} images "
            f"but {labels.shape[0]} labels"
        )
    if labels.is_floating_point() or (labels.numel() and int(labels.min()) < 0):
        raise DataError(f"IDX labels in {labels_path} must be non-negative integers")
    return images, labels.to(torch.int64)


def load_idx_folder(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> TensorDataset:
    """``idx:<dir>``: items ``(image (1, H, W) float32, label int64)``, see the module docstring.

    uint8 pixels are divided by 255; other pixel types are returned as they are.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"IDX folder {root} does not exist or is not a folder")
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    pairs = _idx_pairs(root)
    wanted = {"train": ("train",), "test": ("t10k", "test")}[split]
    chosen = [p for p in wanted if p in pairs]
    if len(pairs) == 1:
        images, labels = _read_pair(*next(iter(pairs.values())))
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
        train, test = stratified_split(labels, float(test_fraction), int(seed))
        rows = train if split == "train" else test
        images, labels = images[rows], labels[rows]
    elif chosen:
        images, labels = _read_pair(*pairs[chosen[0]])
        # Classes from every split's labels, so that train and test agree on the count.
        others = [read_idx(pair[1], ndim=1) for p, pair in pairs.items() if p != chosen[0]]
        every_label = torch.cat([labels, *(o.to(torch.int64) for o in others)])
        num_classes = int(every_label.max()) + 1 if every_label.numel() else 0
    else:
        found = ", ".join(pairs) or "none"
        raise DataError(
            f"IDX folder {root} has no {split} files: expected <prefix>-images-idx3-ubyte[.gz] "
            f"and <prefix>-labels-idx1-ubyte[.gz] with prefix {' or '.join(wanted)} "
            f"(found prefixes: {found})"
        )
    return TensorDataset(
        images[:, None].contiguous(),
        labels,
        scale=1.0 / 255.0 if images.dtype == torch.uint8 else None,
        name=f"idx:{root}",
        split=split,
        classes=[str(k) for k in range(num_classes)],
        task="multiclass",
        input_kind="image",
        normalization=None,
    )
