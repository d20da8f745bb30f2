"""The IDX reader: round trips of every type, plain and gzip, and corrupt files -> DataError."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from xaikit.data.idx import parse_idx, read_idx
from xaikit.errors import DataError


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_style_images_and_labels_round_trip(tmp_path, write_idx, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    images_path = write_idx(tmp_path / "train-images-idx3-ubyte", images, gz=gz)
    labels_path = write_idx(tmp_path / "train-labels-idx1-ubyte", labels, gz=gz)

    x = read_idx(images_path, ndim=3)
    y = read_idx(labels_path, ndim=1)

    assert x.dtype == torch.uint8 and x.shape == (7, 28, 28)
    assert torch.equal(x, torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels))
    assert images_path.read_bytes()[:2] == (b"\x1f\x8b" if gz else b"\x00\x00")


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_big_endian_types_are_decoded_to_native_values(tmp_path, write_idx, dtype):
    values = (np.arange(24).reshape(2, 3, 4) - 11).astype(dtype)
    x = read_idx(write_idx(tmp_path / "values.idx", values))
    np.testing.assert_array_equal(x.numpy(), values)
    assert x.numpy().dtype == np.dtype(dtype)


def test_gzip_is_detected_by_content_not_name(tmp_path, write_idx):
    labels = np.arange(5, dtype=np.uint8)
    path = write_idx(tmp_path / "labels-no-gz-suffix", labels, gz=True)
    assert torch.equal(read_idx(path), torch.arange(5, dtype=torch.uint8))


def _corrupt_cases(valid: bytes) -> dict[str, tuple[bytes, str]]:
    return {
        "bad magic": (b"\x01\x00" + valid[2:], "bad magic number"),
        "unknown type": (valid[:2] + b"\x07" + valid[3:], "unknown type code 0x07"),
        "zero dimensions": (valid[:3] + b"\x00" + valid[4:], "bad magic number"),
        "truncated data": (valid[:-5], "truncated or corrupt"),
        "extra data": (valid + b"\x00\x00", "truncated or corrupt"),
        "truncated header": (valid[:9], "truncated inside its header"),
        "too short": (valid[:3], "too short"),
    }


@pytest.mark.parametrize(
    "case",
    ["bad magic", "unknown type", "zero dimensions", "truncated data", "extra data",
     "truncated header", "too short"],
)  # fmt: skip
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path, write_idx, case):
    valid_path = write_idx(tmp_path / "valid", np.zeros((3, 4, 4), dtype=np.uint8))
    data, reason = _corrupt_cases(valid_path.read_bytes())[case]
    path = tmp_path / "broken-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=reason) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_raises_data_error(tmp_path, write_idx):
    packed = gzip.compress(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"abc")
    path = tmp_path / "labels.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert "labels.gz" in str(info.value)


def test_missing_file_and_wrong_dimension_count(tmp_path, write_idx):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope-idx1-ubyte")
    labels = write_idx(tmp_path / "labels", np.arange(4, dtype=np.uint8))
    with pytest.raises(DataError, match="has 1 dimensions .* expected 3"):
        read_idx(labels, ndim=3)


def test_parse_idx_reads_the_header_shape():
    header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    array = parse_idx(header + bytes(range(6)))
    assert array.shape == (2, 3)
    assert array[1, 2] == 5
