"""The Fourier magnitude spectrum of natural images, for MACO (:mod:`xaikit.filters.maco`).

:func:`spectrum_from` estimates it from images: each image is centre-cropped to a square,
resized (antialiased bilinear) to ``size`` x ``size``, mapped to MACO's decorrelated colour
space (the inverse of :data:`xaikit.filters.param.COLOR_DECORRELATION`, for 3 channels),
and the modulus of its ``rfft2`` is averaged over the images: ``(C, size, size // 2 + 1)``,
the layout of horama's ``imagenet_decorrelated.npy``. :func:`fit_spectrum` resizes a
spectrum to another canvas as horama does (antialiased bilinear on the magnitude array).

Results are cached on disk, keyed by the data and the size, under :func:`cache_dir`
(``$XAIKIT_CACHE``, else ``$XDG_CACHE_HOME/xaikit``, else ``~/.cache/xaikit``) in
``spectra/``, each ``.npy`` with a ``.json`` beside it saying what it was computed from.

:func:`default_spectrum` works offline: it is computed at first use from the one
photograph every xaikit install has, matplotlib's sample image ``grace_hopper.jpg``
(``matplotlib/mpl-data/sample_data``; portrait of Rear Admiral Grace Hopper, US Navy,
public domain), as the mean over 64 seeded random square crops (sides 40-100 % of the
shorter side, random horizontal flips), and cached. It is a natural-image spectrum (close
to ``1 / f``), not ImageNet's; pass ``spectrum_from(your data)`` for a spectrum of the
data the model was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from xaikit.errors import DataError, XaikitConfigError
from xaikit.filters._common import dataset_size, iter_batches
from xaikit.filters.param import COLOR_DECORRELATION

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_VERSION = 1
DEFAULT_CROPS = 64


def cache_dir() -> Path:
    """``$XAIKIT_CACHE``, else ``$XDG_CACHE_HOME/xaikit``, else ``~/.cache/xaikit``."""
    if os.environ.get("XAIKIT_CACHE"):
        return Path(os.environ["XAIKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "xaikit"
    return Path("~/.cache/xaikit").expanduser()


def to_decorrelated(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB -> MACO's decorrelated colour coordinates (the inverse of
    :func:`xaikit.filters.param._decorrelate`); other channel counts pass unchanged."""
    if images.shape[1] != 3:
        return images
    inverse = torch.linalg.inv(COLOR_DECORRELATION.double()).to(images.dtype)
    return torch.einsum("bchw,dc->bdhw", images, inverse)


def _square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop ``(N, C, H, W)`` to a square and resize to ``size`` (antialiased)."""
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[..., top : top + side, left : left + side]
    if side == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def _channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    raise DataError(f"cannot make {images.shape[1]}-channel images {channels}-channel")


def image_spectrum(images: torch.Tensor, size: int, *, channels: int | None = None) -> torch.Tensor:
    """``(N, C, H, W)`` images in ``[0, 1]`` -> ``(C, size, size // 2 + 1)``: the mean
    ``|rfft2|`` of the squared, resized, colour-decorrelated images."""
    images = images.double()
    if images.dim() == 3:
        images = images[None]
    if channels is not None:
        images = _channels(images, channels)
    return torch.fft.rfft2(to_decorrelated(_square(images, size))).abs().mean(dim=0).float()


def fit_spectrum(magnitude: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a magnitude spectrum ``(C, h, w')`` to ``(C, height, width // 2 + 1)`` with
    antialiased bilinear interpolation (horama's ``init_maco_buffer``)."""
    shape = (height, width // 2 + 1)
    magnitude = torch.as_tensor(magnitude, dtype=torch.float32)
    if tuple(magnitude.shape[-2:]) == shape:
        return magnitude
    return F.interpolate(
        magnitude[None], size=shape, mode="bilinear", align_corners=False, antialias=True
    )[0]


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as picture:
        rgb = picture.convert("RGB")
        array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def _cached(key: dict[str, Any], compute, cache: bool) -> torch.Tensor:
    """Read the spectrum of ``key`` from the cache, or ``compute()`` and store it."""
    if not cache:
        return compute()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    folder = cache_dir() / "spectra"
    path = folder / f"{digest}_{key['size']}.npy"
    if path.is_file():
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):
            pass  # a damaged file: recompute
    magnitude = compute()
    try:
        import io

        from xaikit.io import atomic_write_bytes, atomic_write_json

        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, magnitude.numpy())
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_json(path.with_suffix(".json"), key)
    except OSError:
        pass  # a read-only cache is not an error
    return magnitude


def spectrum_from(
    source: str | os.PathLike[str] | Dataset | torch.Tensor,
    size: int = 224,
    *,
    channels: int = 3,
    n: int | None = None,
    batch_size: int = 32,
    cache: bool = True,
    key: str | None = None,
) -> torch.Tensor:
    """The mean Fourier magnitude of images, ``(channels, size, size // 2 + 1)``.

    Args:
        source: a folder of images (searched recursively), an xaikit data set name (its
            train split), a map-style data set of ``[0, 1]`` images (items or
            ``(image, label)``), or a tensor ``(N, C, H, W)`` in ``[0, 1]``.
        size: the canvas side the spectrum is for (other sizes: :func:`fit_spectrum`).
        channels: 3 (RGB, decorrelated) or 1 (grey); images are converted.
        n: use only the first ``n`` images.
        cache: read / write the on-disk cache (:func:`cache_dir`). A folder is keyed by
            its path and its files' names, sizes and times; a data set name by the name
            and ``n``; a tensor by its bytes; a data set object only when ``key`` names it.
        key: a name for a data set object (or to override the automatic key).
    """
    if size < 2:
        raise XaikitConfigError(f"the spectrum size must be at least 2, got {size}")
    head: dict[str, Any] = {"version": _VERSION, "size": int(size), "channels": int(channels)}
    head["n"] = n
    if isinstance(source, torch.Tensor):
        images = source if n is None else source[:n]
        digest = hashlib.sha256(images.detach().float().cpu().numpy().tobytes()).hexdigest()
        ident = key or f"tensor:{tuple(images.shape)}:{digest}"
        return _cached(
            {**head, "source": ident},
            lambda: _mean_spectrum(iter_batches(images, batch_size), size, channels),
            cache,
        )
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = Path(source).resolve()
        files = _folder_files(folder)[:n]
        listing = [
            [str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files
        ]
        ident = key or f"folder:{folder}"

        def batches():
            for i in range(0, len(files), batch_size):
                yield [_read_image(p) for p in files[i : i + batch_size]]

        return _cached(
            {**head, "source": ident, "files": listing},
            lambda: _mean_spectrum(batches(), size, channels),
            cache,
        )
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        from torch.utils.data import Subset

        from xaikit.data import load

        def compute() -> torch.Tensor:
            dataset = load(name, "train")
            if n is not None:
                dataset = Subset(dataset, range(min(n, len(dataset))))
            return _mean_spectrum(iter_batches(dataset, batch_size), size, channels)

        return _cached({**head, "source": key or f"data:{name}:train"}, compute, cache)
    dataset = source
    if n is not None:
        from torch.utils.data import Subset

        dataset = Subset(dataset, range(min(n, dataset_size(dataset))))
    return _cached(
        {**head, "source": key or "dataset"},
        lambda: _mean_spectrum(iter_batches(dataset, batch_size), size, channels),
        cache and key is not None,
    )


def _mean_spectrum(batches, size: int, channels: int) -> torch.Tensor:
    """The mean ``|rfft2|`` over batches (each a tensor or a list of ``(C, H, W)``
    images of any sizes)."""
    total = torch.zeros(channels, size, size // 2 + 1, dtype=torch.float64)
    count = 0
    for batch in batches:
        items = list(batch) if isinstance(batch, (list, tuple)) else [batch]
        for images in items:
            images = images if images.dim() == 4 else images[None]
            spectrum = image_spectrum(images, size, channels=channels).double()
            total += spectrum * images.shape[0]
            count += images.shape[0]
    if count == 0:
        raise DataError("no images to estimate a spectrum from")
    return (total / count).float()


def _default_image() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def default_spectrum(size: int, *, channels: int = 3, cache: bool = True) -> torch.Tensor:
    """The offline default: the mean magnitude over :data:`DEFAULT_CROPS` seeded random
    square crops (40-100 % of the shorter side, random horizontal flips) of matplotlib's
    ``grace_hopper.jpg``, ``(channels, size, size // 2 + 1)``; cached after first use."""
    path = _default_image()
    if not path.is_file():
        raise DataError(
            f"the default MACO spectrum needs matplotlib's sample image {path}; "
            "pass spectrum_from(images) instead"
        )
    key = {
        "version": _VERSION,
        "size": int(size),
        "channels": int(channels),
        "source": f"default:matplotlib/sample_data/grace_hopper.jpg:{path.stat().st_size}",
        "crops": DEFAULT_CROPS,
    }

    def compute() -> torch.Tensor:
        image = _read_image(path)
        gen = torch.Generator().manual_seed(0)
        h, w = image.shape[-2:]
        short = min(h, w)
        crops = []
        for _ in range(DEFAULT_CROPS):
            side = int(short * (0.4 + 0.6 * torch.rand((), generator=gen)))
            top = int(torch.randint(0, h - side + 1, (), generator=gen))
            left = int(torch.randint(0, w - side + 1, (), generator=gen))
            crop = image[:, top : top + side, left : left + side]
            if torch.rand((), generator=gen) < 0.5:
                crop = crop.flip(-1)
            crops.append(crop)
        return _mean_spectrum([crops], size, channels)

    return _cached(key, compute, cache)
