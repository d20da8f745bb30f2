"""Per-channel normalization as recorded in a model card: ``{"mean": [...], "std": [...]}``.

Data sets return inputs unnormalized (images in ``[0, 1]``) and record in their
``normalization`` attribute the statistics a model should apply; the trainer applies them and
writes them into the model card, and :func:`xaikit.data.load_image` applies the card's to a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xaikit.errors import DataError

Normalization = Mapping[str, Sequence[float]]


def check_normalization(normalization: Normalization, channels: int | None = None) -> None:
    """Raise :class:`DataError` unless ``normalization`` has equal-length ``mean``/``std`` lists.

    Each list holds one value per channel (or a single value for every channel); every std is
    positive. With ``channels`` given, the lists must have that length or length 1.
    """
    if not isinstance(normalization, Mapping) or set(normalization) < {"mean", "std"}:
        raise DataError(
            f"normalization must be a dict with 'mean' and 'std' lists, got {normalization!r}"
        )
    mean, std = list(normalization["mean"]), list(normalization["std"])
    if not mean or len(mean) != len(std):
        raise DataError(
            f"normalization mean and std must be non-empty lists of equal length, "
            f"got mean={mean} std={std}"
        )
    if any(not float(s) > 0 for s in std):
        raise DataError(f"normalization std values must be positive, got {std}")
    if channels is not None and len(mean) not in (1, channels):
        raise DataError(
            f"normalization has {len(mean)} channel values but the input has {channels} "
            f"channels; pass channels={len(mean)} or use a matching model card"
        )


def _stats(
    normalization: Normalization, x: torch.Tensor, channel_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    channels = x.shape[channel_dim]
    check_normalization(normalization, channels)
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    kwargs = {"dtype": x.dtype, "device": x.device}
    mean = torch.as_tensor([float(m) for m in normalization["mean"]], **kwargs).reshape(shape)
    std = torch.as_tensor([float(s) for s in normalization["std"]], **kwargs).reshape(shape)
    return mean, std


def normalize(x: torch.Tensor, normalization: Normalization, channel_dim: int = -3) -> torch.Tensor:
    """``(x - mean) / std`` per channel.

    Shapes: ``(C, H, W)`` or ``(N, C, H, W)`` with the default ``channel_dim=-3``; use
    ``channel_dim=-2`` for signals ``(N, C, L)`` and ``-1`` for sequences ``(N, T, F)``.
    """
    mean, std = _stats(normalization, x, channel_dim)
    return (x - mean) / std


def denormalize(
    x: torch.Tensor, normalization: Normalization, channel_dim: int = -3
) -> torch.Tensor:
    """Invert :func:`normalize`: ``x * std + mean`` per channel (e.g. to draw an overlay)."""
    mean, std = _stats(normalization, x, channel_dim)
    return x * std + mean
