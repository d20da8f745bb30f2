"""The CAM part of the explanation pipeline: captures, gradients, smoothing and fusion.

:func:`xaikit.explain.engine._run` captures the first target layer on the inputs
(:func:`capture_pass`), resolves the targets, and hands over to :func:`cam_raws`, which
returns every CAM method's raw map:

* **one pass** (:func:`pass_raws`): on one captured layer, the gradients every requested
  method reads come from one batched backward pass: the ``K`` targets' score gradients and,
  for FinerCAM, the gradients of its contrastive scores (:func:`~xaikit.explain.cam.
  finer_scores`, extra columns of the same vector-Jacobian product); ShapleyCAM adds the
  Hessian-vector product ``H A`` by double backward through the head
  (:func:`hessian_vector_products`). Methods that run their own forward passes (Score-CAM,
  SS-CAM, IS-CAM, Ablation-CAM, Smooth Grad-CAM++) return channel weights ``(N, K, C)``.
  With ``eigen_smooth=True`` a map becomes the first principal component of its per-channel
  contributions (``w_c * A_c`` for channel-weight methods; pytorch-grad-cam's
  ``eigen_smooth``), see :func:`~xaikit.explain.cam.eigen_project`.
* **augmentation smoothing** (``aug_smooth=True``, pytorch-grad-cam's ``aug_smooth``): the
  inputs are flipped horizontally or not and multiplied by 0.9, 1 or 1.1 (ttach's
  ``HorizontalFlip`` x ``Multiply([0.9, 1, 1.1])``, 6 variants); each variant's map is
  computed for the same targets, ReLU'd and min-max normalized as its heatmap would be
  (at the input resolution, ``+1e-7`` in the range as pytorch-grad-cam), flipped back, and
  the maps are averaged. The average is kept at the layer's resolution (flips commute with
  the upsampling, and the normalization is affine).
* **several layers** (``layer=["layer3", "layer4"]``, ``fuse="mean" | "max" |
  "product"``): every layer's map is computed as above, ReLU'd, upsampled to the input and
  min-max normalized per layer, then fused; the raw map is the fused map at the input
  resolution and the per-layer heatmaps are kept in ``Explanation.layer_maps``.
* FullGrad needs no layer: :func:`~xaikit.explain.fullgrad.fullgrad_maps`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.adapter import ExplainWarning, ModelAdapter
from xaikit.explain.cam import (
    CAM_METHODS,
    FINER_ALPHA,
    FINER_COMPARISONS,
    eigen_project,
    finer_scores,
    shapley_gradients,
    weighted_sum,
)
from xaikit.explain.hooks import Capture
from xaikit.explain.layers import is_attention_internal
from xaikit.explain.layouts import (
    Layout,
    is_channels_last_module,
    layout_for,
    model_hints,
    to_map,
)
from xaikit.explain.postprocess import normalize_maps, upsample
from xaikit.warn import warn_user

#: ``aug_smooth`` variants: (horizontal flip, intensity factor), as pytorch-grad-cam's
#: default ``tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])])``.
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (1.0, 0.9, 1.1)
)
FUSE_RULES = ("mean", "max", "product")
#: Options every CAM method with a layer takes; ``eigen_smooth`` only where it applies.
SMOOTHING_OPTIONS = ("aug_smooth", "fuse")
#: pytorch-grad-cam's ``scale_cam_image`` epsilon (each augmented map's normalization).
AUG_EPS = 1e-7
#: Score-CAM's options (Score-CAM and its fast variant are not in ``CAM_METHODS``).
SCORE_CAM_OPTIONS = {"scorecam": ("batch_size",), "scorecam-fast": ("batch_size", "top_k", "fill")}


def cam_options(name: str) -> tuple[str, ...]:
    """The ``explain(...)`` options CAM method ``name`` takes."""
    if name in SCORE_CAM_OPTIONS:
        return (*SCORE_CAM_OPTIONS[name], *SMOOTHING_OPTIONS, "eigen_smooth")
    method = CAM_METHODS[name]
    if not method.uses_layer:
        return (*method.options, "aug_smooth")
    eigen = ("eigen_smooth",) if method.contributions is not None or method.kind == "pass" else ()
    return (*method.options, *SMOOTHING_OPTIONS, *eigen)


def uses_layer(name: str) -> bool:
    method = CAM_METHODS.get(name)
    return method is None or method.uses_layer


def needs_capture_gradients(cams: Sequence[str]) -> bool:
    """Whether the first capture must make the activations a leaf that requires grad."""
    return any(
        name in CAM_METHODS
        and CAM_METHODS[name].kind == "map"
        and CAM_METHODS[name].needs_gradients
        for name in cams
    )


def layer_list(layer: Any) -> list[Any]:
    """``layer=`` as a list: one name / module, or several (``["layer3", "layer4"]``)."""
    if isinstance(layer, (list, tuple)):
        if not layer:
            raise XaikitConfigError("layer is an empty list; give at least one layer")
        if any(item == "auto" for item in layer if isinstance(item, str)):
            raise XaikitConfigError("layer='auto' cannot be one of several layers; name them")
        return list(layer)
    return [layer]


def layer_label(names: Sequence[str]) -> str:
    """The ``Explanation.layer`` of one or several fused layers (``"layer3+layer4"``)."""
    return "+".join(names)


@dataclass
class LayerPass:
    """One forward pass with one layer captured."""

    name: str
    module: nn.Module
    x: torch.Tensor
    native: torch.Tensor  # the captured output: a leaf that requires grad, or detached
    acts: torch.Tensor  # (N, C, *s) detached, in the map layout
    layout: Layout
    tuple_output: bool
    logits: torch.Tensor  # (M, num_outputs), with the head's graph when captured with grad
    rows: torch.Tensor | None = None


def capture_pass(
    adapter: ModelAdapter,
    name: str,
    module: nn.Module,
    x: torch.Tensor,
    settings: Any,
    *,
    grad: bool,
    rows: torch.Tensor | None = None,
    layout: Layout | None = None,
    check: bool = False,
) -> LayerPass:
    """Run the model on ``x`` with layer ``name`` captured. ``check``: refuse a layer inside
    an attention module and warn about a shared module (the call's first pass)."""
    with Capture(adapter.model, {name: module}, grad=grad) as capture:
        args, kwargs = adapter.inputs.with_input(x, rows)
        output = capture.run(*args, **kwargs)
    native = capture.activations[name]
    tuple_output = name in capture.tuples
    size = tuple(x.shape[2:])
    # Decided before any backward pass: a layer that is no map of the input is refused.
    if check and settings.reshape == "auto" and is_attention_internal(adapter.model, name):
        # Its shape may pass for a map (q|k|v as channels, a small attention matrix).
        seen = "x".join(str(v) for v in native.shape[1:])
        raise XaikitConfigError(
            f"layer {name!r} outputs (N, {seen}) inside an attention module (q, k, v, "
            "their norms or the attention probabilities): it is not a map of the input; "
            "choose the "
            "block or its first norm (`xaikit layers --why`), a method that reads the "
            "attention (attention-rollout, attention-gradients), or pass --reshape / "
            "reshape= to insist"
        )
    if layout is None:
        layout = layout_for(
            name,
            tuple(native.shape),
            size,
            model_hints(adapter.model, size),
            settings.reshape,
            sample=native,
            channels_last=is_channels_last_module(module, tuple(native.shape)),
        )
    if check and capture.calls.get(name, 1) > 1:
        warn_user(
            f"layer {name!r} ran {capture.calls[name]} times in one forward "
            "pass (a shared module); the last call is explained. Choose a layer that runs "
            "once (see `xaikit layers`)",
            ExplainWarning,
        )
    logits = adapter.logits(output, x.shape[0])
    acts = to_map(native.detach(), layout)
    return LayerPass(name, module, x, native, acts, layout, tuple_output, logits, rows)


# ------------------------------------------------------------------------ gradients


def hessian_vector_products(
    selected: torch.Tensor, native: torch.Tensor, layer: str, tuple_output: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, H A)`` per target, ``(N, K, *native)`` each, by double backward.

    ``G = d selected[:, k] / d A`` is computed with its graph (``create_graph``), and
    ``H A = d (G . A) / d A`` with ``A`` held fixed (pytorch-grad-cam's
    ``autograd.grad(grads, activations, grad_outputs=activations)``). A head that is linear
    in the activations (ReLU networks whose Hessian vanishes almost everywhere) gives
    ``H A = 0``.
    """
    from xaikit.explain.engine import _unused

    k = selected.shape[1]
    firsts, seconds = [], []
    fixed = native.detach()
    for j in range(k):
        (g,) = torch.autograd.grad(
            selected[:, j].sum(), native, create_graph=True, retain_graph=True, allow_unused=True
        )
        if g is None:
            raise _unused(layer, tuple_output)
        h = None
        if g.requires_grad:
            (h,) = torch.autograd.grad(g, native, fixed, retain_graph=True, allow_unused=True)
        firsts.append(g.detach())
        seconds.append(torch.zeros_like(fixed) if h is None else h.detach())
    return torch.stack(firsts, dim=1), torch.stack(seconds, dim=1)


def pass_gradients(
    adapter: ModelAdapter,
    p: LayerPass,
    index: torch.Tensor,
    kinds: set[str],
    finer_options: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The gradients (map layout, ``(N, K, C, *s)``) of each kind in ``kinds`` on pass ``p``:
    ``"score"`` and ``"finer"`` from one batched backward, ``"shapley"`` by double
    backward first (the graph is kept for the batched one)."""
    from xaikit.explain.engine import layer_gradients

    scores = adapter.scores(p.logits)
    selected = scores.gather(1, index)
    k = index.shape[1]
    out: dict[str, torch.Tensor] = {}
    if "shapley" in kinds:
        if not selected.requires_grad:
            layer_gradients(selected, p.native, p.name, p.tuple_output)  # raises its error
        first, hvp = hessian_vector_products(selected, p.native, p.name, p.tuple_output)
        out["shapley"] = to_map(shapley_gradients(first, hvp), p.layout, lead=2)
    columns, names = [], []
    if "score" in kinds:
        columns.append(selected)
        names.append("score")
    if "finer" in kinds:
        alpha = finer_options.get("alpha", FINER_ALPHA)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
            raise XaikitConfigError(f"alpha must be a number, got {alpha!r}")
        comparisons = finer_options.get("comparisons", FINER_COMPARISONS)
        if isinstance(comparisons, int) and not isinstance(comparisons, bool):
            comparisons = (comparisons,)
        try:
            comparisons = tuple(int(r) for r in comparisons)
        except (TypeError, ValueError):
            raise XaikitConfigError(
                f"comparisons must be ranks >= 1 (e.g. (1, 2, 3)), got {comparisons!r}"
            ) from None
        if not comparisons or min(comparisons) < 1:
            raise XaikitConfigError(f"comparisons must be ranks >= 1, got {comparisons!r}")
        columns.append(
            finer_scores(scores, p.logits, index, alpha=float(alpha), comparisons=comparisons)
        )
        names.append("finer")
    if columns:
        grads = layer_gradients(torch.cat(columns, dim=1), p.native, p.name, p.tuple_output)
        grads = to_map(grads, p.layout, lead=2)
        for i, kind in enumerate(names):
            out[kind] = grads[:, i * k : (i + 1) * k]
    return out


# ------------------------------------------------------------------------ one pass


@dataclass
class CamCall:
    """What :func:`cam_raws` needs of the engine's call."""

    adapter: ModelAdapter
    cams: list[str]
    settings: Any
    routed: Mapping[str, Mapping[str, Any]]
    index: torch.Tensor
    first: LayerPass | None
    layers: list[tuple[str, nn.Module]]
    first_index: int = 0
    rows: int | None = None
    eigen_smooth: bool = False


def _int_option(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise XaikitConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def _float_option(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise XaikitConfigError(f"{key} must be a non-negative number, got {value!r}")
    return float(value)


def _pass_weights(
    call: CamCall, name: str, p: LayerPass
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Channel weights ``(N, K, C)`` of a method that runs its own forward passes (with the
    activations they weight, when not the pass's own)."""
    from xaikit.explain.cam_passes import (
        ABLATION_BATCH_SIZE,
        SMOOTH_SAMPLES,
        SMOOTH_STD,
        ablation_weights,
        smooth_gradcam_pp_weights,
    )
    from xaikit.explain.scorecam import (
        DEFAULT_BATCH_SIZE,
        FILL_RULES,
        ISCAM_SAMPLES,
        SSCAM_SAMPLES,
        SSCAM_STD,
        fresh_seed,
        score_cam_weights,
        smoothed_score_cam_weights,
    )

    adapter, index, settings = call.adapter, call.index, call.settings
    options = call.routed.get(name, {})
    quiet = settings.quiet
    if name in ("scorecam", "scorecam-fast"):
        batch_size = _int_option(options, "batch_size", DEFAULT_BATCH_SIZE)
        top_k, fill = None, "mean"
        if name == "scorecam-fast":
            top_k = _int_option(options, "top_k", max(1, p.acts.shape[1] // 8))
            fill = options.get("fill", "mean")
            if fill not in FILL_RULES:
                raise XaikitConfigError(
                    f"fill must be one of {', '.join(FILL_RULES)}; got {fill!r}"
                )
        return score_cam_weights(
            adapter.forward,
            p.x,
            p.acts,
            index,
            batch_size=batch_size,
            top_k=top_k,
            fill=fill,
            quiet=quiet,
        )
    if name in ("sscam", "iscam"):
        sscam = name == "sscam"
        return smoothed_score_cam_weights(
            adapter.forward,
            p.x,
            p.acts,
            index,
            variant=name,
            num_samples=_int_option(
                options, "num_samples", SSCAM_SAMPLES if sscam else ISCAM_SAMPLES
            ),
            std=_float_option(options, "std", SSCAM_STD) if sscam else SSCAM_STD,
            batch_size=_int_option(options, "batch_size", DEFAULT_BATCH_SIZE),
            seed=settings.seed,
            first_index=call.first_index,
            quiet=quiet,
        )
    if name == "ablationcam":
        original = adapter.scores(p.logits).gather(1, index).detach()
        prepared = adapter.inputs
        one_row = len(prepared.args) + len(prepared.kwargs) == 1
        return ablation_weights(
            lambda xb, rows: adapter.call(xb, rows),
            lambda out, m: adapter.scores(adapter.logits(out, m)),
            p.module,
            p.x,
            p.native.detach(),
            p.layout,
            index,
            original,
            batch_size=_int_option(options, "batch_size", ABLATION_BATCH_SIZE),
            one_row=one_row,
            quiet=quiet,
        )
    if name == "smoothgradcam++":
        from xaikit.explain.engine import layer_gradients

        def gradients_of(noisy: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            q = capture_pass(
                adapter, p.name, p.module, noisy, settings, grad=True, rows=rows, layout=p.layout
            )
            selected = adapter.scores(q.logits).gather(1, index.index_select(0, rows))
            grads = layer_gradients(selected, q.native, q.name, q.tuple_output)
            return to_map(grads, q.layout, lead=2), q.acts

        n = p.x.shape[0]
        samples = _int_option(options, "num_samples", SMOOTH_SAMPLES)
        per_pass = n * samples if call.rows is None else max(n, min(call.rows, n * samples))
        variant = options.get("variant", "paper")
        weights, acts = smooth_gradcam_pp_weights(
            gradients_of,
            p.x,
            p.acts,
            num_samples=samples,
            std=_float_option(options, "std", SMOOTH_STD),
            seed=fresh_seed(settings.seed),
            first_index=call.first_index,
            rows_per_pass=per_pass,
            variant=variant,
            quiet=quiet,
        )
        return weights, acts
    raise XaikitConfigError(f"CAM method {name!r} has no pass implementation")  # pragma: no cover


def pass_raws(call: CamCall, p: LayerPass, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Raw maps ``(N, K, *s)`` of every CAM method in ``names`` on one captured pass."""
    n, k = call.index.shape
    acts = p.acts
    if k == 0:
        return {name: acts.new_zeros(n, 0, *acts.shape[2:]) for name in names}
    methods = {name: CAM_METHODS[name] for name in names if name in CAM_METHODS}
    kinds = {m.gradient for m in methods.values() if m.kind == "map" and m.needs_gradients}
    grads = (
        pass_gradients(call.adapter, p, call.index, kinds, call.routed.get("finercam", {}))
        if kinds
        else {}
    )
    out: dict[str, torch.Tensor] = {}
    for name in names:
        method = methods.get(name)
        if method is not None and method.kind == "map":
            g = grads.get(method.gradient) if method.needs_gradients else None
            if call.eigen_smooth and method.contributions is not None and g is not None:
                out[name] = eigen_project(method.contributions(acts, g))
            else:
                out[name] = method.map(acts, g, k)
            continue
        result = _pass_weights(call, name, p)
        weights, weighted = result if isinstance(result, tuple) else (result, acts)
        weights = weights.to(weighted.dtype)  # (N, K, C)
        if call.eigen_smooth:
            view = (*weights.shape, *(1,) * (weighted.dim() - 2))
            out[name] = eigen_project(weights.reshape(view) * weighted.unsqueeze(1))
        else:
            out[name] = weighted_sum(weighted, weights)
    return out


# ------------------------------------------------------------------------ the call


def augment(x: torch.Tensor, flip: bool, factor: float) -> torch.Tensor:
    """One ``aug_smooth`` variant of the inputs: flipped along the last axis, scaled."""
    out = x.flip(-1) if flip else x
    return out * factor if factor != 1.0 else out


def variant_map(raw: torch.Tensor, size: tuple[int, ...], flip: bool) -> torch.Tensor:
    """One augmented variant's map, at the layer's resolution, as its heatmap would be:
    ReLU'd, min-max normalized with the range of its upsampled map (``+1e-7``), flipped back.
    (Upsampling is linear and keeps constants, so the normalized map upsamples to the
    normalized heatmap.)"""
    positive = raw.clamp_min(0).float()
    up = upsample(positive, size).flatten(start_dim=2)
    view = (*raw.shape[:2], *(1,) * (raw.dim() - 2))
    lo = up.amin(dim=2).reshape(view)
    hi = up.amax(dim=2).reshape(view)
    normed = (positive - lo) / (hi - lo + AUG_EPS)
    return normed.flip(-1) if flip else normed


def check_common(options: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """``(aug_smooth, eigen_smooth, fuse)`` from a CAM method's routed options."""
    aug = options.get("aug_smooth", False)
    eigen = options.get("eigen_smooth", False)
    fuse = options.get("fuse", "mean")
    for key, value in (("aug_smooth", aug), ("eigen_smooth", eigen)):
        if not isinstance(value, bool):
            raise XaikitConfigError(f"{key} must be True or False, got {value!r}")
    if fuse not in FUSE_RULES:
        raise XaikitConfigError(f"fuse must be one of {', '.join(FUSE_RULES)}; got {fuse!r}")
    return aug, eigen, fuse


def fuse_maps(maps: Sequence[torch.Tensor], rule: str) -> torch.Tensor:
    """Fuse per-layer heatmaps ``(N, K, *S)`` (each in ``[0, 1]``) by ``rule``."""
    stacked = torch.stack(list(maps), dim=0)
    if rule == "mean":
        return stacked.mean(dim=0)
    if rule == "max":
        return stacked.amax(dim=0)
    return stacked.prod(dim=0)


def cam_raws(call: CamCall) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Every CAM method's raw map, and the per-layer heatmaps of fused layers.

    Returns ``(raws, layer_maps)``: ``raws[name]`` is ``(N, K, *s)`` at the layer's
    resolution for one layer, ``(N, K, *S)`` at the input's for fused layers and FullGrad;
    ``layer_maps[name]`` is ``{layer: (N, K, *S) heatmap}`` when several layers were fused.
    """
    adapter, settings = call.adapter, call.settings
    x = adapter.x
    size = tuple(x.shape[2:])
    n, k = call.index.shape
    layered = [name for name in call.cams if uses_layer(name)]
    layerless = [name for name in call.cams if not uses_layer(name)]
    aug = eigen = False
    fuse = "mean"
    for name in call.cams:
        aug_m, eigen_m, fuse_m = check_common(call.routed.get(name, {}))
        aug, fuse = aug or aug_m, fuse_m if "fuse" in call.routed.get(name, {}) else fuse
        eigen = eigen or eigen_m
    call.eigen_smooth = eigen
    variants = AUGMENTATIONS if aug else ((False, 1.0),)
    grad = needs_capture_gradients(layered)

    per_layer: dict[str, dict[str, torch.Tensor]] = {}
    for li, (lname, module) in enumerate(call.layers if layered else []):
        sums: dict[str, torch.Tensor] = {}
        for flip, factor in variants:
            identity = not flip and factor == 1.0
            if li == 0 and identity and call.first is not None:
                p = call.first
            else:
                p = capture_pass(
                    adapter, lname, module, augment(x, flip, factor), settings, grad=grad
                )
            raws = pass_raws(call, p, layered)
            del p
            for name, raw in raws.items():
                raw = raw.detach()
                if aug:
                    raw = variant_map(raw, size, flip) if k else raw.float()
                sums[name] = raw if name not in sums else sums[name] + raw
        if aug:
            sums = {name: value / len(variants) for name, value in sums.items()}
        per_layer[lname] = sums

    out: dict[str, torch.Tensor] = {}
    layer_maps: dict[str, dict[str, torch.Tensor]] = {}
    if len(per_layer) == 1:
        out.update(next(iter(per_layer.values())))
    elif per_layer:
        for name in layered:
            heat = {}
            for lname, sums in per_layer.items():
                up = upsample(sums[name].clamp_min(0).float(), size)
                heat[lname], _deg = normalize_maps(up, "minmax", eps=settings.eps)
            out[name] = fuse_maps(list(heat.values()), fuse)
            layer_maps[name] = heat
    if "fullgrad" in layerless:
        from xaikit.explain.fullgrad import fullgrad_maps

        if k == 0:
            out["fullgrad"] = x.new_zeros(n, 0, *size)
        else:
            total = None
            for flip, factor in variants:
                maps = fullgrad_maps(
                    lambda xv: adapter.call(xv),
                    lambda output, _n=n: adapter.scores(adapter.logits(output, _n)),
                    adapter.model,
                    augment(x, flip, factor),
                    call.index,
                )
                if aug:
                    maps = variant_map(maps, size, flip)
                total = maps if total is None else total + maps
            assert total is not None
            out["fullgrad"] = total / len(variants)
    return out, layer_maps
