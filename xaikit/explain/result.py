"""The result of an explanation: the heatmaps plus everything needed to read them honestly."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaikit.io import atomic_path, atomic_write_json

_ARRAYS = ("maps", "raw", "targets", "valid", "scores", "probabilities", "degenerate")


@dataclass
class Explanation:
    """One method's explanation of a batch. ``N`` inputs, ``K`` targets per input.

    Attributes:
        maps: ``(N, K, *S)`` heatmaps at the input resolution, normalized by ``normalize``
            (``[0, 1]`` for ``"minmax"`` and ``"global"``); zeros where degenerate or padding.
        raw: ``(N, K, *s)`` signed, unnormalized maps: at the target layer's resolution for
            CAM methods (before the ReLU), at the input resolution for gradient methods.
        targets: ``(N, K)`` long class indices; ``-1`` marks padding (see ``valid``).
        valid: ``(N, K)`` bool, ``False`` for padding of ragged targets (``"positive"``).
        scores: ``(N, K)`` the explained scores (logits, or probabilities with
            ``score="prob"``); 0 for padding.
        probabilities: ``(N, K)`` the targets' probabilities under the head's task.
        degenerate: ``(N, K)`` bool, ``True`` where the map was constant (returned as zeros).
        method: the method name.
        layer: the target layer's name (``None`` for methods that do not use one).
        score: ``"logit"`` or ``"prob"``.
        normalize: the normalization mode.
        single: one target per input was asked for; :attr:`heatmap` drops the ``K`` axis.
        class_names: label names, when known.
        layout: how the layer's output was read as a map (``"nchw 7x7"``, ``"tokens
            1+14x14"``, see :mod:`xaikit.explain.layouts`); ``None`` without a layer.
    """

    maps: torch.Tensor
    raw: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    scores: torch.Tensor
    probabilities: torch.Tensor
    degenerate: torch.Tensor
    method: str
    layer: str | None
    score: str
    normalize: str | None
    single: bool
    class_names: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None

    @property
    def heatmap(self) -> torch.Tensor:
        """What :func:`xaikit.explain` returns: ``(N, *S)`` for one target per input, else
        ``(N, K, *S)``."""
        return self.maps[:, 0] if self.single else self.maps

    @property
    def target_names(self) -> list[list[str | None]] | None:
        """Label names per input and target (``None`` for padding), when names are known."""
        if self.class_names is None:
            return None
        return [
            [self.class_names[i] if i >= 0 else None for i in row] for row in self.targets.tolist()
        ]

    def to_numpy(self) -> dict[str, np.ndarray]:
        """The tensors as NumPy arrays (on the CPU), keyed by attribute name."""
        return {name: getattr(self, name).detach().cpu().numpy() for name in _ARRAYS}

    def metadata(self) -> dict[str, Any]:
        """The non-tensor fields, JSON-serializable."""
        return {
            "method": self.method,
            "layer": self.layer,
            "layout": self.layout,
            "score": self.score,
            "normalize": self.normalize,
            "single": self.single,
            "class_names": self.class_names,
            "target_names": self.target_names,
            "shape": list(self.maps.shape),
            "raw_shape": list(self.raw.shape),
            "degenerate": int(self.degenerate.sum()),
            "options": {k: _jsonable(v) for k, v in self.options.items()},
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``explanation.npz`` (the arrays) and ``explanation.json`` (the metadata)
        into ``directory``, atomically; returns the ``.npz`` path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "explanation.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **self.to_numpy())
        atomic_write_json(folder / "explanation.json", self.metadata())
        return path

    def __repr__(self) -> str:
        return (
            f"Explanation(method={self.method!r}, layer={self.layer!r}, "
            f"maps={tuple(self.maps.shape)}, raw={tuple(self.raw.shape)}, score={self.score!r}, "
            f"normalize={self.normalize!r}, degenerate={int(self.degenerate.sum())})"
        )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value
