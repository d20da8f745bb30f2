"""Hostile IDX files: sizes from the header are checked, with Python integers, before anything
is allocated, and a ``.gz`` is inflated as a stream that stops at the declared size.

Security report round 2, S6: ``gzip.decompress`` of a 4.2 MB file took 12 GB and 15 minutes;
and the size was a numpy int64 product, which wraps (2^31 x 2^31 x 4 bytes -> 0).
"""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from xaikit.data.idx import MAX_IDX_BYTES, parse_idx, read_idx
from xaikit.errors import DataError


def header(shape: tuple[int, ...], type_code: int = 0x08) -> bytes:
    """An IDX header: magic ``0, 0, type, ndim`` and the big-endian uint32 sizes."""
    return bytes([0, 0, type_code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)


def write_gz(path: Path, head: bytes, zeros: int) -> Path:
    """``head`` then ``zeros`` zero bytes, gzip-compressed a megabyte at a time (the test itself
    never holds the inflated data)."""
    chunk = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(head)
        for _ in range(zeros // len(chunk)):
            handle.write(chunk)
        handle.write(bytes(zeros % len(chunk)))
    return path


def peak_bytes(call: Callable[[], object]) -> int:
    """The peak of Python-tracked allocations (numpy's and zlib's included) during ``call``."""
    tracemalloc.start()
    try:
        call()
    except DataError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_a_header_of_2_to_the_64_bytes_is_refused_before_allocation(tmp_path, gz):
    # 2^31 x 2^31 x 4 uint8 = 2^64 bytes: np.prod(..., dtype=int64) wraps this to 0, which made a
    # header-only file look consistent.
    head = header((2**31, 2**31, 4))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(head) if gz else head)
    with pytest.raises(DataError, match="more than the limit") as info:
        read_idx(path)
    assert str(path) in str(info.value) and f"{2**64:,} bytes" in str(info.value)
    assert peak_bytes(lambda: read_idx(path)) < 1 << 20
    with pytest.raises(DataError, match="more than the limit"):
        parse_idx(head)


def test_the_limit_is_a_setting_and_genuine_files_under_it_load(tmp_path):
    values = np.arange(2 * 3 * 5, dtype=">i4").reshape(2, 3, 5)
    path = tmp_path / "values.idx.gz"
    path.write_bytes(gzip.compress(header(values.shape, 0x0C) + values.tobytes()))
    assert torch.equal(read_idx(path), torch.arange(30, dtype=torch.int32).reshape(2, 3, 5))
    with pytest.raises(DataError, match="more than the limit of 100 bytes"):
        read_idx(path, max_bytes=100)
    assert MAX_IDX_BYTES >= 47_040_000  # MNIST's training images fit


def test_a_gzip_bomb_is_refused_while_streaming_with_low_memory(tmp_path):
    # 10 labels declared, 50 MB of zeros behind them: ~50 KB on disk.
    path = write_gz(tmp_path / "train-labels-idx1-ubyte.gz", header((10,)), 50_000_000)
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match="more data than its header") as info:
        read_idx(path, ndim=1)
    assert str(path) in str(info.value)
    peak = peak_bytes(lambda: read_idx(path, ndim=1))
    assert peak < 4 << 20, f"{peak:,} bytes"  # gzip.decompress held all 50 MB at once


def test_a_gzip_stream_shorter_than_its_header_is_truncated(tmp_path):
    path = write_gz(tmp_path / "short.gz", header((100, 28, 28)), 1000)
    with pytest.raises(DataError, match="holds 1000 bytes .* needs 78400 .*truncated"):
        read_idx(path)


def test_a_plain_file_is_checked_against_its_size_before_reading(tmp_path):
    path = tmp_path / "liar-idx3-ubyte"
    path.write_bytes(header((60000, 28, 28)) + bytes(10))  # declares 47 MB, holds 10 bytes
    with pytest.raises(DataError, match="holds 10 bytes .* needs 47040000"):
        read_idx(path)
    assert peak_bytes(lambda: read_idx(path)) < 1 << 20


def test_the_dimension_count_is_checked_from_the_header(tmp_path):
    path = write_gz(tmp_path / "images.gz", header((4, 2, 2)), 16)
    with pytest.raises(DataError, match=r"has 3 dimensions \(4, 2, 2\), expected 1"):
        read_idx(path, ndim=1)
