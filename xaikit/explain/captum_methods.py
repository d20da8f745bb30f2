"""captum's other input attributions: DeepLift, the SHAP estimators, deconvolution, and the
perturbation methods on superpixels.

Every method has the signature of :mod:`xaikit.explain.gradients`::

    fn(forward, inputs, targets, *, seed=None, **opts) -> (N, K, *S)

and returns raw, signed maps with the input channels reduced by the rule below
(``channel_reduce=`` overrides it; ``"none"`` keeps ``(N, K, C, *S)``):

==================== =========================== =============================================
method               captum class, paper         channel rule (default ``channel_reduce``)
==================== =========================== =============================================
``deeplift``         ``DeepLift`` (rescale rule) ``sum``: summation-to-delta,
                     Shrikumar et al., 2017      ``sum(attr) = f(x) - f(baseline)`` (*)
``deepliftshap``     ``DeepLiftShap``            ``sum``: the mean of DeepLift over the
                     Lundberg & Lee, 2017        baselines, ``sum(attr) = f(x) - mean_b f(b)``
                                                 (*)
``gradientshap``     ``GradientShap``            ``sum``: ``sum(attr) ~ f(x) - E_b f(b)`` in
                     Lundberg & Lee, 2017        expectation (a sampled path integral)
``deconvolution``    ``Deconvolution``           ``sum``: signed, as guided backprop
                     Zeiler & Fergus, 2014
``feature-ablation`` ``FeatureAblation``         ``mean``: a superpixel spans every channel, so
                                                 each channel carries the segment's score drop
                                                 ``f(x) - f(x with the segment = baseline)``
``lime``             ``Lime``                    ``mean``: each channel carries the segment's
                     Ribeiro et al., 2016        surrogate coefficient
``kernelshap``       ``KernelShap``              ``mean``: each channel carries the segment's
                     Lundberg & Lee, 2017        Shapley estimate
==================== =========================== =============================================

(*) Exact for networks of ReLUs (and the other element-wise non-linearities) without max
pooling. captum's max-pool rule (the cross maximum of input and reference) does not keep the
sum: on ``shapes-multiclass`` captum's own convergence delta is 0.2% of ``f(x) - f(0)`` from a
black baseline, and as large as the difference itself from random-uniform references.

**Model hooks.** DeepLift, DeepLift-SHAP and deconvolution replace the backward pass of the
model's non-linear *modules*, so they need the ``nn.Module``: a function taking ``model=``
receives it from :func:`xaikit.explain` (``adapter.model``, next to the usual ``forward``);
called directly, ``forward`` may be the model itself. captum is given a wrapper module whose
``forward`` is the explained ``forward`` and whose only child is the model, so its hooks land
on the model's own ReLUs. The model is borrowed (:func:`~xaikit.explain.state.borrowed`) and
every hook and attribute captum adds is removed afterwards, exception or not.

captum cannot see a non-linearity computed as a function call (``F.relu(x)`` in
``forward()``, a ``torch.sigmoid``, a LayerNorm, attention's softmax, ``score="prob"``): it
would backpropagate it by its plain gradient and return a silently wrong map. Before
attributing, one forward pass of the first input is watched (:class:`_Watch`) and the model
is refused with :class:`~xaikit.errors.XaikitConfigError` when

* DeepLift / DeepLift-SHAP: a non-linear function from :data:`NONLINEAR_FUNCTIONS` runs
  outside one of captum's supported modules (``nn.ReLU``, ``nn.ELU``, ``nn.LeakyReLU``,
  ``nn.Sigmoid``, ``nn.Tanh``, ``nn.Softplus``, ``nn.MaxPool1/2/3d``, ``nn.Softmax``) - this
  covers unsupported modules too (``nn.GELU``, ``nn.ReLU6``, ``nn.SiLU``...), which compute
  through those functions - or a supported module runs more than once per forward pass.
  captum keeps one input/output per module: on a reused module (torchvision's ResNet calls
  each block's ``nn.ReLU`` twice) captum raises ``RuntimeError("A Module ReLU(inplace=True)
  was detected that does not contain some of the input/output attributes ... used more than
  once")`` and leaves those attributes behind; xaikit refuses up front instead.
* deconvolution: a ReLU runs as a function outside an ``nn.ReLU`` module. A reused
  ``nn.ReLU`` is fine here (the rule needs no stored activations; on torchvision's ResNet-18
  captum's map equals the rule applied to every call exactly).

Other non-linear operations (products of activations, gating) are not detected.

**Superpixels** (``feature-ablation``, ``lime``, ``kernelshap``): ``segments=`` is a count
(default 64) for ``segmentation="grid"`` (default; a regular grid, see :func:`grid_segments`)
or ``"slic"`` (a small SLIC in torch, see :func:`slic_segments`), or a user label tensor
``(N, *S)`` or ``(*S)`` (integers >= 0). Labels are renumbered ``0..n-1`` per input and
passed to captum as ``feature_mask`` ``(1 or N, 1, *S)``, the same segment over every
channel.

**Seeding.** ``gradientshap``, ``lime`` and ``kernelshap`` draw from captum's global RNGs
(torch and numpy); each ``(input i, target k)`` call runs under a private seed,
:func:`~xaikit.explain.gradients.noise_seed` ``(seed, first_index + i)``, with the global
generators saved and restored (:func:`seeded_rngs`): the same seed gives the same map, every
target of an input sees the same samples (K targets in one call equal K single calls), and
the caller's RNG state is untouched. The baseline noise of ``deepliftshap`` /
``gradientshap`` is drawn from a private generator with the same per-input seed.
``seed=None`` means :data:`DEFAULT_SEED`, so maps are reproducible unless asked otherwise.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression
from captum.attr import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    KernelShap,
    Lime,
)
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from xaikit.errors import XaikitConfigError
from xaikit.explain.gradients import (
    _COMMON,
    GRADIENT_METHODS,
    Baseline,
    Forward,
    Normalization,
    _checked,
    _lent,
    _positive_batch,
    _prepare,
    _reject_unknown,
    make_baseline,
    noise_seed,
    reduce_channels,
    seeded_global_rng,
)
from xaikit.explain.replay import ReplayedForward
from xaikit.explain.state import borrowed

#: The seed of the stochastic methods when ``seed=None``.
DEFAULT_SEED = 0
#: Superpixels per input when ``segments`` is not given.
DEFAULT_SEGMENTS = 64
SEGMENTATIONS = ("grid", "slic")
#: SLIC's weight of the spatial distance against colours scaled to [0, 1] (skimage's default
#: compactness 10 on CIELAB's 0-100 range), and its k-means iterations.
SLIC_COMPACTNESS = 0.1
SLIC_ITERATIONS = 10

#: Functions (by name, leading/trailing underscores and ``_with_indices`` stripped) that are
#: non-linear: run outside captum's supported modules, DeepLift would pass them by gradient.
NONLINEAR_FUNCTIONS = frozenset(
    {
        "relu", "relu6", "hardtanh", "elu", "selu", "celu", "leaky_relu", "rrelu", "prelu",
        "gelu", "silu", "mish", "hardswish", "hardsigmoid", "hardshrink", "softshrink",
        "tanhshrink", "softplus", "softsign", "logsigmoid", "sigmoid", "tanh", "softmax",
        "softmin", "log_softmax", "glu", "threshold", "max_pool1d", "max_pool2d", "max_pool3d",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
        "fractional_max_pool2d", "fractional_max_pool3d", "lp_pool1d", "lp_pool2d",
        "layer_norm", "group_norm", "instance_norm", "rms_norm", "local_response_norm",
        "normalize", "clamp", "clamp_min", "clamp_max", "clip", "maximum", "minimum", "amax",
        "amin", "max", "min", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "erf",
        "scaled_dot_product_attention",
    }
)  # fmt: skip
_RELU_FUNCTIONS = frozenset({"relu", "threshold"})
_DEEPLIFT_MODULES: tuple[type[nn.Module], ...] = tuple(SUPPORTED_NON_LINEAR)
_CAPTUM_ATTRIBUTES = ("input", "output", "input_ref")
_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
_CAPTUM_WARNINGS = (
    r"Setting forward, backward hooks",
    r"Setting backward hooks on ReLU",
)


# --------------------------------------------------------------------------- superpixels


def grid_segments(size: Sequence[int], n_segments: int = DEFAULT_SEGMENTS) -> Tensor:
    """A regular grid of about ``n_segments`` cells over a ``size`` = ``(*S)`` map.

    Dimension ``d`` of ``D`` is cut into ``c_d = round((n * S_d^D / prod S)^(1/D))`` equal
    bands (clamped to ``1..S_d``): the cells are as square as the map allows and there are
    ``prod c_d ~ n_segments`` of them (64 on 64 x 64 pixels: 8 x 8 cells of 8 x 8). Position
    ``p`` gets cell ``floor(p_d * c_d / S_d)`` per dimension, numbered row-major ``0..n-1``.
    Returns ``(*S)`` long labels.
    """
    size = tuple(int(s) for s in size)
    dims = len(size)
    total = math.prod(size)
    counts = [min(s, max(1, round((n_segments * s**dims / total) ** (1 / dims)))) for s in size]
    label = torch.zeros(size, dtype=torch.long)
    for d, (s, c) in enumerate(zip(size, counts)):
        band = torch.arange(s) * c // s
        shape = [1] * dims
        shape[d] = s
        label = label * c + band.reshape(shape)
    return label


def slic_segments(
    images: Tensor,
    n_segments: int = DEFAULT_SEGMENTS,
    *,
    compactness: float = SLIC_COMPACTNESS,
    iterations: int = SLIC_ITERATIONS,
) -> Tensor:
    """Simple SLIC superpixels (Achanta et al., 2012) of ``(N, C, H, W)`` images: ``(N, H, W)``.

    k-means on (colour, position), started on :func:`grid_segments`' cell means, ``iterations``
    rounds. Colours are each image's values scaled to ``[0, 1]`` by its min and max; the
    distance is ``|c_p - c_k|^2 + (compactness * |p - p_k| / S)^2`` with ``S`` the grid step,
    and a pixel only joins centres within ``2 S`` along each axis. Deterministic (no random
    start, ties go to the lower label). Unlike SLIC proper there is no connectivity
    post-processing: a superpixel may come in pieces. Labels are renumbered ``0..n-1``.
    """
    _, c, h, w = images.shape
    grid = grid_segments((h, w), n_segments).to(images.device).flatten()
    cells = int(grid.max()) + 1
    step = math.sqrt(h * w / cells)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=images.device, dtype=images.dtype),
        torch.arange(w, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    position = torch.stack([ys.flatten(), xs.flatten()], dim=1)  # (P, 2)
    out = []
    for image in images.detach():
        flat = image.flatten(1).T  # (P, C)
        low, high = flat.min(), flat.max()
        colour = (flat - low) / (high - low) if high > low else torch.zeros_like(flat)
        labels = grid
        centre_c = torch.zeros(cells, c, dtype=images.dtype, device=images.device)
        centre_p = torch.zeros(cells, 2, dtype=images.dtype, device=images.device)
        for _ in range(iterations + 1):
            count = torch.bincount(labels, minlength=cells).to(images.dtype)
            present = count > 0
            sums_c = torch.zeros_like(centre_c).index_add_(0, labels, colour)
            sums_p = torch.zeros_like(centre_p).index_add_(0, labels, position)
            centre_c = torch.where(present[:, None], sums_c / count.clamp_min(1)[:, None], centre_c)
            centre_p = torch.where(present[:, None], sums_p / count.clamp_min(1)[:, None], centre_p)
            offset = position[:, None, :] - centre_p[None]  # (P, cells, 2)
            distance = (
                torch.cdist(colour, centre_c) ** 2 + (compactness * offset.norm(dim=2) / step) ** 2
            )
            far = (offset.abs() > 2 * step).any(dim=2) | ~present[None]
            labels = distance.masked_fill(far, math.inf).argmin(dim=1)
        out.append(torch.unique(labels, return_inverse=True)[1].reshape(h, w))
    return torch.stack(out)


def superpixels(
    inputs: Tensor,
    segments: int | Tensor = DEFAULT_SEGMENTS,
    segmentation: str = "grid",
) -> Tensor:
    """The superpixels of ``(N, C, *S)`` inputs: ``(N, *S)`` long labels ``0..n_i - 1``.

    ``segments``: a count, segmented by ``segmentation`` (``"grid"``: :func:`grid_segments`,
    the same cells for every input; ``"slic"``: :func:`slic_segments`, images only), or a
    label tensor ``(N, *S)`` / ``(*S)`` of integers >= 0, renumbered ``0..n_i - 1`` per input
    in label order.
    """
    n, size = inputs.shape[0], tuple(inputs.shape[2:])
    if isinstance(segments, Tensor):
        labels = segments.detach().to(inputs.device)
        if tuple(labels.shape) == size:
            labels = labels.unsqueeze(0).expand(n, *size)
        if tuple(labels.shape) != (n, *size):
            raise XaikitConfigError(
                f"segments must be a label tensor shaped (N, *S) = {(n, *size)} or (*S) = "
                f"{size} for inputs {tuple(inputs.shape)}, got {tuple(segments.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise XaikitConfigError(
                f"segments must hold integer superpixel labels, got dtype {segments.dtype}"
            )
        if labels.numel() and int(labels.min()) < 0:
            raise XaikitConfigError(f"segment labels must be >= 0, got {int(labels.min())}")
        return torch.stack([torch.unique(row, return_inverse=True)[1] for row in labels])
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise XaikitConfigError(
            f"segments must be a positive number of superpixels or a label tensor shaped "
            f"(N, *S) = {(n, *size)}, got {segments!r}"
        )
    if segmentation == "grid":
        return grid_segments(size, segments).to(inputs.device).unsqueeze(0).expand(n, *size)
    if segmentation == "slic":
        if inputs.dim() != 4:
            raise XaikitConfigError(
                f"segmentation='slic' needs images (N, C, H, W), got {tuple(inputs.shape)}; "
                "use segmentation='grid'"
            )
        return slic_segments(inputs, segments)
    raise XaikitConfigError(
        f"unknown segmentation {segmentation!r}; choose one of {', '.join(SEGMENTATIONS)}"
    )


def _shared(labels: Tensor) -> bool:
    return bool((labels == labels[:1]).all())


# --------------------------------------------------------------------------- captum plumbing


def _seed(seed: int | None) -> int:
    return DEFAULT_SEED if seed is None else int(seed)


@contextlib.contextmanager
def seeded_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global CPU generator (and ``device``'s) and numpy's global RNG for a block
    of captum code; every state is restored on exit."""
    state = np.random.get_state()
    try:
        np.random.seed(seed % (1 << 32))
        with seeded_global_rng(seed, torch.device("cpu")):
            if device.type == "cpu":
                yield
            else:
                with seeded_global_rng(seed, device):
                    yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def _quiet_captum() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _CAPTUM_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


class _Forward(nn.Module):
    """What captum hooks: ``forward`` is the explained function, ``model`` the only child."""

    def __init__(self, model: nn.Module, forward: Forward) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_call", forward)  # not a child, even when a module

    def forward(self, x: Tensor) -> Tensor:
        return self._call(x)


def _model_of(method: str, forward: Forward, model: nn.Module | None) -> nn.Module:
    if model is None and isinstance(forward, nn.Module):
        return forward
    if not isinstance(model, nn.Module):
        raise XaikitConfigError(
            f"{method} hooks the model's non-linear modules, so it needs the nn.Module: pass "
            "model=<the model> (xaikit.explain does), or the model itself as forward"
        )
    return model


@contextlib.contextmanager
def _hooked(model: nn.Module) -> Iterator[None]:
    """Borrow ``model`` for captum's hooks; remove every hook and attribute added meanwhile."""
    saved = [
        (
            module,
            {name: set(getattr(module, name, {})) for name in _HOOK_TABLES},
            {a for a in _CAPTUM_ATTRIBUTES if a in module.__dict__},
        )
        for module in model.modules()
    ]
    try:
        with borrowed(model), _quiet_captum():
            yield
    finally:
        for module, tables, attributes in saved:
            for name, keys in tables.items():
                table = getattr(module, name, None)
                for key in [k for k in (table or {}) if k not in keys]:
                    del table[key]
            for attribute in _CAPTUM_ATTRIBUTES:
                if attribute not in attributes and attribute in module.__dict__:
                    delattr(module, attribute)


def _function_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", "").strip("_")
    return name.removesuffix("_with_indices")


class _Watch(TorchFunctionMode):
    """Records the non-linear functions called while no supported module is running."""

    def __init__(self, functions: frozenset[str]) -> None:
        super().__init__()
        self.functions = functions
        self.depth = 0  # supported modules running
        self.in_model = 0
        self.inside: list[str] = []
        self.outside: list[str] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if self.depth == 0:
            name = _function_name(func)
            if name in self.functions:
                (self.inside if self.in_model else self.outside).append(name)
        return func(*args, **(kwargs or {}))


def _check_hookable(
    method: str,
    wrapper: _Forward,
    model: nn.Module,
    sample: Tensor,
    modules: tuple[type[nn.Module], ...],
    functions: frozenset[str],
    reuse: bool,
) -> None:
    """Refuse a model whose attribution captum would compute wrongly (see the module doc)."""
    watch = _Watch(functions)
    calls: Counter[nn.Module] = Counter()

    def enter(module: nn.Module, args: Any) -> None:
        watch.depth += 1
        calls[module] += 1

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        watch.depth -= 1

    def enter_model(module: nn.Module, args: Any) -> None:
        watch.in_model += 1

    def leave_model(module: nn.Module, args: Any, output: Any) -> None:
        watch.in_model -= 1

    handles = [
        model.register_forward_pre_hook(enter_model),
        model.register_forward_hook(leave_model),
    ]
    for module in model.modules():
        if type(module) in modules:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad(), watch:
            wrapper(sample)
    finally:
        for handle in handles:
            handle.remove()
    supported = ", ".join(sorted({f"nn.{m.__name__}" for m in modules}))
    if watch.inside or watch.outside:
        found = ", ".join(sorted(set(watch.inside + watch.outside)))
        where = (
            " in the model's forward (e.g. F.relu(x) rather than an nn.ReLU module, or a "
            "module captum does not support, such as nn.GELU, nn.ReLU6, nn.SiLU, LayerNorm)"
            if watch.inside
            else ""
        )
        score = (
            "; score='prob' applies the task's softmax/sigmoid as a function: explain the "
            "logits (score='logit')"
            if watch.outside
            else ""
        )
        raise XaikitConfigError(
            f"{method} cannot explain this model correctly: captum applies its rule only to "
            f"the non-linear modules {supported}, and the explained forward computes "
            f"{found} as function calls{where}{score}; captum would pass them through by "
            "their plain gradient and return a wrong map. Use those modules, or another "
            "method (ig, gradientshap, saliency)"
        )
    reused = {module: count for module, count in calls.items() if count > 1}
    if reuse and reused:
        names = {module: name for name, module in model.named_modules(remove_duplicate=False)}
        listed = ", ".join(
            f"{names.get(m, type(m).__name__)!r} ({type(m).__name__}, {c} calls)"
            for m, c in list(reused.items())[:3]
        )
        raise XaikitConfigError(
            f"{method} needs every non-linear module to run once per forward pass, but "
            f"{listed}{' ...' if len(reused) > 3 else ''} run several times (torchvision's "
            "ResNet calls each block's nn.ReLU twice). captum keeps one input/output per "
            "module and fails on reuse ('A Module ... is being used more than once'); give "
            "each call its own module, or use another method (ig, gradientshap, "
            "deconvolution)"
        )


def _baseline_distribution(
    method: str,
    x: Tensor,
    baseline: Baseline,
    baselines: int | Tensor,
    baseline_stdev: float,
    seed: int,
    first_index: int,
    normalization: Normalization | None,
    blur_sigma: float | None,
    minimum: int,
) -> tuple[Tensor, bool]:
    """``(N, B, C, *S)`` baselines per input, and whether every input has the same ones."""
    n = x.shape[0]
    if isinstance(baselines, Tensor):
        given = baselines.detach().to(device=x.device, dtype=x.dtype)
        if given.dim() == x.dim() - 1:
            given = given.unsqueeze(0)
        if given.dim() != x.dim() or given.shape[1:] != x.shape[1:] or given.shape[0] < minimum:
            raise XaikitConfigError(
                f"{method} baselines must be a count or a tensor of at least {minimum} "
                f"baseline(s) shaped (B, C, *S) = (B, {', '.join(map(str, x.shape[1:]))}), got "
                f"{tuple(baselines.shape)}"
            )
        return given.unsqueeze(0).expand(n, *given.shape), True
    if isinstance(baselines, bool) or not isinstance(baselines, int) or baselines < minimum:
        raise XaikitConfigError(
            f"{method} baselines must be an integer >= {minimum} (samples of the baseline "
            f"plus noise) or a tensor (B, C, *S), got {baselines!r}"
            + ("; with a single baseline use deeplift" if minimum > 1 else "")
        )
    if not float(baseline_stdev) >= 0:
        raise XaikitConfigError(f"{method} baseline_stdev must be >= 0, got {baseline_stdev!r}")
    base = make_baseline(x, baseline, normalization=normalization, blur_sigma=blur_sigma)
    if float(baseline_stdev) == 0:
        dist = base.unsqueeze(1).expand(n, baselines, *x.shape[1:])
        return dist, bool((base == base[:1]).all())
    flat = x.flatten(start_dim=1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    span = torch.where(span > 0, span, torch.ones_like(span)).reshape(-1, *[1] * x.dim())
    noise = torch.stack(
        [
            torch.randn(
                (baselines, *x.shape[1:]),
                generator=torch.Generator().manual_seed(noise_seed(seed, first_index + i)),
                dtype=x.dtype,
            )
            for i in range(n)
        ]
    ).to(x.device)
    return base.unsqueeze(1) + float(baseline_stdev) * span * noise, False


# --------------------------------------------------------------------------- DeepLift family


def deeplift(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    model: nn.Module | None = None,
    baseline: Baseline = "black",
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "sum",
    **unknown: Any,
) -> Tensor:
    """DeepLift with the rescale rule: ``(N, C, *S) -> (N, K, *S)``.

    Shrikumar, Greenside & Kundaje, 2017, "Learning Important Features Through Propagating
    Activation Differences", via captum's :class:`~captum.attr.DeepLift`
    (``multiply_by_inputs=True``): ``(x - x') * m`` where every supported non-linearity
    passes back ``grad * delta_out / delta_in`` instead of its gradient; the channel sum
    gives ``sum(attr) = f(x) - f(x')`` (summation-to-delta; exact without max pooling, see
    the module docstring). ``baseline``: the reference
    ``x'``, see :func:`~xaikit.explain.gradients.make_baseline`. ``model``: the
    ``nn.Module`` whose modules captum hooks (``forward`` when it is one). Models captum
    would get wrong are refused (see the module docstring). ``internal_batch_size``: rows
    (input x target) per pass, each run with its baseline (default 256). ``seed`` is unused.
    """
    accepted = (*_COMMON, "model", "baseline", "blur_sigma")
    _reject_unknown("deeplift", unknown, accepted)
    x, t = _prepare(inputs, targets)
    n, k = t.shape
    module = _model_of("deeplift", forward, model)
    base = make_baseline(x, baseline, normalization=normalization, blur_sigma=blur_sigma)
    block = max(1, _positive_batch(internal_batch_size) // 2)
    rows_x, rows_base = x.repeat_interleave(k, dim=0), base.repeat_interleave(k, dim=0)
    rows_t = t.reshape(-1)
    with _hooked(module):
        wrapper = _Forward(module, _checked(forward, t))
        _check_hookable(
            "deeplift", wrapper, module, x[:1], _DEEPLIFT_MODULES, NONLINEAR_FUNCTIONS, True
        )
        explainer = DeepLift(wrapper, multiply_by_inputs=True)
        parts = [
            explainer.attribute(
                rows_x[start : start + block].clone().requires_grad_(True),
                baselines=rows_base[start : start + block],
                target=rows_t[start : start + block],
            )
            for start in range(0, n * k, block)
        ]
    attr = parts[0] if len(parts) == 1 else torch.cat(parts)
    return reduce_channels(attr.reshape(n, k, *x.shape[1:]).detach(), channel_reduce)


def deepliftshap(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    model: nn.Module | None = None,
    baseline: Baseline = "black",
    baselines: int | Tensor = 8,
    baseline_stdev: float = 0.1,
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "sum",
    first_index: int = 0,
    **unknown: Any,
) -> Tensor:
    """DeepLift-SHAP: DeepLift averaged over a distribution of baselines, ``-> (N, K, *S)``.

    Lundberg & Lee, 2017, "A Unified Approach to Interpreting Model Predictions", via
    captum's :class:`~captum.attr.DeepLiftShap`: the mean over baselines ``b`` of DeepLift's
    attribution from ``b``; the channel sum gives ``f(x) - mean_b f(b)``.

    The distribution of input ``i``: ``baselines`` (default 8) copies of its
    :func:`~xaikit.explain.gradients.make_baseline` ``(baseline)`` plus Gaussian noise of
    standard deviation ``baseline_stdev`` (default 0.1) times the input's range
    ``max x - min x``, drawn from a private generator seeded by ``noise_seed(seed,
    first_index + i)`` (``seed=None``: :data:`DEFAULT_SEED`). ``baselines`` may instead be a
    tensor ``(B, C, *S)`` (B >= 2, e.g. training images) used as given for every input.
    Inputs with their own distribution take one captum call each (captum shares one
    distribution over its batch). Model requirements as :func:`deeplift`.
    """
    accepted = (*_COMMON, "model", "baseline", "baselines", "baseline_stdev", "blur_sigma")
    _reject_unknown("deepliftshap", unknown, accepted)
    x, t = _prepare(inputs, targets)
    n, k = t.shape
    module = _model_of("deepliftshap", forward, model)
    dist, shared = _baseline_distribution(
        "deepliftshap", x, baseline, baselines, baseline_stdev, _seed(seed), first_index,
        normalization, blur_sigma, minimum=2,
    )  # fmt: skip
    count = dist.shape[1]
    block = max(1, _positive_batch(internal_batch_size) // (2 * count))
    out = x.new_empty((n, k, *x.shape[1:]))
    with _hooked(module):
        wrapper = _Forward(module, _checked(forward, t))
        _check_hookable(
            "deepliftshap", wrapper, module, x[:1], _DEEPLIFT_MODULES, NONLINEAR_FUNCTIONS, True
        )
        explainer = DeepLiftShap(wrapper, multiply_by_inputs=True)
        groups = [(0, n)] if shared else [(i, i + 1) for i in range(n)]
        for first, stop in groups:
            rows_x = x[first:stop].repeat_interleave(k, dim=0)
            rows_t = t[first:stop].reshape(-1)
            parts = [
                explainer.attribute(
                    rows_x[start : start + block],
                    baselines=dist[first],
                    target=rows_t[start : start + block],
                )
                for start in range(0, rows_x.shape[0], block)
            ]
            attr = parts[0] if len(parts) == 1 else torch.cat(parts)
            out[first:stop] = attr.reshape(stop - first, k, *x.shape[1:])
    return reduce_channels(out.detach(), channel_reduce)


def deconvolution(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    model: nn.Module | None = None,
    normalization: Normalization | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "sum",
    **unknown: Any,
) -> Tensor:
    """Deconvolution (deconvnet): ``(N, C, *S) -> (N, K, *S)``.

    Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional Networks", via
    captum's :class:`~captum.attr.Deconvolution`: the input gradient where every ReLU passes
    back ``max(R_out, 0)`` whatever its input (guided backprop also masks by ``x > 0``).
    Needs ``nn.ReLU`` modules (reused ones are fine); a functional ReLU is refused (see the
    module docstring). ``internal_batch_size``: rows (input x target) per pass.
    ``seed`` and ``normalization`` are unused.
    """
    _reject_unknown("deconvolution", unknown, (*_COMMON, "model"))
    x, t = _prepare(inputs, targets)
    n, k = t.shape
    module = _model_of("deconvolution", forward, model)
    block = _positive_batch(internal_batch_size)
    rows_x, rows_t = x.repeat_interleave(k, dim=0), t.reshape(-1)
    with _hooked(module):
        wrapper = _Forward(module, _checked(forward, t))
        _check_hookable("deconvolution", wrapper, module, x[:1], (nn.ReLU,), _RELU_FUNCTIONS, False)
        explainer = Deconvolution(wrapper)
        parts = [
            explainer.attribute(
                rows_x[start : start + block].clone().requires_grad_(True),
                target=rows_t[start : start + block],
            )
            for start in range(0, n * k, block)
        ]
    attr = parts[0] if len(parts) == 1 else torch.cat(parts)
    return reduce_channels(attr.reshape(n, k, *x.shape[1:]).detach(), channel_reduce)


# --------------------------------------------------------------------------- sampled methods


def gradientshap(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    n_samples: int = 20,
    stdevs: float = 0.0,
    baseline: Baseline = "black",
    baselines: int | Tensor = 8,
    baseline_stdev: float = 0.1,
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "sum",
    first_index: int = 0,
    **unknown: Any,
) -> Tensor:
    """GradientSHAP: expected gradients on random points between baselines and the input.

    Lundberg & Lee, 2017, via captum's :class:`~captum.attr.GradientShap`: ``n_samples``
    (default 20) draws of a baseline ``b`` from the distribution, ``a ~ U(0, 1)`` and the
    input plus Gaussian noise of standard deviation ``stdevs`` (captum's, in the model's input
    space; default 0), averaging ``(x - b) * dS(b + a (x + e - b)) / dx``; the channel sum
    approximates ``f(x) - E_b f(b)``. The baseline distribution (``baseline``,
    ``baselines``, ``baseline_stdev``) is :func:`deepliftshap`'s (here ``baselines=1`` with
    ``baseline_stdev=0`` is integrated gradients with random points).

    captum draws from the global torch and numpy RNGs: each ``(input i, target k)`` runs
    under :func:`seeded_rngs` ``(noise_seed(seed, first_index + i))``, so the targets of an
    input share their samples and the caller's RNG is untouched. ``internal_batch_size`` is
    unused (captum runs the ``n_samples`` rows of a call together); ``-> (N, K, *S)``.
    """
    accepted = (
        *_COMMON, "n_samples", "stdevs", "baseline", "baselines", "baseline_stdev", "blur_sigma",
    )  # fmt: skip
    _reject_unknown("gradientshap", unknown, accepted)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise XaikitConfigError(
            f"gradientshap n_samples must be a positive integer, got {n_samples!r}"
        )
    if not float(stdevs) >= 0:
        raise XaikitConfigError(f"gradientshap stdevs must be >= 0, got {stdevs!r}")
    _positive_batch(internal_batch_size)
    x, t = _prepare(inputs, targets)
    n, k = t.shape
    seed = _seed(seed)
    dist, _ = _baseline_distribution(
        "gradientshap", x, baseline, baselines, baseline_stdev, seed, first_index,
        normalization, blur_sigma, minimum=1,
    )  # fmt: skip
    out = x.new_empty((n, k, *x.shape[1:]))
    with _lent(forward):
        explainer = GradientShap(_checked(forward, t), multiply_by_inputs=True)
        for i in range(n):
            for j in range(k):
                with seeded_rngs(noise_seed(seed, first_index + i), x.device):
                    out[i, j] = explainer.attribute(
                        x[i : i + 1],
                        baselines=dist[i],
                        n_samples=n_samples,
                        stdevs=float(stdevs),
                        target=int(t[i, j]),
                    )[0]
    return reduce_channels(out.detach(), channel_reduce)


def _segment_options(
    x: Tensor,
    segments: int | Tensor,
    segmentation: str,
    baseline: Baseline,
    normalization: Normalization | None,
    blur_sigma: float | None,
) -> tuple[Tensor, Tensor]:
    labels = superpixels(x, segments, segmentation)
    base = make_baseline(x, baseline, normalization=normalization, blur_sigma=blur_sigma)
    return labels, base


def feature_ablation(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    segments: int | Tensor = DEFAULT_SEGMENTS,
    segmentation: str = "grid",
    baseline: Baseline = "black",
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "mean",
    **unknown: Any,
) -> Tensor:
    """Feature ablation on superpixels: ``(N, C, *S) -> (N, K, *S)``.

    captum's :class:`~captum.attr.FeatureAblation`: every position gets its superpixel's
    score drop ``S(x) - S(x with the superpixel replaced by the baseline)``, the superpixel
    spanning every channel. ``segments`` / ``segmentation``: see :func:`superpixels`;
    ``baseline``: see :func:`~xaikit.explain.gradients.make_baseline`. All K targets of a
    perturbed batch are scored by one forward pass; ``internal_batch_size``: rows per pass.
    Inputs sharing their superpixels (the grid) are ablated together, others one by one.
    ``seed`` is unused.
    """
    accepted = (*_COMMON, "segments", "segmentation", "baseline", "blur_sigma")
    _reject_unknown("feature-ablation", unknown, accepted)
    x, t = _prepare(inputs, targets)
    n, k = t.shape
    labels, base = _segment_options(x, segments, segmentation, baseline, normalization, blur_sigma)
    checked = _checked(forward, t)

    def selected(batch: Tensor, rows: Tensor) -> Tensor:
        return checked(batch).gather(1, rows)

    per_pass = _positive_batch(internal_batch_size)
    if _shared(labels):  # inputs per call: as many as fit with every superpixel in one pass
        block = max(1, per_pass // (int(labels.max()) + 1))
        groups = [(s, min(n, s + block)) for s in range(0, n, block)]
    else:
        groups = [(i, i + 1) for i in range(n)]
    out = x.new_empty((n, k, *x.shape[1:]))
    with _lent(forward):
        explainer = FeatureAblation(selected)
        for first, stop in groups:
            features = int(labels[first:stop].max()) + 1
            out[first:stop] = explainer.attribute(
                x[first:stop],
                baselines=base[first:stop],
                target=None,
                additional_forward_args=(t[first:stop],),
                feature_mask=labels[first : first + 1].unsqueeze(1),
                perturbations_per_eval=max(1, min(features, per_pass // (stop - first))),
            ).reshape(stop - first, k, *x.shape[1:])
    return reduce_channels(out.detach(), channel_reduce)


def _surrogate(
    method: str,
    make: Callable[[Forward], Any],
    forward: Forward,
    x: Tensor,
    t: Tensor,
    labels: Tensor,
    base: Tensor,
    n_samples: int,
    seed: int,
    first_index: int,
    per_pass: int,
) -> Tensor:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise XaikitConfigError(f"{method} n_samples must be a positive integer, got {n_samples!r}")
    n, k = t.shape
    out = x.new_empty((n, k, *x.shape[1:]))
    with _lent(forward):
        checked = _checked(forward, t)
        for i in range(n):
            # every target of input i draws the same perturbations (the same seed): their
            # forward passes run once, for the first target (xaikit.explain.replay)
            replay = ReplayedForward(checked) if k > 1 else None
            explainer = make(checked if replay is None else replay)
            for j in range(k):
                if replay is not None:
                    replay.next_target()
                with seeded_rngs(noise_seed(seed, first_index + i), x.device):
                    out[i, j] = explainer.attribute(
                        x[i : i + 1],
                        baselines=base[i : i + 1],
                        target=int(t[i, j]),
                        feature_mask=labels[i : i + 1].unsqueeze(1),
                        n_samples=n_samples,
                        perturbations_per_eval=max(1, min(n_samples, per_pass)),
                    )[0]
    return out


def lime_surrogate(alpha: float = 0.0) -> SkLearnLinearRegression | SkLearnLasso:
    """LIME's interpretable model: captum's ``SkLearnLinearRegression`` (weighted least
    squares) for ``alpha=0``, else ``SkLearnLasso(alpha=alpha)``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise XaikitConfigError(f"lime alpha must be a number >= 0, got {alpha!r}")
    return SkLearnLasso(alpha=float(alpha)) if alpha > 0 else SkLearnLinearRegression()


def lime(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    n_samples: int = 200,
    alpha: float = 0.0,
    segments: int | Tensor = DEFAULT_SEGMENTS,
    segmentation: str = "grid",
    baseline: Baseline = "black",
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "mean",
    first_index: int = 0,
    **unknown: Any,
) -> Tensor:
    """LIME on superpixels: ``(N, C, *S) -> (N, K, *S)``.

    Ribeiro, Singh & Guestrin, 2016, "'Why Should I Trust You?'", via captum's
    :class:`~captum.attr.Lime`: ``n_samples`` (default 200) random subsets of the superpixels
    kept (the others set to the baseline; captum's default sampling), weighted by captum's
    default kernel (exponential of the cosine distance to the input, width 1), fitted by the
    surrogate :func:`lime_surrogate` ``(alpha)``; every position gets its superpixel's
    coefficient. ``alpha=0`` (default): weighted least squares; ``alpha > 0``: a Lasso of that
    strength. (captum's default surrogate, ``Lasso(alpha=0.01)``, is absolute in score units:
    it zeroes every coefficient when the scores move by less than about 0.01, as those of a
    small or untrained model do.) Seeded per input as :func:`gradientshap`;
    ``internal_batch_size``: perturbed copies per forward pass.
    """
    accepted = (
        *_COMMON, "n_samples", "alpha", "segments", "segmentation", "baseline", "blur_sigma",
    )  # fmt: skip
    _reject_unknown("lime", unknown, accepted)
    lime_surrogate(alpha)  # checked before any work
    x, t = _prepare(inputs, targets)
    labels, base = _segment_options(x, segments, segmentation, baseline, normalization, blur_sigma)

    def make(checked: Forward) -> Lime:
        return Lime(checked, interpretable_model=lime_surrogate(alpha))

    out = _surrogate(
        "lime", make, forward, x, t, labels, base, n_samples, _seed(seed), first_index,
        _positive_batch(internal_batch_size),
    )  # fmt: skip
    return reduce_channels(out.detach(), channel_reduce)


def kernelshap(
    forward: Forward,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int | None = None,
    n_samples: int = 200,
    segments: int | Tensor = DEFAULT_SEGMENTS,
    segmentation: str = "grid",
    baseline: Baseline = "black",
    normalization: Normalization | None = None,
    blur_sigma: float | None = None,
    internal_batch_size: int | None = None,
    channel_reduce: str = "mean",
    first_index: int = 0,
    **unknown: Any,
) -> Tensor:
    """Kernel SHAP on superpixels: ``(N, C, *S) -> (N, K, *S)``.

    Lundberg & Lee, 2017, via captum's :class:`~captum.attr.KernelShap`: ``n_samples``
    (default 200) coalitions of superpixels (the others set to the baseline) drawn with the
    Shapley kernel's size distribution, fitted by least squares; every position gets its
    superpixel's Shapley estimate. Seeded per input as :func:`gradientshap`;
    ``internal_batch_size``: perturbed copies per forward pass.
    """
    accepted = (*_COMMON, "n_samples", "segments", "segmentation", "baseline", "blur_sigma")
    _reject_unknown("kernelshap", unknown, accepted)
    x, t = _prepare(inputs, targets)
    labels, base = _segment_options(x, segments, segmentation, baseline, normalization, blur_sigma)
    out = _surrogate(
        "kernelshap", KernelShap, forward, x, t, labels, base, n_samples, _seed(seed),
        first_index, _positive_batch(internal_batch_size),
    )  # fmt: skip
    return reduce_channels(out.detach(), channel_reduce)


CAPTUM_METHODS = {
    "deeplift": deeplift,
    "deepliftshap": deepliftshap,
    "gradientshap": gradientshap,
    "deconvolution": deconvolution,
    "feature-ablation": feature_ablation,
    "lime": lime,
    "kernelshap": kernelshap,
}
GRADIENT_METHODS.update(CAPTUM_METHODS)
