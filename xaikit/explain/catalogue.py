"""Every method ``xaikit.explain`` accepts, with its family and the paper it implements.

``xaikit methods`` prints this table; the evaluation suite and the report accept the same
names. The CAM methods carry their paper in :data:`~xaikit.explain.cam.CAM_METHODS` (so a
method registered later with :func:`~xaikit.explain.cam.register_cam_method` is listed too);
the other families are written out here. ``tests/explain/test_catalogue.py`` checks that
every accepted name has an entry.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Family -> what it means, in the order ``xaikit methods`` shows them.
FAMILIES: dict[str, str] = {
    "cam": "class activation maps: a layer's activations weighted by gradients",
    "cam-free": "class activation maps that need no gradient",
    "cam-perturbation": "class activation maps weighted by forward passes of masked inputs",
    "gradient": "gradients of the score with respect to the input",
    "perturbation": "forward passes of perturbed inputs",
    "relevance": "layer-wise relevance propagation (LRP)",
    "attention": "attention probabilities of vision transformers",
}

#: Methods outside the CAM registry: name -> (family, paper).
_OTHER_METHODS: dict[str, tuple[str, str]] = {
    "scorecam": (
        "cam-perturbation",
        "Wang et al., Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural "
        "Networks, CVPR Workshops 2020",
    ),
    "scorecam-fast": (
        "cam-perturbation",
        "Score-CAM (Wang et al., CVPR Workshops 2020) on the layer's top-k channels by mean "
        "activation (xaikit's variant)",
    ),
    "saliency": (
        "gradient",
        "Simonyan et al., Deep Inside Convolutional Networks: Visualising Image "
        "Classification Models and Saliency Maps, ICLR Workshops 2014",
    ),
    "inputxgrad": (
        "gradient",
        "Shrikumar et al., Not Just a Black Box: Learning Important Features Through "
        "Propagating Activation Differences, arXiv:1605.01713, 2016",
    ),
    "ig": (
        "gradient",
        "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017",
    ),
    "smoothgrad": (
        "gradient",
        "Smilkov et al., SmoothGrad: removing noise by adding noise, arXiv:1706.03825, 2017",
    ),
    "guided-backprop": (
        "gradient",
        "Springenberg et al., Striving for Simplicity: The All Convolutional Net, "
        "ICLR Workshops 2015",
    ),
    "guided-gradcam": (
        "gradient",
        "Selvaraju et al., Grad-CAM, ICCV 2017 (guided backpropagation times Grad-CAM)",
    ),
    "deconvolution": (
        "gradient",
        "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
    ),
    "deeplift": (
        "gradient",
        "Shrikumar et al., Learning Important Features Through Propagating Activation "
        "Differences, ICML 2017 (rescale rule)",
    ),
    "deepliftshap": (
        "gradient",
        "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
        "(DeepLIFT averaged over a baseline distribution)",
    ),
    "gradientshap": (
        "gradient",
        "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
        "(expected gradients on noisy inputs and random baselines)",
    ),
    "occlusion": (
        "perturbation",
        "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
    ),
    "feature-ablation": (
        "perturbation",
        "feature ablation on superpixels (each segment replaced by the baseline in turn)",
    ),
    "lime": (
        "perturbation",
        'Ribeiro et al., "Why Should I Trust You?": Explaining the Predictions of Any '
        "Classifier, KDD 2016",
    ),
    "kernelshap": (
        "perturbation",
        "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
        "(Kernel SHAP)",
    ),
    "lrp": (
        "relevance",
        "Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions by "
        "Layer-Wise Relevance Propagation, PLOS ONE 2015; Montavon et al., Layer-Wise "
        "Relevance Propagation: An Overview, 2019 (composites)",
    ),
    "attention-rollout": (
        "attention",
        "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020",
    ),
    "attention-gradients": (
        "attention",
        "Chefer et al., Generic Attention-model Explainability for Interpreting Bi-Modal and "
        "Encoder-Decoder Transformers, ICCV 2021",
    ),
}


@dataclass(frozen=True)
class MethodInfo:
    """One row of the catalogue."""

    name: str
    family: str
    paper: str
    uses_layer: bool


def _cam_family(name: str) -> str:
    from xaikit.explain.cam import CAM_METHODS

    method = CAM_METHODS[name]
    family = getattr(method, "family", None)
    if isinstance(family, str) and family in FAMILIES:
        return family
    return "cam" if method.needs_gradients else "cam-free"


def method_info(name: str) -> MethodInfo:
    """The catalogue row of one accepted method name (aliases resolved)."""
    from xaikit._names import METHOD_ALIASES
    from xaikit.explain.cam import CAM_METHODS
    from xaikit.explain.engine import is_cam

    name = METHOD_ALIASES.get(name, name)
    if name in _OTHER_METHODS:
        family, paper = _OTHER_METHODS[name]
        uses_layer = is_cam(name) or name == "guided-gradcam"
    elif name in CAM_METHODS:
        method = CAM_METHODS[name]
        family, paper = _cam_family(name), method.paper
        uses_layer = getattr(method, "uses_layer", True)  # FullGrad reads every biased layer
    else:
        raise KeyError(name)
    return MethodInfo(name, family, paper, uses_layer)


def method_catalogue() -> list[MethodInfo]:
    """Every method ``explain`` accepts now, grouped by family in :data:`FAMILIES` order."""
    from xaikit.explain.engine import method_names

    rows = [method_info(name) for name in method_names()]
    order = list(FAMILIES)
    return sorted(rows, key=lambda row: order.index(row.family))
