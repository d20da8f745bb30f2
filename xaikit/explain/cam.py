"""The CAM family as small pure functions of activations and gradients captured once.

Every function takes the target layer's activations ``A`` shaped ``(N, C, *s)`` (``*s`` is
``(h, w)`` for images, ``(l,)`` for 1-D signals) and, for gradient-based methods, the
gradients of the ``K`` explained scores with respect to them, ``G`` shaped
``(N, K, C, *s)``. It returns the raw class activation map ``(N, K, *s)``: signed, at the
layer's resolution, before the ReLU that every CAM method applies for display (the ReLU,
upsampling and normalization are done once, in :mod:`xaikit.explain.postprocess`).

Methods that weight whole channels are written as ``weights(A, G) -> (N, K, C)`` and share
:func:`weighted_sum`; methods that weight positions are written as map functions. Adding a
method is adding one small function and one :data:`CAM_METHODS` entry. Score-CAM, which
needs forward passes of masked inputs, lives in :mod:`xaikit.explain.scorecam`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from xaikit.errors import XaikitConfigError

#: Added to denominators exactly as in pytorch-grad-cam, so results can be compared.
GRADCAM_PP_EPS = 1e-6
XGRADCAM_EPS = 1e-7


def _flat(t: torch.Tensor, start: int) -> torch.Tensor:
    return t.flatten(start_dim=start)


def weighted_sum(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_c weights[n, k, c] * A[n, c]``: ``(N, C, *s)``, ``(N, K, C)`` -> ``(N, K, *s)``."""
    n, _c, *spatial = activations.shape
    maps = torch.bmm(weights.to(activations.dtype), _flat(activations, 2))
    return maps.reshape(n, weights.shape[1], *spatial)


def gradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights (Selvaraju et al., 2017, eq. 1).

    ``alpha[n, k, c] = mean over positions of G[n, k, c]`` (global-average-pooled gradients).
    ``(N, C, *s)``, ``(N, K, C, *s)`` -> ``(N, K, C)``.
    """
    return _flat(gradients, 3).mean(dim=-1)


def gradcam_pp_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights (Chattopadhyay et al., 2018, eqs. 10 and 19).

    With the class score passed through ``exp`` (the paper's closed form), the higher
    derivatives are powers of the first: ``alpha = G^2 / (2 G^2 + sum_ab A_ab * G^3)``
    (``0`` where ``G == 0``), and ``w_c = sum_ij alpha_ij * relu(G_ij)``. The positive factor
    ``exp(score)`` of ``relu(dY/dA)`` is left out, as in pytorch-grad-cam: it scales each map
    by a constant. ``(N, C, *s)``, ``(N, K, C, *s)`` -> ``(N, K, C)``.
    """
    g2 = gradients * gradients
    g3 = g2 * gradients
    view = (activations.shape[0], 1, activations.shape[1]) + (1,) * (activations.dim() - 2)
    sum_a = _flat(activations, 2).sum(dim=-1).reshape(view)
    alpha = torch.where(
        gradients != 0, g2 / (2 * g2 + sum_a * g3 + GRADCAM_PP_EPS), torch.zeros_like(g2)
    )
    return _flat(alpha * gradients.clamp_min(0), 3).sum(dim=-1)


def xgradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM channel weights (Fu et al., 2020, eq. 11).

    ``w_c = sum_ij (A_ij / sum_ab A_ab) * G_ij``: gradients weighted by the normalized
    activation. ``(N, C, *s)``, ``(N, K, C, *s)`` -> ``(N, K, C)``.
    """
    a = _flat(activations, 2)
    share = a / (a.sum(dim=-1, keepdim=True) + XGRADCAM_EPS)
    return (_flat(gradients, 3) * share.unsqueeze(1)).sum(dim=-1)


def layercam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., 2021, eq. 5): ``sum_c relu(G_c) * A_c`` position by position.

    ``(N, C, *s)``, ``(N, K, C, *s)`` -> ``(N, K, *s)``.
    """
    return (gradients.clamp_min(0) * activations.unsqueeze(1)).sum(dim=2)


def hirescam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin, 2020, eq. 4): ``sum_c G_c * A_c`` position by position.

    Unlike Grad-CAM it does not average the gradients, so the map provably reflects the
    locations the score used (for models ending in global pooling + one linear layer, it is
    the exact per-position contribution to the score). ``(N, C, *s)``, ``(N, K, C, *s)`` ->
    ``(N, K, *s)``.
    """
    return (gradients * activations.unsqueeze(1)).sum(dim=2)


def eigencam_map(activations: torch.Tensor, num_targets: int) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, 2020): the activations projected on their first
    principal component.

    Per input, the ``(P, C)`` matrix of activation vectors at the ``P`` positions is centred
    (the mean vector over positions subtracted, as PCA and pytorch-grad-cam do) and
    projected on its first right singular vector. A singular vector's sign is arbitrary;
    the rule here makes the projection correlate positively with the channel-summed
    activation map ``sum_c A_c`` (the map is "where the features are strong"). Eigen-CAM
    does not use the target: every target gets the same map.

    ``(N, C, *s)`` -> ``(N, K, *s)`` (``K = num_targets`` copies).
    """
    n, _c, *spatial = activations.shape
    x = _flat(activations, 2).transpose(1, 2)  # (N, P, C)
    centred = x - x.mean(dim=1, keepdim=True)
    _u, _s, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = torch.bmm(centred, vh[:, :1, :].transpose(1, 2)).squeeze(2)  # (N, P)
    strength = x.sum(dim=2)
    sign = torch.sign((projection * strength).sum(dim=1, keepdim=True))
    projection = projection * torch.where(sign == 0, torch.ones_like(sign), sign)
    return projection.reshape(n, 1, *spatial).expand(n, num_targets, *spatial)


MapFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``(A (N, C, *s), G (N, K, C, *s) or None, K) -> raw map (N, K, *s)``.
CamFn = Callable[[torch.Tensor, "torch.Tensor | None", int], torch.Tensor]


@dataclass(frozen=True)
class CamMethod:
    """A registered CAM method.

    Attributes:
        name: the ``method=`` name.
        paper: the reference it implements.
        map: ``(A (N, C, *s), G (N, K, C, *s) or None, K) -> raw map (N, K, *s)``.
        needs_gradients: whether ``map`` reads ``G`` (else no backward pass is needed).
    """

    name: str
    paper: str
    map: CamFn
    needs_gradients: bool = True


def _needs(gradients: torch.Tensor | None) -> torch.Tensor:
    if gradients is None:
        raise ValueError("this CAM method needs the gradients of the explained scores")
    return gradients


def _from_weights(weights: MapFn) -> CamFn:
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None, _k: int) -> torch.Tensor:
        return weighted_sum(activations, weights(activations, _needs(gradients)))

    return cam


def _from_map(fn: MapFn) -> CamFn:
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None, _k: int) -> torch.Tensor:
        return fn(activations, _needs(gradients))

    return cam


CAM_METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (
        CamMethod(
            "gradcam",
            "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via "
            "Gradient-based Localization, ICCV 2017",
            _from_weights(gradcam_weights),
        ),
        CamMethod(
            "gradcam++",
            "Chattopadhyay et al., Grad-CAM++: Generalized Gradient-based Visual Explanations "
            "for Deep Convolutional Networks, WACV 2018",
            _from_weights(gradcam_pp_weights),
        ),
        CamMethod(
            "xgradcam",
            "Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation "
            "of CNNs, BMVC 2020",
            _from_weights(xgradcam_weights),
        ),
        CamMethod(
            "layercam",
            "Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for "
            "Localization, IEEE TIP 2021",
            _from_map(layercam_map),
        ),
        CamMethod(
            "hirescam",
            "Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of "
            "convolutional neural networks, arXiv:2011.08891, 2020",
            _from_map(hirescam_map),
        ),
        CamMethod(
            "eigencam",
            "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, "
            "IJCNN 2020",
            lambda a, _g, k: eigencam_map(a, k),
            needs_gradients=False,
        ),
    )
}


def register_cam_method(method: CamMethod) -> None:
    """Add a CAM method to :data:`CAM_METHODS`, so ``explain(method=method.name)`` runs it
    on the shared activations and gradients. The name must be new."""
    if method.name in CAM_METHODS:
        raise XaikitConfigError(f"a CAM method named {method.name!r} is already registered")
    CAM_METHODS[method.name] = method
