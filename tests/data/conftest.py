"""Helpers for the data tests: an independent IDX writer (struct-based, not xaikit's reader)."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
IDX_CODES[np.float64] = 0x0E


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic ``0 0 type ndim``, big-endian sizes, big-endian data."""
    code = IDX_CODES[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """``write_idx(path, array, gz=False)`` writes ``array`` as an IDX file and returns the path."""

    def write(path: Path, array: np.ndarray, gz: bool = False) -> Path:
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write
