"""Seeds for the generated data sets: one private generator per (seed, data set, split)."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: str) -> int:
    """A 63-bit seed that depends on ``seed`` and every key (e.g. the data set and the split).

    Train and test of one data set, and different data sets, get unrelated random streams from
    one user seed, so a test image is never a copy of a training image.
    """
    text = "/".join([str(int(seed)), *keys]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def make_generator(seed: int, *keys: str) -> torch.Generator:
    """A private CPU generator seeded by :func:`derive_seed`; the global RNG is untouched."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(seed, *keys))
    return generator
