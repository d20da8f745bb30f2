"""Concepts: non-negative factorizations of a layer's activations, with exemplars,
per-class importance and attribution maps.

Two factorizations, both by :func:`nmf` (a batched multiplicative-update NMF in torch,
seeded, Lee & Seung 2001, the update order and ``random`` initialization of scikit-learn's
``NMF(solver="mu", init="random")``):

* ``method="dff"``: Deep Feature Factorization (Collins, Achanta & Süsstrunk, ECCV 2018),
  as pytorch-grad-cam's ``DeepFeatureFactorization``: the activations ``(N, C, h, w)`` of
  the data at ``layer`` become ``V = (C, N h w)``, shifted by each channel's minimum so
  they are non-negative, and ``V ~= W H`` with ``W = (C, r)`` the concepts (``basis.T``;
  pytorch-grad-cam's ``concepts`` are ``W + offset``) and ``H`` the concept heatmaps of
  every position.
* ``method="craft"``: CRAFT (Fel, Picard, Béthune, Boissin, Vigouroux, Colin, Cadène &
  Serre, CVPR 2023): each image is cut into square crops (side ``patch`` of the image,
  stride ``0.8 * patch``, as CRAFT's ``patch_size`` / overlap), each crop resized to the
  model's input, its activations at ``layer`` averaged over positions: ``A = (n_crops, C)``
  and ``A ~= U W`` with ``W = (r, C)`` the concepts (``basis``) and ``U`` each crop's
  concept coefficients. CRAFT factorizes the crops of one class at a time; here one bank
  is factorized over the crops of all the data, and importance is estimated per class.

Importance (:func:`sobol_importance`, CRAFT's estimator): for the images of class ``k``,
the coefficients of each position ``u = nmf_transform(A, W)`` are multiplied by random
masks ``M`` (a scrambled, seeded Sobol sequence of ``2 r`` dimensions: matrices ``A``,
``B`` and ``A`` with column ``i`` from ``B``), the activations rebuilt as ``(M u) W +
offset`` and passed through the rest of the network; the total Sobol index of concept
``i`` on logit ``k`` is Jansen's estimator ``E[(f(A) - f(A_B^i))^2] / (2 Var f)``,
averaged over the images. ``importance`` is ``(n_classes, r)``; :func:`concept_importance`
gives it per image ``(N, K, r)``. Multi-label data (``(K,)`` 0/1 targets) estimates class
``k`` on the images that hold ``k``. The layers before ``layer`` run once per image, only
the rest of the network on the masked activations.

``baseline`` (both methods) is the per-channel offset subtracted before factorizing:
``"min"`` (DFF's default, pytorch-grad-cam's), ``"zero"`` (CRAFT's default) or ``"median"``:
each channel's median over all positions, values below it clipped to 0, so the concepts
describe what stands out from a typical (mostly background) position. On
``shapes-multilabel`` at the last block, DFF with ``"median"`` finds one concept per shape
class, each pointing at its class's masks (purity >= 0.9) and ranked first by importance for
its class, where ``"min"`` spends a concept on the background
(``benchmarks/bench_concepts_shapes.py``).

Exemplars: the ``k`` crops with the largest coefficient (CRAFT), or the receptive fields
of the ``k`` positions with the largest heatmap value, one per image (DFF). Optionally each
concept is visualized by activation maximization of ``sum_c W[j, c] (a_c - offset_c)``
averaged over positions (``steps > 0``). :func:`concept_maps` gives an image's concept
heatmaps; the :class:`ConceptBank` saves to and loads from ``concepts.safetensors`` +
``concepts.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

from xaikit.errors import XaikitConfigError
from xaikit.explain.layers import resolve_layer
from xaikit.explain.state import borrowed, model_device
from xaikit.filters._common import (
    Normalization,
    apply_normalization,
    dataset_size,
    fetch_inputs,
    input_spec,
    model_dtype,
    normalizer,
)
from xaikit.filters.activations import activations

FORMAT_VERSION = 1
BANK_TENSORS = "concepts.safetensors"
BANK_JSON = "concepts.json"
# Tolerance scikit-learn adds to a zero denominator (np.finfo(np.float32).eps).
_EPSILON = float(torch.finfo(torch.float32).eps)


# -- NMF -----------------------------------------------------------------------------------


@dataclass
class NMF:
    """``V ~= W @ H`` (batched over leading dimensions).

    Attributes:
        W: ``(..., m, r)``, H: ``(..., r, n)``, both non-negative.
        errors: ``(steps + 1,)`` the Frobenius norm ``||V - W H||`` before each step and at
            the end (summed over the batch).
    """

    W: torch.Tensor
    H: torch.Tensor
    errors: torch.Tensor


def nmf_init(V: torch.Tensor, rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``init="random"``: ``W, H = sqrt(mean(V) / r) * |N(0, 1)|`` (per
    batch element, from a CPU generator seeded by ``seed``)."""
    *batch, m, n = V.shape
    gen = torch.Generator().manual_seed(int(seed))
    avg = (V.mean(dim=(-2, -1), keepdim=True) / rank).sqrt()
    H = torch.randn(*batch, rank, n, generator=gen, dtype=torch.float64).abs()
    W = torch.randn(*batch, m, rank, generator=gen, dtype=torch.float64).abs()
    H, W = H.to(V), W.to(V)
    return avg * W, avg * H


def _safe(denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator == 0, torch.full_like(denominator, _EPSILON), denominator)


def nmf(
    V: torch.Tensor,
    rank: int,
    *,
    steps: int = 200,
    seed: int = 0,
    W: torch.Tensor | None = None,
    H: torch.Tensor | None = None,
) -> NMF:
    """Multiplicative-update NMF of non-negative ``V`` ``(..., m, n)`` with ``rank``
    components: each step ``W *= V H^T / (W H H^T)``, then ``H *= W^T V / (W^T W H)``
    (scikit-learn's ``solver="mu"``, Frobenius loss, the same order; a zero denominator is
    replaced by float32's eps). ``W`` / ``H``: a starting point (default :func:`nmf_init`).
    The Frobenius error never increases (Lee & Seung, 2001)."""
    if rank < 1:
        raise XaikitConfigError(f"the number of concepts must be positive, got {rank}")
    if bool((V < 0).any()):
        raise XaikitConfigError("NMF needs non-negative data")
    if W is None or H is None:
        W0, H0 = nmf_init(V, rank, seed)
        W = W0 if W is None else W
        H = H0 if H is None else H
    W, H = W.clone(), H.clone()
    # ||V - W H||^2 = ||V||^2 - 2 <W, V H^T> + <W^T W, H H^T>: the error from the products
    # the next update needs anyway (V H^T), without forming V - W H (two large products a
    # step instead of five; the updates themselves are unchanged)
    squared = V.square().sum(dim=(-2, -1))

    def error(VHt: torch.Tensor, HHt: torch.Tensor) -> torch.Tensor:
        fit = squared - 2 * (W * VHt).sum(dim=(-2, -1)) + ((W.mT @ W) * HHt).sum(dim=(-2, -1))
        return fit.clamp(min=0).sum().sqrt()

    errors = []
    for _ in range(steps):
        VHt, HHt = V @ H.mT, H @ H.mT
        errors.append(error(VHt, HHt))
        W = W * (VHt / _safe(W @ HHt))
        H = H * ((W.mT @ V) / _safe((W.mT @ W) @ H))
    errors.append(error(V @ H.mT, H @ H.mT))
    return NMF(W, H, torch.stack(errors))


def nmf_transform(V: torch.Tensor, H: torch.Tensor, *, steps: int = 200) -> torch.Tensor:
    """The non-negative ``W`` with ``V ~= W H`` for fixed components ``H`` ``(r, n)``:
    multiplicative updates of ``W`` only, from ``sqrt(mean(V) / r)`` everywhere
    (scikit-learn's ``NMF.transform`` with ``solver="mu"``). ``V``: ``(..., m, n)``."""
    rank = H.shape[-2]
    avg = (V.mean() / rank).sqrt().clamp(min=1e-12)
    W = torch.full((*V.shape[:-1], rank), float(avg), dtype=V.dtype, device=V.device)
    HHt = H @ H.mT
    VHt = V @ H.mT
    for _ in range(steps):
        W = W * (VHt / _safe(W @ HHt))
    return W


# -- Sobol importance ----------------------------------------------------------------------


def sobol_masks(n_concepts: int, n_designs: int = 32, seed: int = 0) -> torch.Tensor:
    """``((n_concepts + 2) * n_designs, n_concepts)`` masks in ``[0, 1)``: ``A``, ``B``,
    then ``A_B^i`` (``A`` with column ``i`` from ``B``) for each concept, from a scrambled
    Sobol sequence of ``2 * n_concepts`` dimensions seeded by ``seed``."""
    engine = torch.quasirandom.SobolEngine(2 * n_concepts, scramble=True, seed=int(seed))
    draws = engine.draw(n_designs, dtype=torch.float64)
    a, b = draws[:, :n_concepts], draws[:, n_concepts:]
    mixed = []
    for i in range(n_concepts):
        c = a.clone()
        c[:, i] = b[:, i]
        mixed.append(c)
    return torch.cat([a, b, *mixed])


def jansen_total(outputs: torch.Tensor, n_concepts: int, n_designs: int) -> torch.Tensor:
    """Total Sobol indices from the outputs on :func:`sobol_masks` ``(D, ...)`` ->
    ``(n_concepts, ...)``: ``mean((f(A) - f(A_B^i))^2) / (2 Var[f(A), f(B)])``."""
    f_a = outputs[:n_designs]
    f_b = outputs[n_designs : 2 * n_designs]
    f_c = outputs[2 * n_designs :].reshape(n_concepts, n_designs, *outputs.shape[1:])
    var = torch.cat([f_a, f_b]).var(dim=0, unbiased=False)
    total = (f_a[None] - f_c).pow(2).mean(dim=1) / (2 * var)
    return torch.where(var > 0, total, torch.zeros_like(total))


def sobol_importance(
    fn: Callable[[torch.Tensor], torch.Tensor],
    n_concepts: int,
    *,
    n_designs: int = 32,
    seed: int = 0,
) -> torch.Tensor:
    """Total Sobol indices of ``fn`` (masks ``(D, r)`` -> outputs ``(D, ...)``) for each
    mask dimension: ``(r, ...)`` (CRAFT's importance, Jansen's estimator)."""
    masks = sobol_masks(n_concepts, n_designs, seed)
    return jansen_total(fn(masks), n_concepts, n_designs)


# -- the concept bank ----------------------------------------------------------------------


@dataclass
class ConceptBank:
    """Concepts of one layer; see the module docstring.

    Attributes:
        method: ``"dff"`` or ``"craft"``.
        layer: the layer name.
        basis: ``(r, C)`` non-negative: concept ``j``'s direction in the layer's channels.
        offset: ``(C,)`` subtracted from activations before factorizing (DFF: each
            channel's minimum; CRAFT: ``min(0, minimum)``, zero after a ReLU).
        importance: ``(K, r)`` total Sobol index of each concept for each class in
            ``classes`` (``None`` when not estimated).
        classes: the classes of ``importance``'s rows.
        exemplars: ``(r, k, C_in, s, s)`` in ``[0, 1]``: each concept's exemplar crops.
        exemplar_index: ``(r, k)`` data set index of each exemplar.
        exemplar_boxes: ``(r, k, 4)`` crop ``(top, left, bottom, right)`` in the input.
        exemplar_score: ``(r, k)`` the concept coefficient of each exemplar.
        maximization: ``(r, C_in, S, S)`` activation maximization per concept, or ``None``.
        errors: ``(steps + 1,)`` the NMF reconstruction error per step.
        size, seed, patch, normalization: the settings.
    """

    method: str
    layer: str
    basis: torch.Tensor
    offset: torch.Tensor
    importance: torch.Tensor | None
    classes: list[int]
    exemplars: torch.Tensor
    exemplar_index: torch.Tensor
    exemplar_boxes: torch.Tensor
    exemplar_score: torch.Tensor
    maximization: torch.Tensor | None
    errors: torch.Tensor
    size: int
    seed: int
    patch: float | None = None
    normalization: dict[str, list[float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_concepts(self) -> int:
        return int(self.basis.shape[0])

    @property
    def concepts(self) -> torch.Tensor:
        """``(C, r)``: ``basis.T + offset`` (pytorch-grad-cam's ``concepts`` for DFF)."""
        return self.basis.T + self.offset[:, None]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: settings, and per concept its exemplars and importance."""
        rows = []
        for j in range(self.n_concepts):
            row: dict[str, Any] = {
                "concept": j,
                "exemplars": self.exemplar_index[j].tolist(),
                "scores": [round(float(v), 6) for v in self.exemplar_score[j]],
            }
            if self.importance is not None:
                row["importance"] = {
                    str(c): round(float(self.importance[i, j]), 6)
                    for i, c in enumerate(self.classes)
                }
            rows.append(row)
        return {
            "method": self.method,
            "layer": self.layer,
            "n_concepts": self.n_concepts,
            "seed": self.seed,
            "reconstruction_error": [float(self.errors[0]), float(self.errors[-1])],
            "concepts": rows,
        }

    # -- persistence --

    def save(self, folder: str | os.PathLike[str]) -> list[str]:
        """Write ``concepts.safetensors`` (tensors) and ``concepts.json`` (settings) into
        ``folder``; returns the file names."""
        from safetensors.torch import save

        from xaikit.io import atomic_write_bytes, atomic_write_json

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {
            name: getattr(self, name).detach().cpu().contiguous()
            for name in (
                "basis",
                "offset",
                "importance",
                "exemplars",
                "exemplar_index",
                "exemplar_boxes",
                "exemplar_score",
                "maximization",
                "errors",
            )
            if getattr(self, name) is not None
        }
        atomic_write_bytes(out / BANK_TENSORS, save(tensors))
        meta = {
            "format": "xaikit.concepts",
            "version": FORMAT_VERSION,
            "method": self.method,
            "layer": self.layer,
            "classes": list(self.classes),
            "size": self.size,
            "seed": self.seed,
            "patch": self.patch,
            "normalization": self.normalization,
            "extra": self.extra,
        }
        atomic_write_json(out / BANK_JSON, meta)
        return [BANK_TENSORS, BANK_JSON]

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> ConceptBank:
        """Read a bank written by :meth:`save`."""
        from safetensors.torch import load_file

        from xaikit.errors import DataError

        root = Path(folder)
        try:
            meta = json.loads((root / BANK_JSON).read_text(encoding="utf-8"))
            tensors = load_file(str(root / BANK_TENSORS))
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read a concept bank from {root}: {error}") from None
        if meta.get("format") != "xaikit.concepts" or meta.get("version") != FORMAT_VERSION:
            raise DataError(f"{root / BANK_JSON} is not an xaikit concept bank (version 1)")
        return cls(
            method=meta["method"],
            layer=meta["layer"],
            basis=tensors["basis"],
            offset=tensors["offset"],
            importance=tensors.get("importance"),
            classes=[int(c) for c in meta["classes"]],
            exemplars=tensors["exemplars"],
            exemplar_index=tensors["exemplar_index"],
            exemplar_boxes=tensors["exemplar_boxes"],
            exemplar_score=tensors["exemplar_score"],
            maximization=tensors.get("maximization"),
            errors=tensors["errors"],
            size=int(meta["size"]),
            seed=int(meta["seed"]),
            patch=meta.get("patch"),
            normalization=meta.get("normalization"),
            extra=meta.get("extra") or {},
        )

    @cached_property
    def figure(self) -> Figure:
        """One row per concept: its maximization (if any), then its exemplar crops; the
        label gives the class it matters most for."""
        from xaikit.filters._plot import displayable, grid_figure

        k = self.exemplars.shape[1]
        side = self.exemplars.shape[-1]
        cells, labels = [], []
        for j in range(self.n_concepts):
            row = list(self.exemplars[j].float())
            if self.maximization is not None:
                view = F.interpolate(
                    self.maximization[j : j + 1].float(),
                    size=(side, side),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )[0]
                row = [view, *row]
            cells.extend(row)
            head = f"c{j}"
            if self.importance is not None and self.importance.numel():
                best = int(self.importance[:, j].argmax())
                head += f" cls {self.classes[best]}: {float(self.importance[best, j]):.2f}"
            labels.extend([head] + [""] * (len(row) - 1))
        images = displayable(torch.stack(cells))
        ncols = k + (self.maximization is not None)
        title = f"{self.method.upper()} concepts of {self.layer}"
        return grid_figure(images, labels, ncols=ncols, title=title)


# -- extraction ----------------------------------------------------------------------------


def _images_and_labels(
    dataset: Dataset | torch.Tensor, n: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    count = dataset_size(dataset) if n is None else min(n, dataset_size(dataset))
    if isinstance(dataset, torch.Tensor):
        return dataset[:count], None
    items = [dataset[i] for i in range(count)]
    images = fetch_inputs(dataset, range(count))
    labels = None
    if all(isinstance(it, (tuple, list)) and len(it) > 1 for it in items):
        targets = [torch.as_tensor(it[1]) for it in items]
        try:
            if all(t.dim() == 1 for t in targets):  # multi-label: (N, K) 0/1 vectors
                labels = torch.stack(targets) > 0.5
            else:
                labels = torch.as_tensor([int(t) for t in targets])
        except (TypeError, ValueError, RuntimeError):
            labels = None
    return images, labels


def _layer_acts(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    normalization: Normalization | None,
    batch_size: int,
) -> torch.Tensor:
    device, dtype = model_device(model), model_dtype(model)
    parts = [
        activations(model, chunk.to(device, dtype), layer, normalization=normalization)[layer]
        for chunk in images.split(batch_size)
    ]
    acts = torch.cat(parts).double().cpu()
    if acts.dim() != 4:
        raise XaikitConfigError(
            f"concepts need a layer with (N, C, h, w) outputs; {layer!r} gives {tuple(acts.shape)}"
        )
    return torch.nan_to_num(acts, nan=0.0)


def _crop_grid(size: int, patch: float) -> tuple[int, list[int]]:
    side = max(2, min(size, round(patch * size)))
    stride = max(1, round(0.8 * side))
    starts = list(range(0, size - side + 1, stride))
    if starts[-1] != size - side:
        starts.append(size - side)
    return side, starts


def _crops(images: torch.Tensor, patch: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, S, S)`` -> crops ``(N * P, C, side, side)`` and ``(N * P, 5)`` rows
    ``(image, top, left, bottom, right)``."""
    size = images.shape[-1]
    side, starts = _crop_grid(size, patch)
    crops, where = [], []
    for i in range(images.shape[0]):
        for top in starts:
            for left in starts:
                crops.append(images[i, :, top : top + side, left : left + side])
                where.append([i, top, left, top + side, left + side])
    return torch.stack(crops), torch.as_tensor(where, dtype=torch.long)


BASELINES = ("min", "median", "zero")


def _baseline(V: torch.Tensor, baseline: str) -> torch.Tensor:
    """``(C,)`` the per-channel level subtracted from ``V`` ``(C, M)`` before the NMF."""
    if baseline == "min":
        return V.min(dim=1).values
    if baseline == "median":
        return V.median(dim=1).values
    if baseline == "zero":
        return V.min(dim=1).values.clamp(max=0)
    raise XaikitConfigError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")


def dff(
    activations: torch.Tensor,
    n_concepts: int,
    *,
    steps: int = 200,
    seed: int = 0,
    baseline: str = "min",
):
    """Deep Feature Factorization of ``(N, C, h, w)`` activations, as pytorch-grad-cam's
    ``dff`` (with :func:`nmf` for scikit-learn's NMF): returns ``(concepts (C, r),
    heatmaps (N, r, h, w), offset (C,), NMF)``, ``concepts = W + offset``.

    ``baseline``: the offset subtracted from each channel: ``"min"`` (pytorch-grad-cam's),
    ``"median"`` (the channel's median over all positions, values below it clipped to 0: the
    factorization then describes what stands out from a typical, mostly background,
    position instead of spending a concept on the background), or ``"zero"``
    (``min(0, minimum)``)."""
    acts = torch.nan_to_num(activations.double(), nan=0.0)
    n, c, h, w = acts.shape
    V = acts.transpose(0, 1).reshape(c, -1)
    offset = _baseline(V, baseline)
    V = (V - offset[:, None]).clamp(min=0)
    if baseline == "min":
        result = nmf(V, n_concepts, steps=steps, seed=seed)
    else:
        # a clipped baseline leaves V sparse; multiplicative updates started from the
        # channel side can then zero a concept out, so factorize V^T (positions x
        # channels, CRAFT's orientation; the same model V ~= W H)
        turned = nmf(V.T, n_concepts, steps=steps, seed=seed)
        result = NMF(turned.H.T, turned.W.T, turned.errors)
    heatmaps = result.H.reshape(n_concepts, n, h, w).transpose(0, 1)
    return result.W + offset[:, None], heatmaps, offset, result


def concepts(
    model: nn.Module,
    layer: str | nn.Module,
    dataset: Dataset | torch.Tensor,
    n_concepts: int = 8,
    *,
    method: str = "craft",
    n: int | None = None,
    k: int = 8,
    patch: float = 0.5,
    nmf_steps: int = 200,
    baseline: str | None = None,
    steps: int = 0,
    importance: bool = True,
    classes: Sequence[int] | None = None,
    n_designs: int = 32,
    importance_images: int = 16,
    seed: int = 0,
    size: int | None = None,
    normalization: Normalization | None = None,
    batch_size: int = 64,
    quiet: bool | None = None,
) -> ConceptBank:
    """Factorize ``layer``'s activations on ``dataset`` into ``n_concepts`` concepts.

    Args:
        model: a CNN classifier (its output ``(N, K)`` for importance).
        layer: a layer with ``(N, C, h, w)`` non-negative activations (after a ReLU).
        dataset: ``[0, 1]`` images (a tensor ``(N, C_in, S, S)`` or a data set of
            ``(image, label)``; labels choose the images of each class for importance,
            else the model's predictions do).
        n_concepts: the NMF rank.
        method: ``"craft"`` (crops) or ``"dff"`` (positions); see the module docstring.
        n: use only the first ``n`` images.
        k: exemplars per concept.
        patch: CRAFT's crop side as a fraction of the image side (stride 0.8 of it).
        nmf_steps: multiplicative-update steps.
        baseline: the per-channel offset subtracted before factorizing (see :func:`dff`):
            default ``"min"`` for DFF (pytorch-grad-cam's), ``"zero"`` for CRAFT;
            ``"median"`` keeps the background out of the concepts (on
            ``shapes-multilabel``, DFF at the last block with ``"median"`` finds one concept
            per shape class, see ``benchmarks/bench_concepts_shapes.py``).
        steps: activation-maximization steps per concept (0: none).
        importance: estimate per-class Sobol importance.
        classes: the classes to estimate it for (default: those in the labels /
            predictions).
        n_designs: Sobol designs per image (CRAFT: 32).
        importance_images: at most this many images per class.
        seed: seeds the NMF start, the Sobol sequence and the maximization.
        size: the model input side (default: the model's, else the images').
        normalization: the model's input normalization (images are ``[0, 1]``).
    """
    if method not in ("dff", "craft"):
        raise XaikitConfigError(f"method must be dff or craft, got {method!r}")
    if baseline is None:
        baseline = "min" if method == "dff" else "zero"
    if baseline not in BASELINES:
        raise XaikitConfigError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    images, labels = _images_and_labels(dataset, n)
    if images.dim() != 4:
        raise XaikitConfigError(f"concepts need image data (N, C, H, W), got {images.shape}")
    spec = input_spec(model, size=size)
    side = int(spec.size or images.shape[-1])
    device, dtype = model_device(model), model_dtype(model)
    name = resolve_layer(model, layer, images[:1].to(device, dtype))[0]
    with borrowed(model):
        if method == "dff":
            acts = _layer_acts(model, images, name, normalization, batch_size)
            _, heatmaps, offset, fit = dff(
                acts, n_concepts, steps=nmf_steps, seed=seed, baseline=baseline
            )
            basis = fit.W.T.contiguous()
            ex = _dff_exemplars(model, name, images, heatmaps, k)
        else:
            crops, where = _crops(images, patch)
            resized = F.interpolate(
                crops, size=(side, side), mode="bilinear", antialias=True, align_corners=False
            )
            pooled = _layer_acts(model, resized, name, normalization, batch_size).mean((2, 3))
            offset = _baseline(pooled.T, baseline)
            fit = nmf((pooled - offset).clamp(min=0), n_concepts, steps=nmf_steps, seed=seed)
            basis = fit.H.contiguous()
            ex = _craft_exemplars(crops, where, fit.W, k)
        bank = ConceptBank(
            method=method,
            layer=name,
            basis=basis.float(),
            offset=offset.float(),
            importance=None,
            classes=[],
            exemplars=ex[0],
            exemplar_index=ex[1],
            exemplar_boxes=ex[2],
            exemplar_score=ex[3],
            maximization=None,
            errors=fit.errors.float(),
            size=side,
            seed=seed,
            patch=patch if method == "craft" else None,
            extra={"baseline": baseline},
            normalization=None
            if normalization is None
            else {
                "mean": [float(v) for v in normalization["mean"]],
                "std": [float(v) for v in normalization["std"]],
            },
        )
        if importance:
            _importance(
                bank, model, images, labels, classes, n_designs, importance_images, batch_size
            )
    if steps > 0:
        bank.maximization = concept_maximization(
            bank, model, steps=steps, size=side, seed=seed, quiet=quiet
        )
    return bank


def _craft_exemplars(
    crops: torch.Tensor, where: torch.Tensor, U: torch.Tensor, k: int
) -> tuple[torch.Tensor, ...]:
    k = min(k, U.shape[0])
    scores, order = U.T.topk(k, dim=1)  # (r, k)
    return (
        crops[order].float(),
        where[order][..., 0].contiguous(),
        where[order][..., 1:].contiguous(),
        scores.float(),
    )


def _dff_exemplars(
    model: nn.Module, layer: str, images: torch.Tensor, heatmaps: torch.Tensor, k: int
) -> tuple[torch.Tensor, ...]:
    """The ``k`` images with the strongest heatmap peak per concept, cropped to the
    receptive field of the peak (the whole image when it cannot be traced)."""
    from xaikit.filters.receptive_field import trace_receptive_field

    n, r, _, w = heatmaps.shape
    size = images.shape[-1]
    k = min(k, n)
    peak, position = heatmaps.flatten(2).max(dim=2)  # (N, r)
    scores, order = peak.T.topk(k, dim=1)  # (r, k)
    device, dtype = model_device(model), model_dtype(model)
    field_ = trace_receptive_field(model, layer, images[:1].to(device, dtype))[1]
    pos = position.T.gather(1, order)  # (r, k)
    yx = torch.stack([pos // w, pos % w], dim=-1)
    if field_ is None:
        boxes = torch.tensor([0, 0, size, size]).expand(r, k, 4).clone()
    else:
        window = field_.crop_boxes(yx, images.shape[-2:])  # (r, k, 2, 2)
        boxes = torch.stack(
            [window[..., 0, 0], window[..., 1, 0], window[..., 0, 1], window[..., 1, 1]], -1
        )
    t, l_, b, rr = boxes.unbind(-1)
    crops = torch.stack(
        [
            torch.stack(
                [images[order[j, i], :, t[j, i] : b[j, i], l_[j, i] : rr[j, i]] for i in range(k)]
            )
            for j in range(r)
        ]
    )
    return crops.float(), order, boxes.long(), scores.float()


def _rest_of_model(
    model: nn.Module, layer: nn.Module, image: torch.Tensor, normalization: Any
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``acts (D, C, h, w) -> model output (D, K)``: ``image`` run with ``layer``'s output
    replaced by ``acts`` (a forward hook). The layers before ``layer`` run on the one image
    and only the rest on the ``D`` activations; a model where that does not give ``D``
    outputs (one that keeps the input's batch size) runs on ``D`` copies of the image."""
    x = apply_normalization(image[None], normalization)
    state = {"expand": False}

    def forward(acts: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        def hook(_module, _inputs, _output):
            return acts

        handle = layer.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return model(inputs)
        finally:
            handle.remove()

    def run(acts: torch.Tensor) -> torch.Tensor:
        if not state["expand"]:
            try:
                out = forward(acts, x)
                if out.shape[0] == acts.shape[0]:
                    return out
            except RuntimeError:
                pass
            state["expand"] = True
        return forward(acts, x.expand(acts.shape[0], *x.shape[1:]))

    return run


def concept_importance(
    bank: ConceptBank,
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    n_designs: int = 32,
    batch_size: int = 64,
) -> torch.Tensor:
    """Per-image total Sobol importance of each concept for each class:
    ``(N, K, r)`` for images ``(N, C_in, H, W)`` in ``[0, 1]`` (``classes``: the logits, by
    default all of them). For each image the concept coefficients of every position are
    masked by the Sobol designs, the activations rebuilt and the rest of the network run
    (see the module docstring); :attr:`ConceptBank.importance` is its mean over each
    class's images."""
    device, dtype = model_device(model), model_dtype(model)
    stats = None
    if bank.normalization is not None:
        stats = normalizer(bank.normalization, images.shape[1], 2, device)
    module = resolve_layer(model, bank.layer)[1]
    basis = bank.basis.double()
    offset = bank.offset.double()
    masks = sobol_masks(bank.n_concepts, n_designs, bank.seed)
    acts = _layer_acts(model, images, bank.layer, bank.normalization, batch_size)
    rows = []
    with borrowed(model):
        for index in range(images.shape[0]):
            a = acts[index]  # (C, h, w)
            c, h, w = a.shape
            V = (a.reshape(c, -1).T - offset).clamp(min=0)  # (hw, C)
            u = nmf_transform(V, basis)  # (hw, r)
            rebuilt = (masks[:, None, :] * u[None]) @ basis + offset  # (D, hw, C)
            rebuilt = rebuilt.transpose(1, 2).reshape(-1, c, h, w).to(device, dtype)
            run = _rest_of_model(model, module, images[index].to(device, dtype), stats)
            outputs = torch.cat([run(part) for part in rebuilt.split(max(1, batch_size * 4))])
            f = outputs.double().cpu()
            if classes is not None:
                f = f[:, list(classes)]
            rows.append(jansen_total(f, bank.n_concepts, n_designs).T)  # (K, r)
    return torch.stack(rows).float()


def _importance(
    bank: ConceptBank,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    classes: Sequence[int] | None,
    n_designs: int,
    per_class: int,
    batch_size: int,
) -> None:
    """Fill ``bank.importance`` / ``bank.classes`` (see the module docstring). ``labels``:
    ``(N,)`` classes or ``(N, K)`` multi-label 0/1; ``None``: the model's predictions."""
    device, dtype = model_device(model), model_dtype(model)
    stats = None
    if bank.normalization is not None:
        stats = normalizer(bank.normalization, images.shape[1], 2, device)
    if labels is None:
        with torch.no_grad():
            outs = [
                model(apply_normalization(chunk.to(device, dtype), stats))
                for chunk in images.split(batch_size)
            ]
        labels = torch.cat(outs).argmax(dim=1).cpu()
    if labels.dim() == 2:
        members = {k: labels[:, k].nonzero().flatten() for k in range(labels.shape[1])}
    else:
        members = {int(k): (labels == k).nonzero().flatten() for k in labels.unique().tolist()}
    if classes is None:
        wanted = sorted(k for k, idx in members.items() if len(idx))
    else:
        wanted = [int(k) for k in classes]
    rows = []
    for cls in wanted:
        chosen = members.get(cls, torch.zeros(0, dtype=torch.long))[:per_class].tolist()
        if not chosen:
            rows.append(torch.zeros(bank.n_concepts))
            continue
        total = concept_importance(
            bank, model, images[chosen], [cls], n_designs=n_designs, batch_size=batch_size
        )
        rows.append(total[:, 0].mean(dim=0))
    bank.importance = torch.stack(rows).float()
    bank.classes = wanted


# -- using a bank --------------------------------------------------------------------------


def concept_maps(
    bank: ConceptBank,
    model: nn.Module,
    x: torch.Tensor,
    *,
    normalization: Normalization | None = None,
    upsample: bool = True,
    steps: int = 200,
) -> torch.Tensor:
    """Concept attribution maps of images ``x`` ``(N, C_in, H, W)`` in ``[0, 1]``:
    ``(N, r, H, W)`` (``(N, r, h, w)`` without ``upsample``), the non-negative coefficients
    of each position's activations on the bank's concepts (:func:`nmf_transform`), not
    rescaled (pytorch-grad-cam rescales each map to ``[0, 1]``). ``normalization``:
    default the bank's."""
    norm = normalization if normalization is not None else bank.normalization
    images = x if x.dim() == 4 else x[None]
    with borrowed(model):
        acts = _layer_acts(model, images, bank.layer, norm, 64)
    n, c, h, w = acts.shape
    V = (acts.permute(0, 2, 3, 1).reshape(n, h * w, c) - bank.offset.double()).clamp(min=0)
    u = nmf_transform(V, bank.basis.double(), steps=steps)  # (N, hw, r)
    maps = u.transpose(1, 2).reshape(n, bank.n_concepts, h, w).float()
    if upsample and (h, w) != tuple(images.shape[-2:]):
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return maps


def concept_objective(bank: ConceptBank):
    """The objective of concept ``units[b]``: ``sum_c basis[j, c] (a_c - offset_c)``
    averaged over positions."""
    from xaikit.filters.objectives import Objective

    def fn(ctx) -> torch.Tensor:
        acts = ctx.layer(bank.layer)
        basis = bank.basis.to(acts)[ctx.units]  # (B, C)
        offset = bank.offset.to(acts)
        centred = acts - offset.reshape(1, -1, *([1] * (acts.dim() - 2)))
        return (
            (centred * basis.reshape(*basis.shape, *([1] * (acts.dim() - 2))))
            .sum(1)
            .flatten(1)
            .mean(1)
        )

    return Objective(fn, layers=frozenset({bank.layer}), name=f"concept({bank.layer})")


def concept_maximization(
    bank: ConceptBank,
    model: nn.Module,
    *,
    steps: int = 64,
    size: int | None = None,
    seed: int = 0,
    quiet: bool | None = None,
    **options: Any,
) -> torch.Tensor:
    """``(r, C_in, S, S)``: :func:`~xaikit.filters.maximize` of each concept's direction."""
    from xaikit.filters.maximize import maximize

    result = maximize(
        model,
        None,
        list(range(bank.n_concepts)),
        objective=concept_objective(bank),
        steps=steps,
        size=size or bank.size,
        seed=seed,
        normalization=bank.normalization,
        quiet=True if quiet is None else quiet,
        **options,
    )
    return result.images.detach().float().cpu()


def concepts_into(
    out: str | os.PathLike[str], bank: ConceptBank, *, saved: bool = False
) -> list[str]:
    """Write the bank (:meth:`ConceptBank.save`; ``saved``: it is in ``out`` already),
    ``concepts.png`` (its figure) and ``concepts/concept_NN.png`` (exemplars side by side)
    into ``out``; the file names."""
    from xaikit.filters._plot import figure_png, image_png, tile
    from xaikit.io import atomic_write_bytes

    folder = Path(out)
    files = [BANK_TENSORS, BANK_JSON] if saved else bank.save(folder)
    atomic_write_bytes(folder / "concepts.png", figure_png(bank.figure))
    files.append("concepts.png")
    for j in range(bank.n_concepts):
        grid, _, _ = tile(bank.exemplars[j].float(), ncols=bank.exemplars.shape[1])
        name = f"concepts/concept_{j:02d}.png"
        atomic_write_bytes(folder / name, image_png(grid))
        files.append(name)
    return files
