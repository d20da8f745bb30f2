"""The CAM family as small pure functions of activations and gradients captured once.

Every function takes the target layer's activations ``A`` shaped ``(N, C, *s)`` (``*s`` is
``(h, w)`` for images, ``(l,)`` for 1-D signals) and, for gradient-based methods, the
gradients of the ``K`` explained scores with respect to them, ``G`` shaped
``(N, K, C, *s)``. It returns the raw class activation map ``(N, K, *s)``: signed, at the
layer's resolution, before the ReLU that every CAM method applies for display (the ReLU,
upsampling and normalization are done once, in :mod:`xaikit.explain.postprocess`).

Methods that weight whole channels are written as ``weights(A, G) -> (N, K, C)`` and share
:func:`weighted_sum`; methods that weight positions are written as map functions. Adding a
method is adding one small function and one :data:`CAM_METHODS` entry. A method may also
give its per-channel contributions (whose channel sum is its map), which ``eigen_smooth``
projects on their first principal component (:func:`eigen_project`).

What ``G`` is depends on the method's ``gradient`` kind: the targets' score gradients
(Grad-CAM and most others), ShapleyCAM's ``G - H A / 2`` (a Hessian-vector product by double
backward), or the gradients of FinerCAM's contrastive scores (:func:`finer_scores`, extra
columns of the same batched backward pass). Methods that need forward passes of their own
are registered here too, with ``kind="pass"`` (Ablation-CAM, SS-CAM, IS-CAM, Smooth
Grad-CAM++: :mod:`xaikit.explain.cam_passes`, :mod:`xaikit.explain.scorecam`) or
``kind="layerless"`` (FullGrad: :mod:`xaikit.explain.fullgrad`); the engine runs them
(:mod:`xaikit.explain.cam_engine`). Score-CAM itself lives in :mod:`xaikit.explain.scorecam`.
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


def first_component(x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Project ``B`` sets of vectors on their first principal component, batched.

    ``x`` is ``(B, C, P)``: per set, ``P`` vectors (positions) of ``C`` features (channels).
    Each set is centred (the mean vector over positions subtracted, as PCA and
    pytorch-grad-cam's ``get_2d_projection`` do; NaN read as 0) and projected on its first
    right singular vector: ``(B, P)``. A singular vector's sign is arbitrary; the projection
    is oriented to correlate positively with ``reference`` ``(B, P)`` (default: the
    channel sum ``x.sum(1)``, "where the features are strong"), and left as computed where
    that correlation is 0.
    """
    x = torch.nan_to_num(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
    rows = x.transpose(1, 2)  # (B, P, C)
    centred = rows - rows.mean(dim=1, keepdim=True)
    _u, _s, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = torch.bmm(centred, vh[:, :1, :].transpose(1, 2)).squeeze(2)  # (B, P)
    if reference is None:
        reference = x.sum(dim=1)
    sign = torch.sign((projection * reference).sum(dim=1, keepdim=True))
    return projection * torch.where(sign == 0, torch.ones_like(sign), sign)


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
    projection = first_component(_flat(activations, 2)).to(activations.dtype)
    return projection.reshape(n, 1, *spatial).expand(n, num_targets, *spatial)


def eigen_project(contributions: torch.Tensor) -> torch.Tensor:
    """The first principal component of per-channel contributions, per input and target.

    ``(N, K, C, *s) -> (N, K, *s)``: each ``(n, k)`` contribution tensor (whose channel sum
    is the CAM) is projected as in :func:`first_component`, oriented to correlate positively
    with that channel sum. This is pytorch-grad-cam's ``eigen_smooth`` (and, on ``G * A``,
    its Eigen-Grad-CAM), up to the sign, which pytorch-grad-cam leaves to the SVD.
    """
    n, k, c, *spatial = contributions.shape
    flat = contributions.reshape(n * k, c, -1)
    return first_component(flat).to(contributions.dtype).reshape(n, k, *spatial)


def eigengradcam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``): Eigen-CAM (Muhammad & Yeasin,
    2020) on the gradient-weighted activations ``G * A`` instead of ``A``: per input and
    target, the first principal component of the ``(P, C)`` matrix of ``G_c * A_c``,
    oriented to correlate positively with the HiResCAM map ``sum_c G_c * A_c``.
    ``(N, C, *s)``, ``(N, K, C, *s)`` -> ``(N, K, *s)``.
    """
    return eigen_project(gradients * activations.unsqueeze(1))


def elementwise_contributions(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``relu(G * A)`` per channel: ``(N, C, *s)``, ``(N, K, C, *s)`` -> ``(N, K, C, *s)``."""
    return (gradients * activations.unsqueeze(1)).clamp_min(0)


def gradcam_elementwise_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``): ``sum_c relu(G_c *
    A_c)``, the ReLU applied to every channel's contribution before the sum (HiResCAM with
    only the positive products). ``(N, C, *s)``, ``(N, K, C, *s)`` -> ``(N, K, *s)``.
    """
    return elementwise_contributions(activations, gradients).sum(dim=2)


#: KPCA-CAM's offset, that of pytorch-grad-cam's ``KPCA_CAM`` (scikit-learn's
#: ``KernelPCA(kernel="sigmoid", gamma=None, coef0=1)``; the sigmoid kernel is tanh).
KPCA_COEF0 = 1.0


def kernel_first_component(
    x: torch.Tensor, gamma: float | None = None, coef0: float = KPCA_COEF0
) -> torch.Tensor:
    """Kernel PCA's first component, batched: ``(B, P, C)`` rows -> ``(B, P)`` projections.

    As scikit-learn's ``KernelPCA(n_components=1, kernel="sigmoid")``: the kernel matrix
    ``K = tanh(gamma * X X^T + coef0)`` (``gamma = 1 / C`` by default), double-centred
    (``K - 1K - K1 + 1K1``), its top eigenvector ``v`` with eigenvalue ``l`` (negative
    round-off clipped to 0), sign fixed so that the entry of largest magnitude is positive
    (scikit-learn's ``svd_flip``), and the projection ``v * sqrt(l)``.
    """
    x = x.double()
    if gamma is None:
        gamma = 1.0 / x.shape[2]
    kernel = torch.tanh(torch.bmm(x, x.transpose(1, 2)) * gamma + coef0)
    centred = (
        kernel
        - kernel.mean(dim=1, keepdim=True)
        - kernel.mean(dim=2, keepdim=True)
        + kernel.mean(dim=(1, 2), keepdim=True)
    )
    centred = (centred + centred.transpose(1, 2)) / 2
    values, vectors = torch.linalg.eigh(centred)
    top = vectors[:, :, -1]  # (B, P), eigenvalues ascend
    value = values[:, -1].clamp_min(0)
    biggest = top.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(top.gather(1, biggest))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return top * sign * value.sqrt().unsqueeze(1)


def kpcacam_map(
    activations: torch.Tensor, num_targets: int, gamma: float | None = None
) -> torch.Tensor:
    """KPCA-CAM (Karmani et al., 2024): Eigen-CAM with kernel PCA.

    Per input, the ``(P, C)`` activation vectors are centred (as in pytorch-grad-cam's
    ``get_2d_projection_kernel``) and projected on the first kernel principal component
    (:func:`kernel_first_component`, sigmoid kernel, pytorch-grad-cam's defaults). Like
    Eigen-CAM it does not use the target. ``(N, C, *s)`` -> ``(N, K, *s)``.
    """
    n, _c, *spatial = activations.shape
    rows = torch.nan_to_num(_flat(activations, 2).transpose(1, 2))
    rows = rows - rows.mean(dim=1, keepdim=True)
    projection = kernel_first_component(rows, gamma).to(activations.dtype)
    return projection.reshape(n, 1, *spatial).expand(n, num_targets, *spatial)


def shapley_gradients(gradients: torch.Tensor, hvp: torch.Tensor) -> torch.Tensor:
    """ShapleyCAM's effective gradient (Cai, 2024): ``G - H A / 2``.

    ``hvp`` is the Hessian of the score with respect to the layer's activations times the
    activations, ``H A`` (``(N, K, C, *s)``, as ``G``). The channel weights are then Grad-CAM's
    (the mean over positions), as in pytorch-grad-cam's ``ShapleyCAM``: the second-order
    Taylor term of the score makes the weights the channels' Shapley values of a quadratic
    approximation of the score around the activations.
    """
    return gradients - 0.5 * hvp


#: FinerCAM's defaults, those of pytorch-grad-cam's ``FinerCAM``: the classes of ranks 1 to 3
#: by closeness of their score to the target's, compared with strength ``alpha = 1``.
FINER_COMPARISONS = (1, 2, 3)
FINER_ALPHA = 1.0


def finer_scores(
    scores: torch.Tensor,
    logits: torch.Tensor,
    index: torch.Tensor,
    *,
    alpha: float = FINER_ALPHA,
    comparisons: tuple[int, ...] = FINER_COMPARISONS,
) -> torch.Tensor:
    """FinerCAM's explained scores (Zhang et al., 2025), differentiable: ``(N, K)``.

    For target class ``t`` of an input, the comparison classes ``j`` are the classes at the
    ranks ``comparisons`` when all classes are sorted by ``|y_c - y_t|`` (rank 0 is ``t``
    itself), and the score is pytorch-grad-cam's ``FinerWeightedTarget``::

        sum_j p_j * (y_t - alpha * y_j) / (sum_j p_j + 1e-9),   p = softmax(logits)

    with ``y`` the explained scores. Its gradient is a combination of the classes' score
    gradients with the coefficients ``d finer / d y`` (the softmax weights are not
    detached, as in pytorch-grad-cam), so it is one more batched vector-Jacobian product of
    the same backward pass as the targets' own gradients.

    Args:
        scores: ``(N, O)`` explained scores (with their graph).
        logits: ``(N, O)`` the model's raw scores (with their graph), for ``p``.
        index: ``(N, K)`` target classes.
    """
    o = scores.shape[1]
    ranks = [r for r in comparisons if r < o]
    if not ranks:
        return scores.gather(1, index)
    n, k = index.shape
    target = scores.gather(1, index)  # (N, K)
    with torch.no_grad():
        distance = (scores.detach().unsqueeze(1) - target.detach().unsqueeze(2)).abs()
        order = distance.argsort(dim=2, stable=True)  # (N, K, O)
        # Rank 0 is the target itself (distance 0); the comparison ranks follow.
        chosen = order[:, :, ranks]  # (N, K, R)
    prob = torch.softmax(logits, dim=1)
    flat = chosen.reshape(n, -1)
    y_j = scores.gather(1, flat).reshape(n, k, -1)
    p_j = prob.gather(1, flat).reshape(n, k, -1)
    numerator = (p_j * (target.unsqueeze(2) - alpha * y_j)).sum(dim=2)
    return numerator / (p_j.sum(dim=2) + 1e-9)


MapFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``(A (N, C, *s), G (N, K, C, *s) or None, K) -> raw map (N, K, *s)``.
CamFn = Callable[[torch.Tensor, "torch.Tensor | None", int], torch.Tensor]
#: ``(A (N, C, *s), G (N, K, C, *s)) -> per-channel contributions (N, K, C, *s)`` whose
#: channel sum is the map (what ``eigen_smooth`` projects).
ContributionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: What a method's ``map`` reads as ``G``: the targets' score gradients, ShapleyCAM's
#: second-order corrected gradients, or the gradients of FinerCAM's contrastive scores.
GRADIENT_KINDS = ("score", "shapley", "finer")
#: How a method is computed: from the captured ``A`` and ``G`` (``"map"``), by its own
#: forward passes (``"pass"``: Ablation-CAM, SS-CAM, IS-CAM, Smooth Grad-CAM++, see
#: :mod:`xaikit.explain.cam_passes`), or without a target layer (``"layerless"``: FullGrad).
KINDS = ("map", "pass", "layerless")


@dataclass(frozen=True)
class CamMethod:
    """A registered CAM method.

    Attributes:
        name: the ``method=`` name.
        paper: the reference it implements.
        map: ``(A (N, C, *s), G (N, K, C, *s) or None, K) -> raw map (N, K, *s)``.
        needs_gradients: whether ``map`` reads ``G`` (else no backward pass is needed).
        contributions: ``(A, G) -> (N, K, C, *s)``, the per-channel terms whose sum is the
            map; ``eigen_smooth=True`` projects them on their first principal component.
            ``None``: the method ignores ``eigen_smooth`` (it is a projection already).
        gradient: which gradients ``map`` reads as ``G`` (:data:`GRADIENT_KINDS`).
        kind: :data:`KINDS`; ``"pass"`` and ``"layerless"`` methods are run by the engine
            (``map`` is not used).
        family: the catalogue family (``"cam"``, ``"cam-free"``, ``"cam-perturbation"``).
        options: the extra ``explain(...)`` options the method takes.
        uses_layer: whether the method explains a target layer.
    """

    name: str
    paper: str
    map: CamFn
    needs_gradients: bool = True
    contributions: ContributionFn | None = None
    gradient: str = "score"
    kind: str = "map"
    family: str | None = None
    options: tuple[str, ...] = ()
    uses_layer: bool = True


def _needs(gradients: torch.Tensor | None) -> torch.Tensor:
    if gradients is None:
        raise ValueError("this CAM method needs the gradients of the explained scores")
    return gradients


def _from_weights(weights: MapFn) -> CamFn:
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None, _k: int) -> torch.Tensor:
        return weighted_sum(activations, weights(activations, _needs(gradients)))

    return cam


def _weighted_contributions(weights: MapFn) -> ContributionFn:
    def contributions(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        w = weights(activations, gradients)  # (N, K, C)
        view = (*w.shape, *(1,) * (activations.dim() - 2))
        return w.reshape(view).to(activations.dtype) * activations.unsqueeze(1)

    return contributions


def _from_map(fn: MapFn) -> CamFn:
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None, _k: int) -> torch.Tensor:
        return fn(activations, _needs(gradients))

    return cam


def _engine_run(*_args: object) -> torch.Tensor:
    raise ValueError("this CAM method runs its own passes: call it through xaikit.explain")


def _layercam_contributions(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    return gradients.clamp_min(0) * activations.unsqueeze(1)


def _hirescam_contributions(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    return gradients * activations.unsqueeze(1)


#: Options of the methods that run their own passes (see :mod:`xaikit.explain.cam_passes`).
ABLATION_OPTIONS = ("batch_size",)
SSCAM_OPTIONS = ("batch_size", "num_samples", "std")
ISCAM_OPTIONS = ("batch_size", "num_samples")
SMOOTH_GRADCAM_PP_OPTIONS = ("num_samples", "std", "variant")

CAM_METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (
        CamMethod(
            "gradcam",
            "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via "
            "Gradient-based Localization, ICCV 2017",
            _from_weights(gradcam_weights),
            contributions=_weighted_contributions(gradcam_weights),
        ),
        CamMethod(
            "gradcam++",
            "Chattopadhyay et al., Grad-CAM++: Generalized Gradient-based Visual Explanations "
            "for Deep Convolutional Networks, WACV 2018",
            _from_weights(gradcam_pp_weights),
            contributions=_weighted_contributions(gradcam_pp_weights),
        ),
        CamMethod(
            "xgradcam",
            "Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation "
            "of CNNs, BMVC 2020",
            _from_weights(xgradcam_weights),
            contributions=_weighted_contributions(xgradcam_weights),
        ),
        CamMethod(
            "layercam",
            "Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for "
            "Localization, IEEE TIP 2021",
            _from_map(layercam_map),
            contributions=_layercam_contributions,
        ),
        CamMethod(
            "hirescam",
            "Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of "
            "convolutional neural networks, arXiv:2011.08891, 2020",
            _from_map(hirescam_map),
            contributions=_hirescam_contributions,
        ),
        CamMethod(
            "eigencam",
            "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, "
            "IJCNN 2020",
            lambda a, _g, k: eigencam_map(a, k),
            needs_gradients=False,
        ),
        CamMethod(
            "eigengradcam",
            "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, "
            "IJCNN 2020, on gradient x activation (pytorch-grad-cam's EigenGradCAM, "
            "Gildenblat et al., 2021)",
            _from_map(eigengradcam_map),
        ),
        CamMethod(
            "gradcam-elementwise",
            "Selvaraju et al., Grad-CAM, ICCV 2017, with the ReLU on each channel's "
            "gradient x activation before the sum (pytorch-grad-cam's GradCAMElementWise, "
            "Gildenblat et al., 2021)",
            _from_map(gradcam_elementwise_map),
            contributions=elementwise_contributions,
        ),
        CamMethod(
            "kpcacam",
            "Karmani et al., KPCA-CAM: Visual Explainability of Deep Computer Vision Models "
            "using Kernel PCA, IEEE MMSP 2024 (arXiv:2410.00267)",
            lambda a, _g, k: kpcacam_map(a, k),
            needs_gradients=False,
        ),
        CamMethod(
            "shapleycam",
            "Cai, CAMs as Shapley Value-based Explainers, arXiv:2501.06261, 2025 "
            "(ShapleyCAM: gradient and Hessian-vector product)",
            _from_weights(gradcam_weights),
            contributions=_weighted_contributions(gradcam_weights),
            gradient="shapley",
        ),
        CamMethod(
            "finercam",
            "Zhang et al., Finer-CAM: Spotting the Difference Reveals Finer Details for "
            "Visual Explanation, CVPR 2025",
            _from_weights(gradcam_weights),
            contributions=_weighted_contributions(gradcam_weights),
            gradient="finer",
            options=("alpha", "comparisons"),
        ),
        CamMethod(
            "ablationcam",
            "Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional "
            "Network via Gradient-free Localization, WACV 2020",
            _engine_run,
            needs_gradients=False,
            kind="pass",
            family="cam-perturbation",
            options=ABLATION_OPTIONS,
        ),
        CamMethod(
            "sscam",
            "Wang et al., SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization, "
            "arXiv:2006.14255, 2020",
            _engine_run,
            needs_gradients=False,
            kind="pass",
            family="cam-perturbation",
            options=SSCAM_OPTIONS,
        ),
        CamMethod(
            "iscam",
            "Naidu et al., IS-CAM: Integrated Score-CAM for axiomatic-based explanations, "
            "arXiv:2010.03023, 2020",
            _engine_run,
            needs_gradients=False,
            kind="pass",
            family="cam-perturbation",
            options=ISCAM_OPTIONS,
        ),
        CamMethod(
            "smoothgradcam++",
            "Omeiza et al., Smooth Grad-CAM++: An Enhanced Inference Level Visualization "
            "Technique for Deep Convolutional Neural Network Models, arXiv:1908.01224, 2019",
            _engine_run,
            needs_gradients=False,
            kind="pass",
            family="cam",
            options=SMOOTH_GRADCAM_PP_OPTIONS,
        ),
        CamMethod(
            "fullgrad",
            "Srinivas & Fleuret, Full-Gradient Representation for Neural Network "
            "Visualization, NeurIPS 2019",
            _engine_run,
            needs_gradients=False,
            kind="layerless",
            family="cam",
            uses_layer=False,
        ),
    )
}


def register_cam_method(method: CamMethod) -> None:
    """Add a CAM method to :data:`CAM_METHODS`, so ``explain(method=method.name)`` runs it
    on the shared activations and gradients. The name must be new."""
    if method.name in CAM_METHODS:
        raise XaikitConfigError(f"a CAM method named {method.name!r} is already registered")
    if method.gradient not in GRADIENT_KINDS or method.kind != "map":
        raise XaikitConfigError(
            f"a registered CAM method computes a map from A and G (kind='map', gradient in "
            f"{', '.join(GRADIENT_KINDS)}); got kind={method.kind!r}, "
            f"gradient={method.gradient!r}"
        )
    CAM_METHODS[method.name] = method
