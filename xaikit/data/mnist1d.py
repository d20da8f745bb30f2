"""``mnist1d``: the MNIST-1D benchmark (Greydanus, 2020), generated offline.

"Scaling down deep learning", S. Greydanus, 2020 (arXiv:2011.14439): ten 1-D digit templates,
padded, scaled, translated, sheared, with correlated and i.i.d. noise, resampled to 40 steps.
The data come from the reference generator in the ``mnist1d`` package
(``mnist1d.data.make_dataset(get_dataset_args())``: 5,000 samples, seed 42, 80/20 split
-> 4,000 train / 1,000 test, standardized to mean 0 and std 1 over the whole set), so they are
the published data set; it needs no download. Published test accuracies: logistic regression
32 %, MLP 68 %, CNN 94 %, GRU 91 %.

Items are ``(x, label int64)`` with ``x`` ``(40, 1)`` for recurrent models
(``layout="sequence"``, the default) or ``(1, 40)`` for 1-D CNNs (``layout="signal"``).
The reference generator draws from NumPy's and Python's global random state; it is saved and
restored around the call, so the caller's random state is untouched.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch

from xaikit.data.base import TensorDataset
from xaikit.errors import DataError

REFERENCE_SEED = 42
LAYOUTS = ("sequence", "signal")


@functools.lru_cache(maxsize=2)
def generate_mnist1d(seed: int = REFERENCE_SEED) -> dict[str, np.ndarray]:
    """The reference generator's output for ``seed``: ``x`` ``(4000, 40)``, ``y`` ``(4000,)``,
    ``x_test`` ``(1000, 40)``, ``y_test`` ``(1000,)`` (cached; treat as read-only)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise DataError(
            f"the mnist1d data set needs the 'mnist1d' package ({error}); "
            f"install it with: pip install mnist1d"
        ) from None
    args = get_dataset_args()
    args.seed = int(seed)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {key: np.asarray(data[key]) for key in ("x", "y", "x_test", "y_test")}


def load_mnist1d(
    split: str = "train", *, layout: str = "sequence", seed: int = REFERENCE_SEED
) -> TensorDataset:
    """``mnist1d``: 4,000 train / 1,000 test signals of 40 steps, 10 classes.

    ``layout="sequence"`` gives ``(40, 1)`` per item, ``"signal"`` gives ``(1, 40)``; ``seed``
    other than 42 generates a different draw of the same distribution.
    """
    if layout not in LAYOUTS:
        raise DataError(f"mnist1d layout must be one of {LAYOUTS}, got {layout!r}")
    data = generate_mnist1d(int(seed))
    x, y = (data["x"], data["y"]) if split == "train" else (data["x_test"], data["y_test"])
    inputs = torch.from_numpy(x.astype(np.float32))
    inputs = inputs[:, :, None] if layout == "sequence" else inputs[:, None, :]
    return TensorDataset(
        inputs.contiguous(),
        torch.from_numpy(y.astype(np.int64)),
        name="mnist1d",
        split=split,
        classes=[str(d) for d in range(10)],
        task="multiclass",
        input_kind=layout,
        normalization=None,
    )
