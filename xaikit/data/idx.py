"""Reader for the IDX format of MNIST-style files, plain or gzip-compressed.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``0, 0, type,
ndim``, then ``ndim`` big-endian uint32 sizes, then the values row-major, big-endian. Type codes:
0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. MNIST images are
``(N, 28, 28)`` uint8 (magic 2051), labels ``(N,)`` uint8 (magic 2049).

Whether a file is gzip-compressed is told by its first bytes, not its name. Every inconsistency
(bad magic, unknown type, a length that does not match the header) raises
:class:`~xaikit.errors.DataError` naming the file.

Size limits, against crafted headers and decompression bombs: the data size a header declares
is computed with Python integers (no wrap-around) and refused above ``max_bytes`` (default
:data:`MAX_IDX_BYTES`, 2 GiB; MNIST's largest file is 47 MB) before anything is allocated. A
plain file must be exactly as long as its header says; a ``.gz`` is decompressed as a stream,
a chunk at a time, into the declared size and refused as soon as it yields more, so a small
file that inflates to gigabytes costs no more memory than its header declares.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import IO

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
#: The most data bytes (after the header) an IDX file may declare; ``max_bytes`` overrides it.
MAX_IDX_BYTES = 2**31
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # bytes decompressed / read per step: what a bomb can cost beyond the declared


def _check_magic(magic: bytes, name: str) -> tuple[np.dtype, int]:
    """The 4-byte magic -> (dtype, ndim); a bad one raises :class:`DataError`."""
    if len(magic) < 4:
        raise DataError(f"IDX file {name} is too short ({len(magic)} bytes) to hold a header")
    zero1, zero2, type_code, ndim = magic[0], magic[1], magic[2], magic[3]
    if zero1 != 0 or zero2 != 0 or ndim == 0:
        raise DataError(
            f"IDX file {name} has a bad magic number 0x{magic[:4].hex()} "
            f"(expected 0x0000 then a type code and a dimension count)"
        )
    if type_code not in IDX_TYPES:
        raise DataError(
            f"IDX file {name} has an unknown type code 0x{type_code:02x} "
            f"(known: {', '.join(f'0x{c:02x}' for c in IDX_TYPES)})"
        )
    return IDX_TYPES[type_code], ndim


def _declared(
    sizes: bytes, dtype: np.dtype, ndim: int, name: str, max_bytes: int
) -> tuple[tuple[int, ...], int]:
    """The header's sizes -> (shape, data bytes), checked against ``max_bytes``.

    Python integers throughout: a numpy int64 product of e.g. 2^31 x 2^31 x 4 wraps to 0 and
    would make a header-only file look consistent.
    """
    shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise DataError(
            f"IDX file {name} declares {shape} of {dtype.name}, {expected:,} bytes of data: "
            f"more than the limit of {max_bytes:,} bytes (a corrupt file or a decompression "
            "bomb); pass a larger max_bytes if the file is genuine"
        )
    return shape, expected


def _to_array(buffer: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Raw big-endian bytes -> an array of native byte order, swapped in place (no copy)."""
    array = buffer.view(dtype)
    if not dtype.isnative:
        array.byteswap(inplace=True)
        array = array.view(dtype.newbyteorder("="))
    return array.reshape(shape)


def parse_idx(data: bytes, name: str = "<bytes>", *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Parse IDX bytes into an array with the header's shape and a native dtype."""
    dtype, ndim = _check_magic(data[:4], name)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {name} is truncated inside its header ({len(data)} bytes)")
    shape, expected = _declared(data[4:header], dtype, ndim, name, max_bytes)
    if len(data) - header != expected:
        raise DataError(
            f"IDX file {name} holds {len(data) - header} bytes of data but its header "
            f"{shape} of {dtype.name} needs {expected} (truncated or corrupt)"
        )
    buffer = np.frombuffer(data, dtype=np.uint8, offset=header).copy()  # writable, owned
    return _to_array(buffer, dtype, shape)


def _read_exactly(stream: IO[bytes], buffer: np.ndarray) -> int:
    """Fill ``buffer`` from ``stream`` a chunk at a time; the number of bytes read."""
    view = memoryview(buffer)
    got = 0
    while got < len(buffer):
        n = stream.readinto(view[got : got + _CHUNK])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _read_stream(
    stream: IO[bytes], name: str, ndim: int | None, max_bytes: int, file_size: int | None
) -> np.ndarray:
    """Header, checks, then exactly the declared data; ``file_size`` for plain files."""
    dtype, dims = _check_magic(stream.read(4), name)
    sizes = stream.read(4 * dims)
    if len(sizes) < 4 * dims:
        raise DataError(f"IDX file {name} is truncated inside its header ({4 + len(sizes)} bytes)")
    shape, expected = _declared(sizes, dtype, dims, name, max_bytes)
    if ndim is not None and dims != ndim:
        raise DataError(f"IDX file {name} has {dims} dimensions {shape}, expected {ndim}")
    header = 4 + 4 * dims
    if file_size is not None and file_size - header != expected:
        raise DataError(
            f"IDX file {name} holds {file_size - header} bytes of data but its header "
            f"{shape} of {dtype.name} needs {expected} (truncated or corrupt)"
        )
    buffer = np.empty(expected, dtype=np.uint8)
    got = _read_exactly(stream, buffer)
    if got < expected:
        raise DataError(
            f"IDX file {name} holds {got} bytes of data but its header "
            f"{shape} of {dtype.name} needs {expected} (truncated or corrupt)"
        )
    if stream.read(1):  # one byte more is enough to refuse; the rest is never inflated
        raise DataError(
            f"IDX file {name} holds more data than its header {shape} of {dtype.name} "
            f"declares ({expected} bytes; truncated or corrupt, or a decompression bomb)"
        )
    return _to_array(buffer, dtype, shape)


def read_idx(
    path: str | os.PathLike[str], *, ndim: int | None = None, max_bytes: int = MAX_IDX_BYTES
) -> torch.Tensor:
    """Read an IDX file (``.gz`` or not) into a tensor of the header's shape and type.

    ``ndim``, when given, is checked (3 for images ``(N, H, W)``, 1 for labels ``(N,)``).
    uint8 stays uint8; the other types map to the torch type of the same width. A header that
    declares more than ``max_bytes`` of data is refused before reading (see the module doc).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"IDX file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an IDX file")
    name = str(path)
    compressed = False
    try:
        with open(path, "rb") as handle:
            compressed = handle.read(2) == _GZIP_MAGIC
            handle.seek(0)
            if not compressed:
                size = os.fstat(handle.fileno()).st_size
                array = _read_stream(handle, name, ndim, max_bytes, size)
            else:
                with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                    array = _read_stream(stream, name, ndim, max_bytes, None)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        if compressed:
            raise DataError(
                f"IDX file {path} is a corrupt or truncated gzip file: {error}"
            ) from None
        raise DataError(f"IDX file {path} cannot be read: {error}") from None
    return torch.from_numpy(array)
