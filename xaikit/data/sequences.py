"""``recall``: a long-range dependency task for recurrent models, with the answer's position.

Each sequence ``(T, F)`` has ``F = num_classes + 1`` features. A class marker, a spike of 1 on
the class's channel, sits at a random step in the first 10 % of the sequence; the label is that
class. Every step carries small Gaussian noise (std 0.1) on the class channels and unit Gaussian
noise on the last ("noise") channel, so the marker must be remembered for at least 90 % of the
sequence through steps that only carry noise (the kind of task of Hochreiter & Schmidhuber,
1997, experiments 2a-2c). A model that reads the last step's state (the zoo's default pooling)
needs a memory that lasts that long.

Measured at the default ``T = 100`` (4,000 training sequences, 32 hidden units, Adam 3e-3,
batch 32, last-step pooling): an LSTM whose gate biases use chrono initialization (Tallec &
Ollivier, 2018, "Can recurrent neural networks warp time?") reaches 100 % test accuracy within
5 epochs; a plain tanh RNN stays at chance (25 %) after 20 epochs. An LSTM with PyTorch's
default initialization also stays at chance for 30 epochs: its forget gates start near 0.5,
so the marker's trace (about 0.5 ** 90) vanishes before training can pick it up. At ``T = 30``
both learn it.

Ground truth: each item is ``(sequence (T, F) float32, label int64, marker (T,) float32)`` where
``marker`` is one-hot at the marker's step (the only step that carries the label), so a temporal
heatmap ``(T,)`` can be scored like an image heatmap against a mask; ``dataset.positions``
holds the steps as an ``(N,)`` int64 tensor.
"""

from __future__ import annotations

import math

import torch

from xaikit.data._seed import make_generator
from xaikit.data.base import TensorDataset
from xaikit.errors import DataError

DEFAULT_N = {"train": 4_000, "test": 1_000}
MARKER_SPAN = 0.1  # the marker lies in the first 10 % of the sequence
CLASS_NOISE = 0.1
NOISE_CHANNEL_STD = 1.0


def generate_recall(
    n: int, length: int = 100, num_classes: int = 4, *, seed: int = 0, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequences ``(n, length, num_classes + 1)``, labels ``(n,)`` and marker steps ``(n,)``.

    Labels are balanced (``n`` divisible by ``num_classes`` gives equal counts); marker steps
    are uniform over ``0 .. ceil(0.1 * length) - 1``.
    """
    if n < 1:
        raise DataError(f"the recall data set needs n >= 1 sequences, got n={n}")
    if length < 10:
        raise DataError(f"the recall data set needs length >= 10 steps, got length={length}")
    if num_classes < 2:
        raise DataError(f"the recall data set needs num_classes >= 2, got {num_classes}")
    g = make_generator(seed, "recall", split, str(length), str(num_classes))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    span = max(1, math.ceil(MARKER_SPAN * length))
    positions = torch.randint(0, span, (n,), generator=g)
    x = torch.randn((n, length, num_classes + 1), generator=g)
    x[..., :num_classes] *= CLASS_NOISE
    x[..., num_classes] *= NOISE_CHANNEL_STD
    x[torch.arange(n), positions, labels] = 1.0
    return x, labels, positions


def load_recall(
    split: str = "train",
    *,
    n: int | None = None,
    length: int = 100,
    num_classes: int = 4,
    seed: int = 0,
) -> TensorDataset:
    """``recall``: items ``(sequence (T, F), label, marker (T,))``, see the module docstring.

    ``n`` defaults to 4,000 (train) / 1,000 (test); ``length`` is T; ``F = num_classes + 1``.
    """
    n = DEFAULT_N.get(split, DEFAULT_N["test"]) if n is None else int(n)
    x, labels, positions = generate_recall(
        n, int(length), int(num_classes), seed=int(seed), split=split
    )
    marker = torch.zeros((n, int(length)), dtype=torch.float32)
    marker[torch.arange(n), positions] = 1.0
    dataset = TensorDataset(
        x,
        labels,
        marker,
        name="recall",
        split=split,
        classes=[f"marker {k}" for k in range(int(num_classes))],
        task="multiclass",
        input_kind="sequence",
        normalization=None,
    )
    dataset.positions = positions
    return dataset
