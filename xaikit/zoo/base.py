"""The shape every zoo model shares: ``features`` then ``head`` (timm's forward_features /
forward_head split), so the default explanation layer is simply the end of ``features``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.zoo.heads import ClassifierHead, Task


class ZooModel(nn.Module):
    """``forward(x) = head(features(x))``.

    Attributes:
        features: the backbone; its output is the default target layer for CAM methods.
        head: a :class:`~xaikit.zoo.heads.ClassifierHead` that owns the task.
        spec: the ``create_model`` arguments that rebuild this architecture (set by the
            factory; written into checkpoints so loading needs no pickled code).
    """

    features: nn.Module
    head: ClassifierHead
    #: dimensions of one input: 3 for images (C, H, W), 2 for signals (C, L) and sequences.
    sample_dims: int = 3
    #: position of the channel (feature) axis in one sample: 0 for (C, ...), -1 for (T, F).
    channel_axis: int = 0

    def __init__(self, in_channels: int, min_size: int = 1) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {}
        self.in_channels = in_channels
        self.min_size = min_size

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the architecture cannot take (before any compute)."""
        kind = "(N, C, H, W)" if self.sample_dims == 3 else "(N, C, L) or (N, T, F)"
        if x.dim() != self.sample_dims + 1:
            raise XaikitConfigError(
                f"{type(self).__name__} takes a batch shaped {kind}; got shape {tuple(x.shape)}"
            )
        channels = x.shape[1:][self.channel_axis]
        if channels != self.in_channels:
            raise XaikitConfigError(
                f"{type(self).__name__} was built for {self.in_channels} input channels; got "
                f"{channels} (input shape {tuple(x.shape)}); convert the inputs to "
                f"{self.in_channels} channel(s) (xaikit.data.load_image(path, "
                f"channels={self.in_channels}) does it for image files) or build the model "
                f"with in_channels={channels}"
            )
        spatial = x.shape[2:] if self.channel_axis == 0 else ()
        if any(s < self.min_size for s in spatial):
            raise XaikitConfigError(
                f"{type(self).__name__} needs inputs of at least {self.min_size} pixels per side "
                f"(it pools that much); got shape {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def task(self) -> Task:
        return self.head.task

    @property
    def num_classes(self) -> int:
        return self.head.num_classes
