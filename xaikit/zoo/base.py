"""The shape every zoo model shares: ``features`` then ``head`` (timm's forward_features /
forward_head split), so the default explanation layer is simply the end of ``features``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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

    def __init__(self) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
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
