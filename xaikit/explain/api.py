"""The entry points: :func:`explain` and one explainer class per method.

::

    heat = xaikit.explain(model, images, method="gradcam")                # (N, H, W) in [0, 1]
    heat = xaikit.explain(model, images, target="positive")               # (N, K, H, W)
    maps = xaikit.explain(model, images, method=["gradcam", "layercam"])  # {name: tensor}
    res = xaikit.explain(model, images, return_result=True)               # Explanation

    with GradCAM(model, layer="layer4") as cam:
        heat = cam(images, target=3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.adapter import InputKey, OutputSelector
from xaikit.explain.engine import Settings, check_methods, method_names, run
from xaikit.explain.layouts import Reshape
from xaikit.explain.postprocess import DEFAULT_EPS
from xaikit.explain.result import Explanation

Result = torch.Tensor | Explanation | dict[str, torch.Tensor] | dict[str, Explanation]


def explain(
    model: nn.Module,
    inputs: Any,
    method: str | Sequence[str] = "gradcam",
    target: Any = "predicted",
    layer: str | nn.Module = "auto",
    *,
    reshape: Reshape = "auto",
    score: str = "logit",
    normalize: str | None = "minmax",
    eps: float = DEFAULT_EPS,
    output: OutputSelector = None,
    attribute_to: InputKey = 0,
    class_names: Sequence[str] | None = None,
    seed: int | None = None,
    quiet: bool | None = None,
    memory_budget: int | str | None = None,
    return_result: bool = False,
    **options: Any,
) -> Result:
    """Heatmaps that explain a classifier's scores, ``(N, C, *S) -> (N, *S)`` or ``(N, K, *S)``.

    Args:
        model: any classifier (zoo, torchvision, your own; ``DataParallel`` is unwrapped).
            Its state is borrowed: eval mode, frozen parameters and grad enabled during the
            call, all restored afterwards; no hook is left and ``.grad`` is never written.
            Calling inside ``torch.no_grad()`` or a validation loop is fine.
        inputs: ``(N, C, H, W)`` images or ``(N, C, L)`` signals; or a tuple/dict of
            inputs for several-input models (see ``attribute_to``). Moved to the model's
            device.
        method: a name, or a list of names for several methods from one forward/backward
            pass: ``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``, ``hirescam``,
            ``eigencam``, ``scorecam``, ``scorecam-fast`` (CAM methods at ``layer``), and
            ``saliency``, ``inputxgrad``, ``ig``, ``smoothgrad``, ``guided-backprop``,
            ``guided-gradcam``, ``occlusion`` (gradient / perturbation methods on the input).
        target: what to explain, see :mod:`xaikit.explain.targets`: ``"predicted"``, an
            index, a label name, ``"positive"``, ``"all"``, per-input indices or lists, a
            multi-hot mask or a callable on the logits.
        layer: ``"auto"`` (the last layer whose output is a map of the input and reaches
            the scores; see :mod:`xaikit.explain.layers`), a dotted module name, or the
            module.
        reshape: how the layer's output is read as a map (:mod:`xaikit.explain.layouts`):
            ``"auto"`` (from the shape and the model's patch grid), ``"nchw"``, ``"nhwc"``
            (Swin, MambaOut), ``"tokens"`` (ViT-family ``(N, P + H*W, C)``, prefix tokens
            dropped), or a callable ``(N, ...) -> (N, C, H, W)`` like pytorch-grad-cam's
            ``reshape_transform``. A layer that reads as no map is refused before any
            backward pass.
        score: ``"logit"`` (default) or ``"prob"`` (softmax / sigmoid by the head's task).
        normalize: ``"minmax"``, ``"max_abs"``, ``"global"`` or ``None``
            (see :mod:`xaikit.explain.postprocess`).
        eps: relative tolerance under which a map counts as constant (degenerate).
        output: selects the scores from a tuple/dict/object output (index, key, attribute
            name or callable).
        attribute_to: which input of a tuple/dict is explained.
        class_names: label names for targets given by name (default: ``model.class_names``).
        seed: for stochastic methods (SmoothGrad); a private generator, the global RNG is
            untouched.
        quiet: hide progress bars (Score-CAM); default from ``XAIKIT_QUIET``.
        memory_budget: bytes one call may use beyond the model (an int, or ``"512M"``,
            ``"2G"``); default ``$XAIKIT_MEMORY_BUDGET``, else 1 GiB. One dry forward of one
            sample measures its activations (cached per model and input shape); the inputs
            are then explained in chunks of ``budget // per-sample bytes`` and the results
            concatenated (identical maps; ``"global"`` normalization still spans the whole
            call), and IG / SmoothGrad / occlusion run that many rows per forward pass unless
            ``internal_batch_size`` is given. Peak memory thus does not grow with ``N``,
            ``steps`` or ``samples``; it is an estimate, not a hard limit.
        return_result: return :class:`~xaikit.explain.result.Explanation` objects (raw
            maps, targets, scores, probabilities, degenerate flags) instead of tensors.
        **options: method options, e.g. ``batch_size`` (Score-CAM), ``top_k`` and ``fill``
            (fast Score-CAM), ``steps`` / ``baseline`` (IG), ``samples`` / ``stdev``
            (SmoothGrad), ``window`` / ``stride`` (occlusion).

    Returns:
        A tensor on the model's device, ``(N, *S)`` when one target per input was asked for
        and ``(N, K, *S)`` otherwise; with ``return_result`` an ``Explanation``; for a list of
        methods a dict ``{method: ...}``.

    Raises:
        XaikitConfigError: unknown method/option/layer, a layer that never runs, targets out
            of range or of the wrong shape (before any backward pass), bad inputs.
    """
    settings = Settings(
        layer=layer,
        reshape=reshape,
        score=score,
        normalize=normalize,
        eps=eps,
        output=output,
        attribute_to=attribute_to,
        class_names=class_names,
        seed=seed,
        quiet=quiet,
        memory_budget=memory_budget,
        options=options,
    )
    names = check_methods(method)
    results = run(model, inputs, names, target, settings)
    if isinstance(method, str):
        result = results[names[0]]  # an alias (gradxinput) is keyed by its canonical name
        return result if return_result else result.heatmap
    if return_result:
        return results
    return {name: res.heatmap for name, res in results.items()}


class Explainer:
    """An explainer bound to a model: ``attribute(inputs, target=...)`` (or call it).

    It keeps no state between calls (no hooks, no captured tensors): hooks live only inside
    each call. It is a context manager for symmetry with hook-owning tools; ``close()``
    releases the model reference and later calls raise.

    Args:
        model: the classifier.
        method: a method name or a list of names (see :func:`explain`); subclasses fix it.
        layer, score, normalize, eps, output, attribute_to, class_names, seed, quiet,
        **options: defaults for every call (see :func:`explain`); ``attribute`` may
            override them.
    """

    method: ClassVar[str | None] = None

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module = "auto",
        *,
        method: str | Sequence[str] | None = None,
        **defaults: Any,
    ) -> None:
        chosen = method if method is not None else type(self).method
        if chosen is None:
            raise XaikitConfigError(
                f"Explainer needs a method; choose from {', '.join(method_names())}"
            )
        check_methods(chosen)
        self.model: nn.Module | None = model
        self.methods = chosen
        self.defaults: dict[str, Any] = {"layer": layer, **defaults}

    def attribute(self, inputs: Any, target: Any = "predicted", **overrides: Any) -> Result:
        """Explain ``inputs``; see :func:`explain` for the arguments and the return value."""
        if self.model is None:
            raise XaikitConfigError(f"this {type(self).__name__} is closed; create a new one")
        kwargs = {**self.defaults, **overrides}
        return explain(self.model, inputs, self.methods, target, **kwargs)

    __call__ = attribute

    def close(self) -> None:
        """Release the model (no hooks are ever left between calls)."""
        self.model = None

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.methods!r}, {self.defaults!r})"


class GradCAM(Explainer):
    """Grad-CAM (Selvaraju et al., ICCV 2017): ``relu(sum_c mean(dS/dA_c) * A_c)``."""

    method = "gradcam"


class GradCAMPlusPlus(Explainer):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018), closed form with ``exp(score)``."""

    method = "gradcam++"


class XGradCAM(Explainer):
    """XGrad-CAM (Fu et al., BMVC 2020): activation-weighted gradient sums."""

    method = "xgradcam"


class LayerCAM(Explainer):
    """LayerCAM (Jiang et al., IEEE TIP 2021): ``relu(sum_c relu(dS/dA_c) * A_c)``."""

    method = "layercam"


class HiResCAM(Explainer):
    """HiResCAM (Draelos & Carin, 2020): ``relu(sum_c dS/dA_c * A_c)``."""

    method = "hirescam"


class EigenCAM(Explainer):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): first principal component of ``A``."""

    method = "eigencam"


class ScoreCAM(Explainer):
    """Score-CAM (Wang et al., CVPR-W 2020): channels weighted by masked-input scores."""

    method = "scorecam"


class FastScoreCAM(Explainer):
    """Score-CAM evaluating only the ``top_k`` most active channels (see
    :mod:`xaikit.explain.scorecam`)."""

    method = "scorecam-fast"


class Saliency(Explainer):
    """Vanilla gradient saliency (Simonyan et al., 2014)."""

    method = "saliency"


class InputXGradient(Explainer):
    """Input x gradient (Shrikumar et al., 2016)."""

    method = "inputxgrad"


class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al., 2017)."""

    method = "ig"


class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al., 2017)."""

    method = "smoothgrad"


class GuidedBackprop(Explainer):
    """Guided backpropagation (Springenberg et al., 2015)."""

    method = "guided-backprop"


class GuidedGradCAM(Explainer):
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backprop x upsampled Grad-CAM."""

    method = "guided-gradcam"


class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus, 2014): score drop under a sliding baseline window."""

    method = "occlusion"
