"""Small helpers shared by the filter tools: the model's input geometry, normalization,
per-key seeds and batching a data set."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xaikit.data.normalization import check_normalization
from xaikit.errors import DataError, XaikitConfigError
from xaikit.explain.layers import resolve_layer
from xaikit.zoo.registry import TORCHVISION_PREFIX, arch_info, list_models

Normalization = Mapping[str, Sequence[float]]
CONVS = (nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: ``dims`` spatial dimensions (1 signals, 2 images), channels and
    the side length ``size`` (``None`` when the model does not record it)."""

    dims: int
    channels: int
    size: int | None


def first_conv(model: nn.Module) -> tuple[str, nn.Conv1d | nn.Conv2d]:
    """The first ``Conv1d`` / ``Conv2d`` in module order (the input layer of a CNN)."""
    for name, module in model.named_modules():
        if isinstance(module, CONVS):
            return name, module
    raise XaikitConfigError(
        "this model has no Conv1d/Conv2d layer, so the filter tools cannot tell its input "
        "shape; for recurrent models use xaikit.filters.lstm_states"
    )


def input_spec(
    model: nn.Module, *, channels: int | None = None, size: int | None = None
) -> InputSpec:
    """The input geometry: channels from the first convolution, the side length from the zoo
    spec the model carries (``input_size``, else its architecture's default); ``channels`` /
    ``size`` override."""
    _, conv = first_conv(model)
    dims = 1 if isinstance(conv, nn.Conv1d) else 2
    if size is None:
        size = _recorded_size(getattr(model, "spec", None) or {})
    return InputSpec(dims, int(channels or conv.in_channels), None if size is None else int(size))


def _recorded_size(spec: Mapping[str, Any]) -> int | None:
    """The input side length a zoo spec records, or its architecture's default."""
    if spec.get("input_size") is not None:
        return int(spec["input_size"])
    name = str(spec.get("name", ""))
    if name.startswith(TORCHVISION_PREFIX):
        return 224
    if name in list_models():
        return int(arch_info(name).example_input[-1])
    return None


def conv_of(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Conv1d | nn.Conv2d]:
    """The convolution a layer name stands for: the layer itself when it is a convolution,
    else the only convolution inside it (``features.block2`` -> ``features.block2.conv``);
    ``None`` picks the model's first convolution."""
    if layer is None:
        return first_conv(model)
    name, module = resolve_layer(model, layer)
    if isinstance(module, CONVS):
        return name, module
    inner = [(f"{name}.{sub}", m) for sub, m in module.named_modules() if isinstance(m, CONVS)]
    if len(inner) == 1:
        return inner[0]
    if not inner:
        raise XaikitConfigError(
            f"layer {name!r} ({type(module).__name__}) is not and holds no Conv1d/Conv2d; "
            "choose a convolution or a block that contains one"
        )
    listed = ", ".join(n for n, _ in inner[:6]) + (", ..." if len(inner) > 6 else "")
    raise XaikitConfigError(
        f"layer {name!r} holds {len(inner)} convolutions ({listed}); name one of them"
    )


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 without one)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def normalizer(
    normalization: Normalization | None, channels: int, dims: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean, std)`` shaped to broadcast over ``(N, C, *spatial)``, or ``None``."""
    if normalization is None:
        return None
    check_normalization(normalization, channels)
    shape = (1, -1) + (1,) * dims
    mean = torch.as_tensor([float(m) for m in normalization["mean"]], device=device)
    std = torch.as_tensor([float(s) for s in normalization["std"]], device=device)
    return mean.reshape(shape), std.reshape(shape)


def apply_normalization(
    x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    if stats is None:
        return x
    mean, std = stats
    return (x - mean.to(x.dtype)) / std.to(x.dtype)


def is_quiet(quiet: bool | None) -> bool:
    """``quiet`` if given, else whether ``$XAIKIT_QUIET`` is set (to anything but ``0``)."""
    if quiet is not None:
        return bool(quiet)
    return os.environ.get("XAIKIT_QUIET", "") not in ("", "0")


def key_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and ``keys``: the same (seed, keys) always gives the same
    stream, whatever else runs in the same batch."""
    text = "/".join([str(int(seed)), *map(str, keys)]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def key_generator(seed: int, *keys: object) -> torch.Generator:
    """A private CPU generator seeded by :func:`key_seed` (the global RNG is untouched)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(key_seed(seed, *keys))
    return generator


def item_input(item: Any) -> torch.Tensor:
    """The input of a data set item: the item itself, or the first element of
    ``(input, target[, mask])``."""
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    raise DataError(
        f"data set items must be tensors or (input, target[, mask]) tuples, got "
        f"{type(item).__name__}"
    )


def _collate(items: list[Any]) -> torch.Tensor:
    return torch.stack([item_input(item) for item in items])


def dataset_size(dataset: Dataset | torch.Tensor) -> int:
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            "the data set must have a length (a map-style torch Dataset or a tensor)"
        ) from None


def iter_batches(dataset: Dataset | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield ``(n, *input_shape)`` input batches in data set order (no shuffling)."""
    if batch_size < 1:
        raise XaikitConfigError(f"batch_size must be positive, got {batch_size}")
    if isinstance(dataset, torch.Tensor):
        yield from dataset.split(batch_size)
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)


def fetch_inputs(dataset: Dataset | torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """``(len(indices), *input_shape)``: the inputs at ``indices``."""
    if isinstance(dataset, torch.Tensor):
        return dataset[torch.as_tensor(list(indices), dtype=torch.long)]
    return _collate([dataset[int(i)] for i in indices])
