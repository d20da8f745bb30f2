"""``digits``: the real 8x8 handwritten digits that scikit-learn ships (offline).

1,797 images of the UCI "Optical Recognition of Handwritten Digits" set (Alpaydin & Kaynak,
1998), bundled with scikit-learn as :func:`sklearn.datasets.load_digits`. Items are
``(image (1, 8, 8) float32 in [0, 1] (pixels / 16), label int64)``. The train/test split is a
fixed stratified 80/20 split (``train_test_split(..., stratify=labels, random_state=seed)``,
``seed=0`` by default: 1,437 train / 360 test images); ``normalization`` holds the training
pixels' mean and std.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from xaikit.data.base import TensorDataset

TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=4)
def _split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # (1797, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return images, labels, np.sort(train), np.sort(test)


def load_digits_dataset(split: str = "train", *, seed: int = 0) -> TensorDataset:
    """``digits``: ``(1, 8, 8)`` images in ``[0, 1]``, 10 classes; ``seed`` picks the split."""
    images, labels, train, test = _split(int(seed))
    rows = train if split == "train" else test
    train_pixels = images[train]
    normalization = {"mean": [float(train_pixels.mean())], "std": [float(train_pixels.std())]}
    return TensorDataset(
        torch.from_numpy(images[rows][:, None].copy()),
        torch.from_numpy(labels[rows].copy()),
        name="digits",
        split=split,
        classes=[str(d) for d in range(10)],
        task="multiclass",
        input_kind="image",
        normalization=normalization,
    )
