"""Tiny synthetic tasks, made with torch in the test so these tests depend on no data set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import xaikit


def quadrant_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes: class k brightens quadrant k of an 8x8 noise image. ``(n, 1, 8, 8), (n,)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    for k in range(4):
        rows, cols = divmod(k, 2)
        x[y == k, :, rows * 4 : rows * 4 + 4, cols * 4 : cols * 4 + 4] += 1.5
    return x, y


def label_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3 independent labels: label k brightens row band k. ``(n, 1, 8, 8), (n, 3)`` float."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (torch.rand(n, 3, generator=g) < 0.5).float()
    for k in range(3):
        x[y[:, k] == 1, :, 3 * k : 3 * k + 2, :] += 1.5
    return x, y


def blob_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary: positive images have a bright 3x3 blob in the centre. ``(n, 1, 8, 8), (n,)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[y == 1, :, 2:5, 2:5] += 1.5
    return x, y


def offset_sequences(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """2 classes of noisy sequences whose mean is -0.5 or +0.5. ``(n, 20, 1), (n,)``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 20, 1, generator=g) + (y.float() - 0.5).view(-1, 1, 1)
    return x, y


def small_cnn(
    num_classes: int = 4, task: str = "multiclass", *, dropout: float = 0.0, init_seed: int = 1
) -> nn.Module:
    """A 2-block CNN for 1x8x8 images, with weights drawn from ``init_seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        return xaikit.create_model(
            "simple_cnn",
            num_classes=num_classes,
            task=task,
            in_channels=1,
            widths=(8, 16),
            input_size=8,
            dropout=dropout,
        )


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two threads per
    process oversubscribe the cores and a step gets several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def synth() -> SimpleNamespace:
    """The helpers above, for tests to use as ``synth.quadrant_images(320)``."""
    return SimpleNamespace(
        quadrant_images=quadrant_images,
        label_images=label_images,
        blob_images=blob_images,
        offset_sequences=offset_sequences,
        small_cnn=small_cnn,
        state_equal=state_equal,
    )
