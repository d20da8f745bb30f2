"""Reader for the IDX format of MNIST-style files, plain or gzip-compressed.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``0, 0, type,
ndim``, then ``ndim`` big-endian uint32 sizes, then the values row-major, big-endian. Type codes:
0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. MNIST images are
``(N, 28, 28)`` uint8 (magic 2051), labels ``(N,)`` uint8 (magic 2049).

Whether a file is gzip-compressed is told by its first bytes, not its name. Every inconsistency
(bad magic, unknown type, a length that does not match the header) raises
:class:`~xaikit.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from xaikit.errors import DataError

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"IDX file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an IDX file")
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"IDX file {path} is a corrupt or truncated gzip file: {error}") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array with the header's shape and a native dtype."""
    if len(data) < 4:
        raise DataError(f"IDX file {name} is too short ({len(data)} bytes) to hold a header")
    zero1, zero2, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0 or ndim == 0:
        raise DataError(
            f"IDX file {name} has a bad magic number 0x{data[:4].hex()} "
            f"(expected 0x0000 then a type code and a dimension count)"
        )
    if type_code not in IDX_TYPES:
        raise DataError(
            f"IDX file {name} has an unknown type code 0x{type_code:02x} "
            f"(known: {', '.join(f'0x{c:02x}' for c in IDX_TYPES)})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {name} is truncated inside its header ({len(data)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"IDX file {name} holds {len(data) - header} bytes of data but its header "
            f"{shape} of {dtype.name} needs {expected} (truncated or corrupt)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> torch.Tensor:
    """Read an IDX file (``.gz`` or not) into a tensor of the header's shape and type.

    ``ndim``, when given, is checked (3 for images ``(N, H, W)``, 1 for labels ``(N,)``).
    uint8 stays uint8; the other types map to the torch type of the same width.
    """
    path = Path(path)
    array = parse_idx(_read_bytes(path), str(path))
    if ndim is not None and array.ndim != ndim:
        raise DataError(
            f"IDX file {path} has {array.ndim} dimensions {tuple(array.shape)}, expected {ndim}"
        )
    return torch.from_numpy(array)
