"""Convolutional architectures of the zoo: ``simple_cnn``, ``vgg_small``, ``resnet_small`` and
``simple_cnn1d``. Each is ``features`` (conv blocks) then a :class:`ClassifierHead`.

Pooling adapts to ``input_size``: a block halves the feature map only while it is at least
4 pixels wide, so the same architecture serves 8x8 digits and 224x224 photos and the last
feature map (the default Grad-CAM layer) never collapses below 2x2.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.zoo.base import ZooModel
from xaikit.zoo.blocks import ConvBlock, ResidualBlock, make_activation
from xaikit.zoo.heads import ClassifierHead

MIN_INPUT_SIZE = 4


def _check_input_size(input_size: int) -> None:
    if input_size < MIN_INPUT_SIZE:
        raise XaikitConfigError(
            f"input_size must be at least {MIN_INPUT_SIZE} pixels, got {input_size}"
        )


def _check_widths(widths: Sequence[int], low: int, high: int, arch: str) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if not low <= len(widths) <= high or min(widths) < 1:
        raise XaikitConfigError(
            f"{arch} takes {low} to {high} positive widths (one per block), got {list(widths)}"
        )
    return widths


class SimpleCNN(ZooModel):
    """2-4 conv blocks, each conv -> BN -> act -> max-pool, then global average pooling.

    ``(N, in_channels, S, S) -> (N, num_classes)`` logits (``dims=1``: ``(N, C, L)``).
    The last block is never pooled, so the CAM layer keeps the resolution of the block
    before it. ``pools`` limits pooling to the first ``pools`` blocks: fewer pools keep a
    finer last map (better-localized CAMs) at the cost of compute and receptive field, which a
    larger ``kernel_size`` wins back.
    """

    def __init__(
        self,
        num_classes: int = 10,
        task: str = "multiclass",
        in_channels: int = 3,
        *,
        widths: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        activation: str = "relu",
        batchnorm: bool = True,
        pool: str = "max",
        input_size: int = 32,
        dropout: float = 0.0,
        dims: int = 2,
        pools: int | None = None,
    ) -> None:
        _check_input_size(input_size)
        widths = _check_widths(widths, 2, 4, "simple_cnn")
        if pools is None:
            pools = len(widths) - 1
        if isinstance(pools, bool) or not isinstance(pools, int) or not 0 <= pools < len(widths):
            raise XaikitConfigError(
                f"pools must be a whole number from 0 to {len(widths) - 1} (the last block is "
                f"never pooled), got {pools}"
            )
        blocks: dict[str, nn.Module] = {}
        size, channels = input_size, in_channels
        for i, width in enumerate(widths, start=1):
            do_pool = i <= pools and size >= MIN_INPUT_SIZE
            blocks[f"block{i}"] = ConvBlock(
                channels,
                width,
                kernel_size,
                dims=dims,
                batchnorm=batchnorm,
                activation=activation,
                pool=pool if do_pool else None,
            )
            size, channels = (size // 2 if do_pool else size), width
        pooled = sum(1 for b in blocks.values() if hasattr(b, "pool"))
        super().__init__(in_channels, min_size=2**pooled)
        self.sample_dims = dims + 1
        self.features = nn.Sequential()
        for name, block in blocks.items():
            self.features.add_module(name, block)
        self.head = ClassifierHead(channels, num_classes, task, dropout=dropout)


class SimpleCNN1d(SimpleCNN):
    """:class:`SimpleCNN` with 1-D convolutions for signals: ``(N, C, L) -> (N, num_classes)``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("input_size", 40)
        kwargs.setdefault("kernel_size", 5)
        super().__init__(*args, dims=1, **kwargs)


class VGGSmall(ZooModel):
    """VGG-style stacks (Simonyan & Zisserman, 2015): stages of ``convs_per_stage`` 3x3
    conv blocks followed by max-pooling, then global average pooling and a linear layer.

    ``(N, in_channels, S, S) -> (N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        task: str = "multiclass",
        in_channels: int = 3,
        *,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 2,
        activation: str = "relu",
        batchnorm: bool = True,
        input_size: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels)
        _check_input_size(input_size)
        widths = _check_widths(widths, 1, 5, "vgg_small")
        if convs_per_stage < 1:
            raise XaikitConfigError(f"convs_per_stage must be >= 1, got {convs_per_stage}")
        self.features = nn.Sequential()
        size, channels = input_size, in_channels
        for s, width in enumerate(widths, start=1):
            stage = nn.Sequential()
            for c in range(1, convs_per_stage + 1):
                stage.add_module(
                    f"conv{c}",
                    ConvBlock(channels, width, 3, batchnorm=batchnorm, activation=activation),
                )
                channels = width
            if s < len(widths) and size >= MIN_INPUT_SIZE:
                stage.add_module("pool", nn.MaxPool2d(2))
                size //= 2
                self.min_size *= 2
            self.features.add_module(f"stage{s}", stage)
        self.head = ClassifierHead(channels, num_classes, task, dropout=dropout)


class ResNetSmall(ZooModel):
    """ResNet for small images in the style of ResNet-20 (He et al., 2016, section 4.2):
    a 3x3 stem, then three stages of ``blocks_per_stage`` residual blocks with widths
    16/32/64 (configurable), the last two stages halving the resolution, then global
    average pooling. ``blocks_per_stage=3`` is ResNet-20.

    Inputs of 128 pixels or more get an ImageNet-style stem (stride-2 conv and max-pool) so
    224x224 images stay affordable. ``(N, in_channels, S, S) -> (N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        task: str = "multiclass",
        in_channels: int = 3,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 3,
        activation: str = "relu",
        batchnorm: bool = True,
        input_size: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, min_size=4 if input_size >= 128 else 1)
        _check_input_size(input_size)
        widths = _check_widths(widths, 1, 4, "resnet_small")
        if blocks_per_stage < 1:
            raise XaikitConfigError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        large = input_size >= 128
        stem = nn.Sequential()
        stem.add_module(
            "conv",
            nn.Conv2d(in_channels, widths[0], 3, 2 if large else 1, 1, bias=not batchnorm),
        )
        stem.add_module("bn", nn.BatchNorm2d(widths[0]) if batchnorm else nn.Identity())
        stem.add_module("act", make_activation(activation))
        size = input_size // 2 if large else input_size
        if large:
            stem.add_module("pool", nn.MaxPool2d(2))
            size //= 2
        self.features = nn.Sequential()
        self.features.add_module("stem", stem)
        channels = widths[0]
        for s, width in enumerate(widths, start=1):
            stage = nn.Sequential()
            for b in range(blocks_per_stage):
                stride = 2 if (s > 1 and b == 0 and size >= MIN_INPUT_SIZE) else 1
                stage.add_module(
                    f"block{b + 1}",
                    ResidualBlock(
                        channels, width, stride, activation=activation, batchnorm=batchnorm
                    ),
                )
                size //= stride
                channels = width
            self.features.add_module(f"stage{s}", stage)
        self.head = ClassifierHead(channels, num_classes, task, dropout=dropout)
