"""Sanity checks for heatmap methods (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

* :func:`randomization_check` - cascading model-parameter randomization: re-initialize the
  layers of a **deep copy** of the model from the head down, one more layer per step, recompute
  the maps and compare them with the trained model's maps (Spearman rank correlation, and SSIM).
  A method that explains the model must change once the model's top layers are random; maps
  that stay the same (edge detectors such as Guided Backprop) fail.
* :func:`class_contrast` - maps for different classes of the same image must differ: the mean
  ``1 - Spearman`` (and the mean L1 distance of normalized maps) between the maps of the
  model's top-k classes. A model whose output ignores the input, or a method that ignores the
  target, fails.
* :func:`sanity_check` - both, with one verdict.

The user's model is never modified: randomization happens on a copy, with a private
``torch.Generator`` seeded by ``seed`` (the global RNG is untouched).
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from xaikit.errors import XaikitConfigError
from xaikit.evaluate._common import (
    Explainer,
    Normalization,
    TargetSpec,
    check_inputs,
    compute_maps,
    is_quiet,
    layer_name,
    make_explainer,
    method_name,
    model_inputs,
    predict_logits,
    resolve_targets,
)
from xaikit.evaluate.metadata import metric_info
from xaikit.evaluate.randomize import cascade_layers, randomize_layer
from xaikit.evaluate.similarity import l1_distance, spearman, ssim
from xaikit.explain.adapter import ExplainWarning
from xaikit.explain.state import model_device
from xaikit.zoo.heads import get_task

#: Default pass thresholds; see :func:`randomization_check` and :func:`class_contrast`.
RANDOMIZATION_THRESHOLD = 0.5
CONTRAST_THRESHOLD = 0.1


@dataclass(frozen=True)
class RandomizationResult:
    """Outcome of the cascading randomization check.

    Attributes:
        method: the method's name.
        layers: the randomized layers in cascade order (head first); step ``i`` has layers
            ``0..i`` randomized.
        spearman: ``(L, N)`` rank correlation between each original map and its map after
            step ``i``.
        ssim: ``(L, N)`` SSIM for the same pairs, or ``None`` when not computed.
        top_layers: the step the verdict reads (after randomizing this many layers).
        threshold: the verdict is ``"pass"`` when the mean correlation there is below it.
        score: mean Spearman correlation after ``top_layers`` layers.
        verdict: ``"pass"`` or ``"fail"``.
        seed: the seed of the re-initialization.
    """

    method: str
    layers: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor | None
    top_layers: int
    threshold: float
    score: float
    verdict: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: per-layer means and the verdict."""
        means = self.spearman.mean(dim=1).tolist()
        ssims = self.ssim.mean(dim=1).tolist() if self.ssim is not None else [None] * len(means)
        return {
            "method": self.method,
            "verdict": self.verdict,
            "score": self.score,
            "threshold": self.threshold,
            "top_layers": self.top_layers,
            "seed": self.seed,
            "metric": metric_info("randomization_spearman").to_dict(),
            "cascade": [
                {"layer": name, "spearman": rho, "ssim": s}
                for name, rho, s in zip(self.layers, means, ssims)
            ],
        }


@dataclass(frozen=True)
class ContrastResult:
    """Outcome of the class-contrast check.

    Attributes:
        method: the method's name.
        classes: ``(N, k)`` the top-k classes whose maps were compared.
        dissimilarity: ``(N, P)`` ``1 - Spearman`` for each of the ``P = k (k - 1) / 2`` pairs.
        l1: ``(N, P)`` mean per-pixel distance of the min-max normalized maps.
        threshold: the verdict is ``"pass"`` when the mean dissimilarity reaches it.
        score: mean ``1 - Spearman`` over pairs and images.
        verdict: ``"pass"`` or ``"fail"``.
    """

    method: str
    classes: torch.Tensor
    dissimilarity: torch.Tensor
    l1: torch.Tensor
    threshold: float
    score: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "method": self.method,
            "verdict": self.verdict,
            "score": self.score,
            "l1": float(self.l1.mean()),
            "threshold": self.threshold,
            "k": int(self.classes.shape[1]),
            "metric": metric_info("class_contrast").to_dict(),
        }


@dataclass(frozen=True)
class SanityResult:
    """Both checks; ``verdict`` is ``"pass"`` only when both pass."""

    randomization: RandomizationResult
    contrast: ContrastResult
    verdict: str = field(init=False)

    def __post_init__(self) -> None:
        passed = self.randomization.verdict == "pass" and self.contrast.verdict == "pass"
        object.__setattr__(self, "verdict", "pass" if passed else "fail")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "randomization": self.randomization.to_dict(),
            "class_contrast": self.contrast.to_dict(),
        }


def randomization_check(
    model: nn.Module,
    inputs: torch.Tensor,
    method: str | Explainer = "gradcam",
    target: TargetSpec = "predicted",
    *,
    layer: str | nn.Module = "auto",
    top_layers: int = 2,
    threshold: float = RANDOMIZATION_THRESHOLD,
    max_layers: int | None = None,
    seed: int = 0,
    with_ssim: bool = True,
    normalization: Normalization | None = None,
    batch_size: int = 64,
    quiet: bool | None = None,
    **options: Any,
) -> RandomizationResult:
    """Cascading model-parameter randomization (Adebayo et al., 2018).

    The model is deep-copied; the copy's parameterized layers (convolution, linear,
    recurrent, normalization) are re-initialized one after another in reverse execution
    order - the head first - and after each the maps are recomputed for the same targets and
    compared with the maps of the trained model.

    Args:
        model: the trained classifier; never modified (bit-identical afterwards).
        inputs: ``(N, C, H, W)`` inputs, before ``normalization``.
        method: a method name for :func:`xaikit.explain.explain` or an explainer
            ``(model, inputs, target (N,)) -> (N, H, W)``.
        target: the explained class per input (``"predicted"``, an int or ``(N,)``); kept
            fixed through the cascade.
        layer: the explained layer (a name, or a module of ``model``), passed to ``explain``.
        top_layers: the verdict reads the correlation after this many layers are random.
        threshold: ``"pass"`` when the mean Spearman correlation there is below it.
        max_layers: stop the cascade after this many layers (default: all of them).
        seed: seed of the private generator that draws the new parameters.
        with_ssim: also compute SSIM (2-D maps only).
        normalization: per-channel ``mean``/``std`` applied to ``inputs`` before the model.
        batch_size: batch size of the forward pass that resolves ``"predicted"``.
        quiet: hide the progress bar (default: ``$XAIKIT_QUIET``).
        **options: passed to ``explain``.

    Returns:
        :class:`RandomizationResult`; ``spearman[i]`` holds the correlations after
        randomizing ``layers[: i + 1]``.
    """
    check_inputs(inputs)
    if top_layers < 1:
        raise XaikitConfigError(f"top_layers must be at least 1, got {top_layers}")
    device = model_device(model)
    x = model_inputs(inputs.to(device), normalization)
    targets = resolve_targets(model, x, target, batch_size=batch_size)
    if targets.dim() != 1:
        raise XaikitConfigError("the randomization check takes one target per input, (N,)")
    explainer = make_explainer(method, layer=layer_name(model, layer), **options)

    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    layers = cascade_layers(twin, x[:1])
    if max_layers is not None:
        if max_layers < 1:
            raise XaikitConfigError(f"max_layers must be at least 1, got {max_layers}")
        layers = layers[:max_layers]
    generator = torch.Generator(device="cpu").manual_seed(int(seed))

    original = compute_maps(explainer, twin, x, targets)
    use_ssim = with_ssim and original.dim() == 3
    rhos, ssims = [], []
    for name in tqdm(layers, desc="randomization", disable=is_quiet(quiet), leave=False):
        randomize_layer(modules[name], generator)
        with warnings.catch_warnings():
            # A randomized model often gives all-zero maps; expected here, not worth a warning.
            warnings.simplefilter("ignore", ExplainWarning)
            maps = compute_maps(explainer, twin, x, targets)
        rhos.append(spearman(original, maps).cpu())
        if use_ssim:
            ssims.append(ssim(original, maps).cpu())
    rho = torch.stack(rhos)
    step = min(top_layers, len(layers)) - 1
    score = float(rho[step].mean())
    return RandomizationResult(
        method=method_name(method),
        layers=layers,
        spearman=rho,
        ssim=torch.stack(ssims) if use_ssim else None,
        top_layers=step + 1,
        threshold=float(threshold),
        score=score,
        verdict="pass" if score < threshold else "fail",
        seed=int(seed),
    )


def class_contrast(
    model: nn.Module,
    inputs: torch.Tensor,
    method: str | Explainer = "gradcam",
    *,
    k: int = 2,
    layer: str | nn.Module = "auto",
    threshold: float = CONTRAST_THRESHOLD,
    normalization: Normalization | None = None,
    batch_size: int = 64,
    **options: Any,
) -> ContrastResult:
    """Class contrast: do the maps for the model's top-k classes of an image differ?

    For each image the ``k`` most probable classes are explained (``k`` calls of the method,
    each batched over all images) and every pair of their maps is compared: ``1 - Spearman``
    (0 = same ranking, up to 2) and the L1 distance of min-max normalized maps. Maps that do
    not depend on the class - a method that ignores the target, or a model whose output
    ignores the input - score 0 and fail.

    Args:
        model: the classifier (borrowed, not modified); needs at least ``k`` classes.
        inputs: ``(N, C, H, W)`` inputs, before ``normalization``.
        method: a method name or an explainer ``(model, inputs, target) -> (N, H, W)``.
        k: how many top classes to compare (at least 2).
        threshold: ``"pass"`` when the mean ``1 - Spearman`` reaches it.
        layer, normalization, batch_size, **options: as for :func:`randomization_check`.

    Returns:
        :class:`ContrastResult`.
    """
    check_inputs(inputs)
    device = model_device(model)
    task = get_task(model)
    x = model_inputs(inputs.to(device), normalization)
    logits = predict_logits(model, x, batch_size=batch_size)
    if task.name == "binary":
        p = logits[:, :1].sigmoid()
        probs = torch.cat([1.0 - p, p], dim=1)
    else:
        probs = task.probabilities(logits)
    if k < 2 or k > probs.shape[1]:
        raise XaikitConfigError(
            f"the class-contrast check compares k >= 2 classes and the model has "
            f"{probs.shape[1]}; got k={k}"
        )
    # A stable sort keeps equal probabilities in class order, so ties are deterministic.
    classes = torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :k]
    explainer = make_explainer(method, layer=layer, **options)
    maps = [compute_maps(explainer, model, x, classes[:, j]) for j in range(k)]
    pairs = list(itertools.combinations(range(k), 2))
    dissimilarity = torch.stack([1.0 - spearman(maps[i], maps[j]) for i, j in pairs], dim=1)
    l1 = torch.stack([l1_distance(maps[i], maps[j]) for i, j in pairs], dim=1)
    score = float(dissimilarity.mean())
    return ContrastResult(
        method=method_name(method),
        classes=classes,
        dissimilarity=dissimilarity,
        l1=l1,
        threshold=float(threshold),
        score=score,
        verdict="pass" if score >= threshold else "fail",
    )


def sanity_check(
    model: nn.Module,
    inputs: torch.Tensor,
    method: str | Explainer = "gradcam",
    target: TargetSpec = "predicted",
    *,
    layer: str | nn.Module = "auto",
    k: int = 2,
    seed: int = 0,
    normalization: Normalization | None = None,
    quiet: bool | None = None,
    **options: Any,
) -> SanityResult:
    """Run :func:`randomization_check` and :func:`class_contrast` with their defaults.

    ``verdict`` is ``"pass"`` when the maps change once the top two layers are random
    (Spearman below 0.5) and differ between the top-k classes (mean ``1 - Spearman`` of at
    least 0.1).
    """
    randomization = randomization_check(
        model, inputs, method, target, layer=layer, seed=seed, normalization=normalization,
        quiet=quiet, **options,
    )  # fmt: skip
    contrast = class_contrast(
        model, inputs, method, k=k, layer=layer, normalization=normalization, **options
    )
    return SanityResult(randomization, contrast)
