"""Data: data sets by name (offline, deterministic) and the one image-file loader.

>>> from xaikit.data import load
>>> train = load("shapes-multilabel", "train", n=1000, seed=0)
>>> image, target, masks = train[0]   # (3, 64, 64), (6,), (6, 64, 64)

See :mod:`xaikit.data.registry` for the names and :mod:`xaikit.data.images` for image files.
"""

from xaikit.data.base import TensorDataset, XaiDataset
from xaikit.data.idx import read_idx
from xaikit.data.images import (
    IMAGE_EXTENSIONS,
    RawImage,
    check_min_size,
    list_images,
    load_image,
    read_image,
)
from xaikit.data.normalization import check_normalization, denormalize, normalize
from xaikit.data.registry import dataset_info, list_datasets, load, register_dataset
from xaikit.data.shapes import SHAPE_CLASSES, ShapesDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "RawImage",
    "ShapesDataset",
    "TensorDataset",
    "XaiDataset",
    "check_min_size",
    "check_normalization",
    "dataset_info",
    "denormalize",
    "list_datasets",
    "list_images",
    "load",
    "load_image",
    "normalize",
    "read_idx",
    "read_image",
    "register_dataset",
]
