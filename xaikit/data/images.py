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

Only those formats are decoded (:data:`IMAGE_FORMATS`): PIL tells the format by the file's
content, whatever its name, but is only allowed to try these. A file holding anything else -
PostScript/EPS (which PIL would hand to Ghostscript, an interpreter of a programming language),
TGA, SGI, PCX, DDS, SPIDER, ... - is refused, even when it is called ``photo.png``.

Every problem with the file raises :class:`~xaikit.errors.DataError` naming the file and the
reason: missing, a folder, empty, not an image in an allowed format, truncated or corrupt
(any error of the decoder, whatever its type), or so large that it is refused before decoding
(``max_pixels``, default 50 million pixels, guards against decompression bombs; PIL's own bomb
check is turned into the same error). Non-finite values of float (``F``) images become 0 (NaN,
-inf) or 1 (+inf), so every image is finite.

Memory: the pixels are converted and resized a strip of rows at a time, so reading a large
file holds PIL's pixels and the result, and a ``size`` (or :func:`read_image_with_preview`'s
bounded picture) no full-size float32 copy at all.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from xaikit.data.normalization import Normalization, check_normalization, normalize
from xaikit.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: The PIL formats xaikit decodes, the documented ones: ``Image.open(..., formats=...)`` tries
#: only these, by content. Everything else PIL knows (EPS runs Ghostscript) is never tried.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
# What an opened image may report as its format: PIL's JPEG opener returns multi-picture
# JPEGs (cameras, phones) as "MPO", which is still a JPEG decoded by the same code.
_DECODED_FORMATS = frozenset((*IMAGE_FORMATS, "MPO"))
MAX_PIXELS = 50_000_000
# Rows converted to float32 at a time: bounds the temporary copies of a large image to a strip.
_STRIP_ROWS = 256
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
        # NaN would pass np.clip and reach the model, the scores and results.json.
        array = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(array, 0.0, 1.0)[..., None]
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


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """``PIL.Image.open`` limited to :data:`IMAGE_FORMATS` (by content, whatever the name).

    The one place xaikit opens image files; PIL's own errors are raised as they are (an
    :class:`~PIL.UnidentifiedImageError` for a file in any other format). :func:`read_image`
    and :func:`load_image` add the checks and turn every error into :class:`DataError`.
    """
    img = Image.open(path, formats=IMAGE_FORMATS)
    if img.format not in _DECODED_FORMATS:  # defence in depth: an opener returned another kind
        img.close()
        raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}")
    return img


class _Target(NamedTuple):
    """One version of the image :func:`_decode` makes: its channels (None: the file's) and a
    function of the file's ``(H, W)`` giving its size."""

    channels: int | None
    size: Callable[[tuple[int, int]], tuple[int, int]]


def _horizontal(strip: torch.Tensor, width: int) -> torch.Tensor:
    """The width pass of :func:`resize_image` on a strip of rows."""
    if strip.shape[-1] == width:
        return strip
    size = (int(strip.shape[1]), width)
    return F.interpolate(
        strip[None], size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]


def _strips(img: Image.Image, targets: Sequence[_Target]) -> list[torch.Tensor]:
    """A decoded PIL image -> every target, a strip of rows at a time.

    Each strip is converted (:func:`_to_array`, :func:`convert_channels`) and resized in width,
    then each target is resized in height. PyTorch's antialiased bilinear resize is separable
    and runs exactly these two passes (width, then height), so the values equal those of
    :func:`resize_image` on the whole image - but only PIL's pixels and the width-resized
    targets are held, never a full-size float32 copy of an image that is scaled down.
    """
    width, height = img.size
    sizes = [target.size((height, width)) for target in targets]
    partial: list[torch.Tensor | None] = [None] * len(targets)
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(top + _STRIP_ROWS, height)
        rows = _to_array(img.crop((0, top, width, bottom)) if height > _STRIP_ROWS else img)
        strip = torch.from_numpy(np.ascontiguousarray(rows.transpose(2, 0, 1)))
        for k, (target, (_, out_width)) in enumerate(zip(targets, sizes)):
            part = strip if target.channels is None else convert_channels(strip, target.channels)
            part = _horizontal(part, out_width)
            held = partial[k]
            if held is None:  # the channel count is known from the first strip
                held = partial[k] = torch.empty(part.shape[0], height, out_width, dtype=part.dtype)
            held[:, top:bottom] = part
    images = []
    for image, out_size in zip(partial, sizes):
        assert image is not None  # height >= 1 was checked
        if out_size != (height, width):
            image = F.interpolate(
                image[None], size=out_size, mode="bilinear", antialias=True, align_corners=False
            )[0].clamp_(0.0, 1.0)  # the height pass; clamped as resize_image does
        images.append(image.contiguous())
    return images


def _decode(
    path: Path, max_pixels: int, targets: Sequence[_Target]
) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Open (allowed formats only), check the size before decoding, decode fully -> every
    target ``(C, H, W)`` float32 and the file's ``(H, W)``; every error becomes
    :class:`DataError` naming the file."""
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
            with open_image(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise DataError(refused.format(w=width, h=height))
                if width < 1 or height < 1:
                    raise DataError(f"image file {path} has no pixels ({width}x{height})")
                img.load()  # decode now: a truncated or corrupt file fails here
                # In place: the default returns a copy, a second full set of PIL's pixels.
                ImageOps.exif_transpose(img, in_place=True)
                return _strips(img, targets), (img.height, img.width)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(
            f"image file {path} is refused before decoding: it is too large ({error})"
        ) from None
    except UnidentifiedImageError:
        raise DataError(
            f"{path} is not an image file that can be read: its content is none of the "
            f"allowed formats {', '.join(IMAGE_FORMATS)} (whatever its name)"
        ) from None
    except Exception as error:  # any decoder failure is this file's problem
        # PIL's plugins raise whatever their parsing meets: OSError, SyntaxError, ValueError,
        # struct.error, ZeroDivisionError, NotImplementedError (DDS), AttributeError (SPIDER),
        # even MemoryError for a crafted header. One bad file must not end a folder run.
        kind = type(error).__name__
        raise DataError(f"image file {path} is truncated or corrupt: {kind}: {error}") from None


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


def _check_channels(channels: int | None) -> None:
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


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
    target_size = _resolve_size(size)
    _check_channels(channels)
    target = _Target(channels, (lambda own: own) if target_size is None else lambda _: target_size)
    (image,), original_size = _decode(Path(path), max_pixels, [target])
    return RawImage(image, original_size)


class PreviewedImage(NamedTuple):
    """:func:`read_image_with_preview`: the image, a bounded picture of it, the file's size.

    ``image`` ``(C, H, W)`` float32 in ``[0, 1]`` (as :func:`read_image` gives it); ``preview``
    ``(c, h, w)`` float32 in ``[0, 1]``, the file's channels, longer side at most the limit;
    ``original_size`` ``(H, W)`` of the file.
    """

    image: torch.Tensor
    preview: torch.Tensor
    original_size: tuple[int, int]


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(H, W)`` scaled down, aspect kept, so the longer side is at most ``max_side``."""
    height, width = size
    if max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_image_with_preview(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    preview_side: int = 2048,
    max_pixels: int = MAX_PIXELS,
) -> PreviewedImage:
    """Read an image file once for a model and for drawing: ``image`` is exactly
    :func:`read_image`'s with ``channels`` and ``size``; ``preview`` the file at its own size
    and channels, scaled down (antialiased bilinear) when its longer side exceeds
    ``preview_side``. A large file costs PIL's pixels and the scaled versions, not a full-size
    float32 copy (e.g. ~0.4 GB instead of ~0.8 GB for 7000 x 7000 RGB).
    """
    target_size = _resolve_size(size)
    _check_channels(channels)
    if preview_side < 1:
        raise DataError(f"preview_side must be positive, got {preview_side!r}")
    targets = [
        _Target(channels, (lambda own: own) if target_size is None else lambda _: target_size),
        _Target(None, lambda own: fit_size(own, preview_side)),
    ]
    (image, preview), original_size = _decode(Path(path), max_pixels, targets)
    return PreviewedImage(image, preview, original_size)


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
