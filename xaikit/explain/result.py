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
        layer_maps: for a CAM of several fused layers (``layer=["layer3", "layer4"]``),
            ``{layer: (N, K, *S) heatmap}``, each layer's map upsampled and min-max
            normalized as fused (``raw`` is then the fused map at the input resolution);
            ``None`` otherwise.
        conservation: ``(N, K)`` LRP only: the summed relevance of each target (at the input,
            or at the layer), to compare with ``scores``, the relevance it started from
            (equal for conserving rules); 0 for padding; ``None`` for other methods.
        logits: ``(N, C)`` the model's outputs on the inputs, from the forward pass that
            chose the targets (detached; for a model with one output, ``(N, 1)``), so a
            caller needs no second forward pass for the prediction; ``None`` when an
            Explanation is built by hand.
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
    layer_maps: dict[str, torch.Tensor] | None = None
    conservation: torch.Tensor | None = None
    logits: torch.Tensor | None = None

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
        arrays = {name: getattr(self, name).detach().cpu().numpy() for name in _ARRAYS}
        for name in ("conservation", "logits"):  # the optional ones, when present
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value.detach().cpu().numpy()
        return arrays

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


def concat_explanations(parts: list[Explanation]) -> Explanation:
    """One :class:`Explanation` of the concatenated batches of ``parts`` (one method's chunks
    of a call, in order). Ragged target counts are padded to the largest ``K``: padding has
    target ``-1``, ``valid`` ``False`` and zero maps, raw maps, scores and probabilities, as
    padding of one call. The non-tensor fields are the first part's."""
    if len(parts) == 1:
        return parts[0]
    k = max(part.targets.shape[1] for part in parts)

    def pad(tensor: torch.Tensor, count: int, fill: float | bool) -> torch.Tensor:
        if count == k:
            return tensor
        shape = (tensor.shape[0], k - count, *tensor.shape[2:])
        return torch.cat([tensor, tensor.new_full(shape, fill)], dim=1)

    fills: dict[str, float | bool] = {
        "maps": 0.0,
        "raw": 0.0,
        "targets": -1,
        "valid": False,
        "scores": 0.0,
        "probabilities": 0.0,
        "degenerate": False,
    }
    arrays: dict[str, torch.Tensor] = {}
    for name in _ARRAYS:
        tensors = []
        for part in parts:
            tensor = getattr(part, name)
            if name in ("maps", "raw") and tensor.shape[1] == 0 and k > 0:
                # A chunk without targets has K = 0 maps of the layer's / input's size.
                tensor = tensor.reshape(tensor.shape[0], 0, *_spatial(parts, name))
            tensors.append(pad(tensor, part.targets.shape[1], fills[name]))
        arrays[name] = torch.cat(tensors, dim=0)
    first = parts[0]
    return Explanation(
        **arrays,
        method=first.method,
        layer=first.layer,
        score=first.score,
        normalize=first.normalize,
        single=first.single,
        class_names=first.class_names,
        options=dict(first.options),
        layout=first.layout,
        conservation=_concat_conservation(parts, k),
        logits=None
        if any(part.logits is None for part in parts)
        else torch.cat([part.logits for part in parts], dim=0),  # type: ignore[misc]
        layer_maps=None
        if first.layer_maps is None
        else {
            name: torch.cat(
                [pad(p.layer_maps[name], p.targets.shape[1], 0.0) for p in parts],  # type: ignore[index]
                dim=0,
            )
            for name in first.layer_maps
        },
    )


def _spatial(parts: list[Explanation], name: str) -> tuple[int, ...]:
    for part in parts:
        tensor = getattr(part, name)
        if tensor.shape[1] > 0:
            return tuple(tensor.shape[2:])
    return tuple(getattr(parts[0], name).shape[2:])


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def _concat_conservation(parts: list[Explanation], k: int) -> torch.Tensor | None:
    """The parts' LRP ``conservation`` concatenated (padded with 0 to ``k``), when all have it."""
    sums = [part.conservation for part in parts]
    if any(c is None for c in sums):
        return None
    padded = [
        c if c.shape[1] == k else torch.cat([c, c.new_zeros(c.shape[0], k - c.shape[1])], dim=1)
        for c in sums
        if c is not None
    ]
    return torch.cat(padded, dim=0)
