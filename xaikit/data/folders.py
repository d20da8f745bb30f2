"""A user's own data: ``imagefolder:<dir>`` (class subfolders of images) and ``idx:<dir>``.

``imagefolder:<dir>``: each subfolder of ``<dir>`` is a class (sorted names), its image files
(any depth, see :func:`~xaikit.data.images.list_images`) are the examples. If ``<dir>`` has
``train``/``test``/``val`` subfolders, the requested split's subfolder is used and the classes
are the union over the splits (so indices agree); otherwise ``<dir>`` itself is the one set,
returned for every split. Images are read lazily by :func:`~xaikit.data.images.load_image` at
``size`` x ``size`` with ``channels`` channels.

``idx:<dir>``: MNIST-style IDX files (``<prefix>-images-idx3-ubyte[.gz]`` and
``<prefix>-labels-idx1-ubyte[.gz]``). ``train`` uses the pair whose prefix is ``train``, ``test``
the one whose prefix is ``t10k`` or ``test``. A folder with a single pair (e.g. only the MNIST
test set) is split into disjoint train/test parts by a fixed stratified split
(``test_fraction`` of each class to test, chosen by ``seed``): 8,000 / 2,000 for MNIST's t10k.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from xaikit.data._seed import make_generator
from xaikit.data.base import TensorDataset, XaiDataset
from xaikit.data.idx import read_idx
from xaikit.data.images import list_images, load_image
from xaikit.errors import DataError

SPLIT_FOLDERS = ("train", "test", "val")


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderDataset(XaiDataset):
    """Items ``(image (channels, size, size) float32 in [0, 1], label int64)``, read lazily."""

    def __init__(
        self, root: str | os.PathLike[str], split: str, *, size: int = 64, channels: int = 3
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist or is not a folder")
        splits = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
        if splits:
            if split not in splits:
                raise DataError(
                    f"image folder {root} has split subfolders {splits} but no {split!r} one"
                )
            base = root / split
            classes = sorted({c for s in splits for c in _class_folders(root / s)})
        else:
            base = root
            classes = _class_folders(root)
        if not classes:
            raise DataError(
                f"image folder {root} has no class subfolders; put each class's images in "
                f"a subfolder named after the class (e.g. {root}/cat/1.png)"
            )
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            found = list_images(base / name, recursive=True) if (base / name).is_dir() else []
            files += found
            labels += [label] * len(found)
        if not files:
            raise DataError(f"the class subfolders of {base} hold no image files")
        super().__init__(
            name=f"imagefolder:{root}",
            split=split,
            classes=classes,
            task="multiclass",
            input_kind="image",
            targets=torch.tensor(labels, dtype=torch.int64),
            normalization=None,
        )
        self.files = files
        self.size = int(size)
        self.channels = int(channels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._check_index(index)
        image = load_image(self.files[index], channels=self.channels, size=self.size)
        return image, self.targets[index]


def load_image_folder(
    root: str | os.PathLike[str], split: str = "train", *, size: int = 64, channels: int = 3
) -> ImageFolderDataset:
    """``imagefolder:<dir>``, see the module docstring."""
    if int(size) < 1 or int(channels) not in (1, 3):
        raise DataError(f"imagefolder needs size >= 1 and channels 1 or 3, got {size}, {channels}")
    return ImageFolderDataset(root, split, size=size, channels=channels)


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
