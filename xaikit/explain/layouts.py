"""How a layer's output is read as a spatial map of the input: the one place that decides.

A CAM needs ``(N, C, *S)``: channels, then the spatial axes of the input. Layers output that
in three layouts:

``nchw``
    ``(N, C, H, W)`` (or ``(N, C, L)`` for signals): convolutional networks.
``nhwc``
    ``(N, H, W, C)``, channels last: Swin, MambaOut, timm's channels-last blocks.
``tokens``
    ``(N, P + H*W, C)``, a token sequence in raster order with ``P`` prefix tokens (class,
    distillation, register tokens: ViT, DeiT, BEiT, EVA, CaiT) or none (Mixer, ResMLP).

:func:`read_layout` decides from the output's shape, the input's spatial size and what the
model states about itself (timm's ``patch_embed.grid_size`` and ``num_prefix_tokens``,
torchvision's ``patch_size`` and class token), *before* any backward pass. A shape that fits
no layout is refused with a message naming what was seen. :func:`to_map` then reorders the
captured activations and their gradients alike (a permutation and a reshape, so every CAM
formula, which pairs ``A[c, i]`` with ``dS/dA[c, i]``, is unchanged by it); the prefix tokens
are dropped, as pytorch-grad-cam's documented ``reshape_transform`` does.

A map's spatial axes must be the input's seen through one stride: ``H ~ H_in / s`` and
``W ~ W_in / s`` for the same ``s >= 1`` (rounding, and valid convolutions that trim a few
pixels, are allowed). That is what keeps an attention matrix ``(N, heads, 196, 196)`` or the
keys ``(N, heads, 197, 64)`` from being read as images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from xaikit._names import RESHAPE_CHOICES
from xaikit.errors import XaikitConfigError

LayoutName = Literal["nchw", "nhwc", "tokens"]
#: A user's own reading of a captured tensor: ``(N, ...) -> (N, C, H, W)``, like
#: pytorch-grad-cam's ``reshape_transform``.
ReshapeFn = Callable[[torch.Tensor], torch.Tensor]
Reshape = str | ReshapeFn

# The most prefix tokens guessed when the model does not state its count (class and
# distillation tokens; register tokens come with timm's `num_prefix_tokens`).
_MAX_PREFIX = 2


@dataclass(frozen=True)
class Layout:
    """How to read one captured output ``(N, *native)`` as ``(N, C, *grid)``.

    Attributes:
        name: ``"nchw"``, ``"nhwc"``, ``"tokens"`` or ``"custom"`` (a user's callable).
        grid: the spatial size of the map, e.g. ``(14, 14)``.
        channels: ``C``.
        prefix: tokens before the grid (``tokens`` only), dropped from the map.
    """

    name: str
    grid: tuple[int, ...]
    channels: int
    prefix: int = 0
    fn: ReshapeFn | None = None

    def describe(self) -> str:
        """A short label for ``xaikit layers`` and messages, e.g. ``tokens 1+14x14``."""
        grid = "x".join(map(str, self.grid))
        if self.name == "tokens":
            return f"tokens {self.prefix}+{grid}" if self.prefix else f"tokens {grid}"
        return f"{self.name} {grid}"


@dataclass(frozen=True)
class ModelHints:
    """What a model states about its token grid (``None`` where it says nothing)."""

    patch_grid: tuple[int, int] | None = None
    prefix: int | None = None


def model_hints(model: nn.Module, input_size: tuple[int, ...]) -> ModelHints:
    """Read the patch grid and prefix-token count a ViT-family model states.

    timm: ``patch_embed.grid_size`` (fixed-size models; dynamic-size ones from
    ``patch_embed.patch_size``) and ``num_prefix_tokens``. torchvision
    ``VisionTransformer``: ``patch_size`` and its one class token.
    """
    grid: tuple[int, int] | None = None
    prefix: int | None = None
    if len(input_size) != 2:
        return ModelHints()
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    stated = getattr(embed, "grid_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[:2]
        grid = (input_size[0] // int(ph), input_size[1] // int(pw))
    elif stated is not None:
        grid = (int(stated[0]), int(stated[1]))
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int):
        prefix = count
    tv_patch = getattr(model, "patch_size", None)
    if grid is None and isinstance(tv_patch, int) and hasattr(model, "class_token"):
        grid = (input_size[0] // tv_patch, input_size[1] // tv_patch)
        prefix = 1
    return ModelHints(grid, prefix)


def fits_input(grid: tuple[int, ...], input_size: tuple[int, ...]) -> bool:
    """Whether ``grid`` is the input's spatial size seen through one stride ``s >= 1``.

    Each axis may be off by rounding (``ceil`` / ``floor``) or by what a few valid (unpadded)
    convolutions trim: up to ``max(2, 10 %)`` of the axis at the common stride.
    """
    if len(grid) != len(input_size) or any(g < 1 for g in grid):
        return False
    if any(g > i for g, i in zip(grid, input_size)):
        return False
    if len(grid) == 2:
        # One stride for both axes: the grid has the input's aspect ratio, to within the
        # rounding of one axis (a 7x6 map of a square image is no map of it).
        (gh, gw), (height, width) = grid, input_size
        if abs(gh * width / height - gw) >= 1:
            return False
    strides = [i / g for g, i in zip(grid, input_size)]
    stride = math.exp(sum(math.log(s) for s in strides) / len(strides))  # geometric mean
    # The stride of a real network is an integer (or close: valid convolutions trim a few
    # pixels). Snap to the nearest one; a map 196 rows high on a 224-pixel input is not.
    snapped = max(1, round(stride))
    for g, i in zip(grid, input_size):
        expected = i / snapped
        if abs(g - expected) > max(2.0, 0.1 * expected):
            return False
    return True


def _spatial(grid: tuple[int, ...]) -> bool:
    return all(g > 1 for g in grid)


def _token_grid(
    tokens: int, input_size: tuple[int, ...], hints: ModelHints
) -> tuple[int, tuple[int, int]] | None:
    """``(prefix, grid)`` for a sequence of ``tokens`` tokens, or ``None``."""
    if len(input_size) != 2:
        return None
    prefixes = [hints.prefix] if hints.prefix is not None else list(range(_MAX_PREFIX + 1))
    # The model's stated patch grid first (the patch-embedding stage), then grids that
    # follow the input's aspect ratio (the later stages of hierarchical token models).
    for prefix in prefixes:
        count = tokens - prefix
        if count < 1:
            continue
        if hints.patch_grid is not None and math.prod(hints.patch_grid) == count:
            return prefix, hints.patch_grid
        grid = _grid_for_count(count, input_size)
        if grid is not None:
            return prefix, grid
    return None


def _grid_for_count(count: int, input_size: tuple[int, ...]) -> tuple[int, int] | None:
    for gh in range(1, count + 1):
        if count % gh:
            continue
        gw = count // gh
        if _spatial((gh, gw)) and fits_input((gh, gw), input_size):
            return gh, gw
    return None


def _candidates(
    shape: tuple[int, ...], input_size: tuple[int, ...], hints: ModelHints, strict: bool = True
) -> dict[str, Layout]:
    """Every layout ``shape`` can be read in, with its grid (``strict``: every spatial axis
    longer than 1, as ``"auto"`` needs; a layer chosen by hand may be 1x1)."""
    dims = len(input_size)
    found: dict[str, Layout] = {}

    def spatial(grid: tuple[int, ...]) -> bool:
        return _spatial(grid) if strict else True

    if len(shape) == dims + 2:
        grid = tuple(shape[2:])
        if spatial(grid) and fits_input(grid, input_size):
            found["nchw"] = Layout("nchw", grid, shape[1])
        if dims == 2:
            grid = tuple(shape[1:3])
            if spatial(grid) and fits_input(grid, input_size):
                found["nhwc"] = Layout("nhwc", grid, shape[3])
    if dims == 2 and len(shape) == 3:
        read = _token_grid(shape[1], input_size, hints)
        if read is not None:
            prefix, grid = read
            found["tokens"] = Layout("tokens", grid, shape[2], prefix)
    return found


def read_layout(
    shape: tuple[int, ...],
    input_size: tuple[int, ...],
    hints: ModelHints | None = None,
    reshape: Reshape = "auto",
    *,
    channels_last: bool = False,
    strict: bool = True,
) -> Layout | None:
    """The layout of an output of ``shape`` for inputs of spatial size ``input_size``.

    Args:
        shape: the captured output's shape ``(N, ...)``.
        input_size: the input's spatial size, ``(H, W)`` or ``(L,)``.
        hints: the model's own patch grid and prefix count (see :func:`model_hints`).
        reshape: ``"auto"`` (the one layout the shape fits; ``nchw`` over ``nhwc`` when both
            fit, unless ``channels_last``), or a layout name to insist on.
        channels_last: the module is known to work channels-last (a ``LayerNorm`` over the
            last axis, a ``Permute`` after it); breaks an ``nchw`` / ``nhwc`` tie.
        strict: every spatial axis longer than 1 (what ``layer="auto"`` looks for).

    Returns:
        The layout, or ``None`` when the shape is not a map of the input in that reading.
    """
    found = _candidates(tuple(shape), tuple(input_size), hints or ModelHints(), strict)
    if reshape != "auto":
        return found.get(str(reshape))
    if "nchw" in found and "nhwc" in found:
        return found["nhwc"] if channels_last else found["nchw"]
    for name in ("nchw", "nhwc", "tokens"):
        if name in found:
            return found[name]
    return None


def check_reshape(reshape: object) -> Reshape:
    """Validate ``reshape=`` (a name from :data:`RESHAPE_CHOICES` or a callable)."""
    if callable(reshape) or reshape in RESHAPE_CHOICES:
        return reshape  # type: ignore[return-value]
    raise XaikitConfigError(
        f"reshape must be one of {', '.join(RESHAPE_CHOICES)} or a callable "
        f"(N, ...) -> (N, C, H, W); got {reshape!r}"
    )


def layout_for(
    layer: str,
    shape: tuple[int, ...],
    input_size: tuple[int, ...],
    hints: ModelHints,
    reshape: Reshape = "auto",
    *,
    sample: torch.Tensor | None = None,
    channels_last: bool = False,
) -> Layout:
    """:func:`read_layout` that refuses, with a message naming the shape and the options.

    For a callable ``reshape``, ``sample`` (the captured tensor) is passed through it once
    to learn the grid; its result must be ``(N, C, *S)`` with the input's spatial rank.
    """
    if callable(reshape):
        if sample is None:
            raise XaikitConfigError("a reshape callable needs the captured tensor")
        with torch.no_grad():
            out = reshape(sample.detach())
        if not isinstance(out, torch.Tensor) or out.dim() != len(input_size) + 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise XaikitConfigError(
                f"reshape= must return (N, C, *S) with {len(input_size)} spatial axes for "
                f"layer {layer!r}; it returned {got}"
            )
        if out.shape[0] != shape[0]:
            raise XaikitConfigError(
                f"reshape= must keep the batch axis: {shape[0]} in, {out.shape[0]} out"
            )
        return Layout("custom", tuple(out.shape[2:]), out.shape[1], fn=reshape)
    layout = read_layout(
        shape, input_size, hints, reshape, channels_last=channels_last, strict=False
    )
    if layout is not None:
        return layout
    seen = "x".join(str(s) for s in shape[1:])
    readings = _candidates(tuple(shape), tuple(input_size), hints, strict=False)
    size = "x".join(map(str, input_size))
    if reshape != "auto" and readings:
        others = ", ".join(f"{r.describe()}" for r in readings.values())
        why = f"it does not read as {reshape} (it reads as: {others})"
    else:
        why = "it is not a map of the input in any layout (nchw, nhwc, tokens)"
    raise XaikitConfigError(
        f"layer {layer!r} outputs (N, {seen}) for {size} inputs: {why}; choose a layer "
        "whose output is a spatial map (`xaikit layers` shows each layout), or pass "
        "--reshape / reshape= nchw, nhwc or tokens (in Python also a callable "
        "(N, ...) -> (N, C, H, W))"
    )


def to_map(tensor: torch.Tensor, layout: Layout, lead: int = 1) -> torch.Tensor:
    """Reorder ``(*lead, *native)`` into ``(*lead, C, *grid)`` (differentiable, a view where
    it can be).

    Args:
        tensor: activations ``(N, *native)`` (``lead=1``) or per-target gradients
            ``(N, K, *native)`` (``lead=2``).
        layout: from :func:`read_layout`.
        lead: how many leading axes to keep.
    """
    if layout.name == "nchw":
        return tensor
    heads = tensor.shape[:lead]
    if layout.name == "custom":
        assert layout.fn is not None
        flat = tensor.reshape(-1, *tensor.shape[lead:])
        if lead == 1:
            return layout.fn(flat)
        # The callable expects a batch of N: give it every (n, k) pair as one batch.
        out = layout.fn(flat)
        return out.reshape(*heads, *out.shape[1:])
    if layout.name == "nhwc":
        dims = tensor.dim()
        return tensor.permute(*range(lead), dims - 1, *range(lead, dims - 1))
    # tokens: drop the prefix, lay the rest out on the grid, channels first.
    tokens = tensor[(slice(None),) * lead + (slice(layout.prefix, None),)]
    grid = tokens.reshape(*heads, *layout.grid, layout.channels)
    dims = grid.dim()
    return grid.permute(*range(lead), dims - 1, *range(lead, dims - 1))


def is_channels_last_module(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """A ``LayerNorm`` (or RMS norm) over the last axis only: it works channels-last."""
    normalized = getattr(module, "normalized_shape", None)
    if normalized is None:
        return False
    normalized = tuple(normalized) if not isinstance(normalized, int) else (normalized,)
    return len(normalized) == 1 and len(shape) >= 3 and normalized[0] == shape[-1]
