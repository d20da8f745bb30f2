"""The one image-file loader of xaikit: file -> ``(C, H, W)`` float32 tensor.

PIL is used here and nowhere else. Formats: PNG, JPEG, BMP, TIFF, WebP (and GIF, first frame).
Modes, all mapped to values in ``[0, 1]``:

- ``L``, ``1`` -> 1 channel; ``RGB``, ``CMYK``, ``YCbCr`` and other colour modes -> 3 channels;
- ``I;16`` (16-bit PNG/TIFF) and ``I`` -> 1 channel divided by 65535 (``I`` is taken to hold
  16-bit values, which is how such files open); ``F`` (float TIFF) -> clipped to ``[0, 1]``;
- images with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) are
  **composited on white**, the way a viewer shows them (dropping alpha would expose whatever
  colour happens to sit under transparent pixels); palette images (``P``) become RGB;
- EXIF orientation (photos from phones) is applied.

``channels=1`` turns colour into luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as
PIL's ``L``); ``channels=3`` repeats a grey channel. ``size`` resizes with antialiased bilinear
interpolation to ``(size, size)`` (aspect ratio not kept) or ``(H, W)``. ``normalization`` is the
model card's ``{"mean": [...], "std": [...]}``.

Every problem with the file raises :class:`~xaikit.errors.DataError` naming the file and the
reason: missing, a folder, empty, not an image, truncated or corrupt, or so large that it is
refused before decoding (``max_pixels``, default 50 million pixels, guards against
decompression bombs; PIL's own bomb check is turned into the same error).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from xaikit.data.normalization import Normalization, check_normalization, normalize
from xaikit.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS = 50_000_000
_LUMA = (0.299, 0.587, 0.114)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class RawImage(NamedTuple):
    """An image in ``[0, 1]`` before normalization, with the file's size.

    ``image`` ``(C, H, W)`` float32 (after ``channels`` and ``size``); ``original_size``
    ``(H, W)`` of the file, e.g. to draw a heatmap over the image at its own resolution.
    """

    image: torch.Tensor
    original_size: tuple[int, int]


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``(H, W, C+1)`` colour + alpha in ``[0, 1]`` -> ``(H, W, C)`` over a white background."""
    alpha = rgba[..., -1:]
    return rgba[..., :-1] * alpha + (1.0 - alpha)


def _to_array(img: Image.Image) -> np.ndarray:
    """A decoded PIL image -> ``(H, W, C)`` float32 in ``[0, 1]``, C = 1 or 3 (see module doc)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(img).astype(np.float32) / 65535.0
        return np.clip(array, 0.0, 1.0)[..., None]
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None]
    if mode == "P":
        mode_to = "RGBA" if "transparency" in img.info else "RGB"
        img, mode = img.convert(mode_to), mode_to
    elif mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    elif mode == "1":
        img, mode = img.convert("L"), "L"
    elif mode == "RGBa":
        img, mode = img.convert("RGBA"), "RGBA"
    elif mode == "La":
        img, mode = img.convert("LA"), "LA"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img, mode = img.convert("RGB"), "RGB"
    array = np.asarray(img, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    if mode in ("LA", "RGBA"):
        array = _composite_on_white(array)
    return array


def _decode(path: Path, max_pixels: int) -> np.ndarray:
    """Open, check the size before decoding, decode fully; errors become :class:`DataError`."""
    if not path.exists():
        raise DataError(f"image file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise DataError(f"image file {path} is empty (0 bytes)")
    refused = (
        f"image file {path} is refused before decoding: its header claims {{w}}x{{h}} pixels, "
        f"more than the limit of {max_pixels:,} (a corrupt file or a decompression bomb)"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise DataError(refused.format(w=width, h=height))
                if width < 1 or height < 1:
                    raise DataError(f"image file {path} has no pixels ({width}x{height})")
                img.load()  # decode now: a truncated or corrupt file fails here
                return _to_array(ImageOps.exif_transpose(img))
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(
            f"image file {path} is refused before decoding: it is too large ({error})"
        ) from None
    except UnidentifiedImageError:
        raise DataError(
            f"{path} is not an image file that can be read (supported: "
            f"{', '.join(e.lstrip('.').upper() for e in IMAGE_EXTENSIONS)})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        raise DataError(f"image file {path} is truncated or corrupt: {error}") from None


def _resolve_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise DataError(f"size must be a positive int or an (H, W) pair, got {size!r}")
    return int(size[0]), int(size[1])


def convert_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """``(C, H, W)`` with C = 1 or 3 -> ``(channels, H, W)``: luminance or grey repeated."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    have = image.shape[0]
    if have == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1).contiguous()
    luma = torch.tensor(_LUMA, dtype=image.dtype, device=image.device)
    return (image * luma[:, None, None]).sum(dim=0, keepdim=True)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, *size)`` by antialiased bilinear interpolation, kept in [0, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(
        image[None], size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]
    return out.clamp_(0.0, 1.0)


def read_image(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> RawImage:
    """Read an image file unnormalized: file -> ``(C, H, W)`` float32 in ``[0, 1]`` + its size.

    ``channels`` None keeps the file's (1 for grey, 3 for colour); ``size`` None keeps its size.
    Use this for overlays; :func:`load_image` for model inputs.
    """
    path = Path(path)
    target_size = _resolve_size(size)
    array = _decode(path, max_pixels)
    original_size = (int(array.shape[0]), int(array.shape[1]))
    image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if channels is not None:
        image = convert_channels(image, channels)
    if target_size is not None:
        image = resize_image(image, target_size)
    return RawImage(image.contiguous(), original_size)


def load_image(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    normalization: Normalization | None = None,
    max_pixels: int = MAX_PIXELS,
) -> torch.Tensor:
    """Load an image file as a model input: file -> ``(C, H, W)`` float32.

    Values are in ``[0, 1]``, then ``(x - mean) / std`` per channel when ``normalization``
    (a model card's ``{"mean": [...], "std": [...]}``) is given; with ``channels`` None the
    image then gets as many channels as the normalization has values (1 or 3). See the module
    docstring for the modes, alpha handling and errors.
    """
    if normalization is not None:
        check_normalization(normalization)
        if channels is None and len(normalization["mean"]) in (1, 3):
            channels = len(normalization["mean"])
    image = read_image(path, channels=channels, size=size, max_pixels=max_pixels).image
    if normalization is not None:
        image = normalize(image, normalization)
    return image


def check_min_size(
    image: torch.Tensor | tuple[int, int], min_size: int | tuple[int, int], *, name: str = "image"
) -> None:
    """Raise :class:`DataError` if ``image`` (``(..., H, W)`` or an ``(H, W)`` size) is smaller.

    A 1x1 image loads fine; a model whose pooling needs e.g. 32x32 calls this first.
    """
    h, w = (int(s) for s in (image.shape[-2:] if isinstance(image, torch.Tensor) else image))
    min_h, min_w = (min_size, min_size) if isinstance(min_size, int) else min_size
    if h < min_h or w < min_w:
        raise DataError(
            f"{name} is {h}x{w} pixels, smaller than the {min_h}x{min_w} needed; "
            f"pass a larger image or resize it"
        )


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by extension, case-insensitive, hidden files skipped), sorted.

    With ``recursive`` the subfolders are searched too (sorted by relative path).
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder of images")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        (
            p
            for p in candidates
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        ),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
