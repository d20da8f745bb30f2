"""The explanation pipeline: one forward, one batched backward, every method and target.

For CAM methods the target layer's output is captured once (:class:`~xaikit.explain.hooks.
Capture`): the forward pass up to the layer builds no graph (parameters are frozen by
:func:`~xaikit.explain.state.borrowed` and the inputs are detached), the captured activation
is a leaf, so the single backward pass runs through the head only. The ``K`` targets of
every input are answered by one ``torch.autograd.grad`` over ``K`` one-hot output gradients
(``is_grads_batched=True``, a vector-Jacobian product per target), and every requested CAM
method reads the same activations and gradients.

Gradient methods (:mod:`xaikit.explain.gradients`) get ``forward(x) -> (M, num_outputs)``
scores from the :class:`~xaikit.explain.adapter.ModelAdapter`; Guided Grad-CAM is guided
backpropagation times the upsampled Grad-CAM of the same call.

Memory is bounded by a budget (``memory_budget``, default ``$XAIKIT_MEMORY_BUDGET`` or
:data:`DEFAULT_MEMORY_BUDGET`, 1 GiB): one dry forward of one sample measures its activation
bytes (:func:`sample_bytes`), and a batch of more than ``budget // sample_bytes`` inputs is
explained in chunks of that many, each by the whole pipeline above, the results concatenated
along the batch axis (:func:`~xaikit.explain.result.concat_explanations`; ragged targets
padded to the call's largest ``K``, ``"global"`` normalization over the whole call). The
methods that expand the batch (IG path points, SmoothGrad noisy copies, occlusion windows)
run at most that many rows per forward pass unless ``internal_batch_size`` is given. Every
input is computed as in one call; only float rounding of the model's own batched kernels
(BLAS blocks a 3-row and a 10-row product differently) can differ, at ~1e-8.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xaikit._names import GRADIENT_NAMES, LRP_METHODS, METHOD_ALIASES, SCORE_CAM_METHODS
from xaikit.errors import XaikitConfigError
from xaikit.explain.adapter import ExplainWarning, InputKey, ModelAdapter, OutputSelector
from xaikit.explain.attention import ATTENTION_METHODS, attention_map, options_of
from xaikit.explain.cam import CAM_METHODS
from xaikit.explain.cam_engine import SCORE_CAM_OPTIONS as _SCORE_CAM_OPTIONS
from xaikit.explain.cam_engine import (
    CamCall,
    LayerPass,
    cam_options,
    cam_raws,
    capture_pass,
    layer_label,
    layer_list,
    needs_capture_gradients,
)
from xaikit.explain.cam_engine import uses_layer as cam_uses_layer
from xaikit.explain.layers import auto_layer_cached, is_attention_internal, resolve_layer
from xaikit.explain.layouts import (
    Layout,
    Reshape,
    check_reshape,
)
from xaikit.explain.postprocess import DEFAULT_EPS, check_normalize, to_heatmaps, upsample
from xaikit.explain.result import Explanation, concat_explanations
from xaikit.explain.state import borrowed
from xaikit.explain.targets import resolve_targets
from xaikit.lrp.core import LRP_OPTIONS, explain_lrp
from xaikit.warn import warn_user

#: The built-in method names (methods added to ``CAM_METHODS`` later are accepted too).
METHODS = (*CAM_METHODS, *SCORE_CAM_METHODS, *GRADIENT_NAMES, *ATTENTION_METHODS, *LRP_METHODS)


def method_names() -> tuple[str, ...]:
    """Every method name ``explain`` accepts now, registered CAM methods included."""
    return (*CAM_METHODS, *SCORE_CAM_METHODS, *GRADIENT_NAMES, *ATTENTION_METHODS, *LRP_METHODS)


def is_cam(name: str) -> bool:
    """A method of the CAM family (a map at the target layer, ReLU applied for display)."""
    return name in CAM_METHODS or name in SCORE_CAM_METHODS


#: Gradient methods that expand the batch (path points, noisy copies, windows, perturbed
#: samples) take ``internal_batch_size``: their rows per forward pass default to the memory
#: budget's.

#: Options of the Score-CAM methods (the others go to the gradient methods).
SCORE_CAM_OPTIONS = _SCORE_CAM_OPTIONS


@dataclass
class Settings:
    """Everything but the model, the inputs and the targets (see :func:`xaikit.explain`)."""

    layer: str | nn.Module = "auto"
    reshape: Reshape = "auto"
    score: str = "logit"
    normalize: str | None = "minmax"
    eps: float = DEFAULT_EPS
    output: OutputSelector = None
    attribute_to: InputKey = 0
    class_names: Sequence[str] | None = None
    seed: int | None = None
    quiet: bool | None = None
    memory_budget: int | str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def check_methods(method: str | Sequence[str]) -> list[str]:
    """The requested method names, validated and without duplicates (order kept).

    An alias (``gradxinput``, see :data:`xaikit._names.METHOD_ALIASES`) becomes its
    canonical name (``inputxgrad``).
    """
    names = [method] if isinstance(method, str) else list(method)
    names = [METHOD_ALIASES.get(m, m) if isinstance(m, str) else m for m in names]
    if not names:
        raise XaikitConfigError(f"method is empty; choose from {', '.join(method_names())}")
    unknown = [m for m in names if m not in method_names()]
    if unknown:
        raise XaikitConfigError(
            f"unknown method(s) {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(method_names())}"
        )
    return list(dict.fromkeys(names))


def _gradient_registry() -> Mapping[str, Callable[..., torch.Tensor]]:
    try:
        from xaikit.explain.gradients import GRADIENT_METHODS
    except ImportError as err:  # pragma: no cover - the module ships with xaikit
        raise XaikitConfigError(f"gradient methods are not available ({err})") from None
    return GRADIENT_METHODS


def _gradient_fn(name: str) -> Callable[..., torch.Tensor]:
    registry = _gradient_registry()
    key = "guided-backprop" if name == "guided-gradcam" else name
    if key not in registry:
        raise XaikitConfigError(f"method {name!r} is not available in this version of xaikit")
    return registry[key]


def _accepted(fn: Callable[..., Any]) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in ("seed", "first_index", "model")
    } - {"forward", "inputs", "targets"}


def route_options(methods: Sequence[str], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Give every method the options it takes; an option no method takes is an error."""
    routed: dict[str, dict[str, Any]] = {m: {} for m in methods}
    used: set[str] = set()
    accepted_all: set[str] = set()
    for m in methods:
        if m in GRADIENT_NAMES:
            accepted = _accepted(_gradient_fn(m))
        elif m in ATTENTION_METHODS:
            accepted = set(options_of(m))
        elif m in LRP_METHODS:
            accepted = set(LRP_OPTIONS)
        else:
            accepted = set(cam_options(m)) if is_cam(m) else set()
        accepted_all |= accepted
        for key, value in options.items():
            if key in accepted:
                routed[m][key] = value
                used.add(key)
    unknown = sorted(set(options) - used)
    if unknown:
        takes = ", ".join(sorted(accepted_all)) or "no extra options"
        raise XaikitConfigError(
            f"unknown option(s) {', '.join(unknown)} for method(s) {', '.join(methods)} "
            f"(they take: {takes})"
        )
    return routed


def layer_gradients(
    selected: torch.Tensor, activations: torch.Tensor, layer: str, tuple_output: bool = False
) -> torch.Tensor:
    """``d selected[n, k] / d A[n]`` for every target: ``(N, K)``, ``(N, C, *s)`` ->
    ``(N, K, C, *s)``, by one vector-Jacobian product per target, batched.

    Inputs of a batch are independent (the model is in eval mode), so one backward pass of
    ``sum_n selected[n, k]`` gives every input's gradient for target ``k``; the ``K`` targets
    are batched by ``is_grads_batched`` (vmap over one-hot output gradients). An operation
    without a batching rule falls back to ``K`` backward passes over the retained graph.
    """
    n, k = selected.shape
    if not selected.requires_grad and tuple_output:
        raise XaikitConfigError(
            f"layer {layer!r} returns a tuple and its first tensor, the one explained, does "
            "not reach the scores (the model reads another element, e.g. PiT's class "
            "tokens); choose a layer inside it (see `xaikit layers`)"
        )
    if not selected.requires_grad:
        raise XaikitConfigError(
            f"the explained scores do not depend on layer {layer!r} through differentiable "
            "operations (is it after the output, or detached inside the model?); choose a "
            "layer before the head"
        )
    if k == 1:
        ones = torch.ones_like(selected)  # d sum_n selected[n] / d selected, without the sum
        (grads,) = torch.autograd.grad(selected, activations, ones, allow_unused=True)
        if grads is None:
            raise _unused(layer, tuple_output)
        return grads.unsqueeze(1)
    one_hot = torch.eye(k, dtype=selected.dtype, device=selected.device)
    one_hot = one_hot.unsqueeze(1).expand(k, n, k)
    try:
        (grads,) = torch.autograd.grad(
            selected,
            activations,
            one_hot,
            retain_graph=True,
            is_grads_batched=True,
            allow_unused=True,
        )
    except RuntimeError:
        parts = [
            torch.autograd.grad(selected[:, j].sum(), activations, retain_graph=True)[0]
            for j in range(k)
        ]
        grads = torch.stack(parts, dim=0)
    if grads is None:
        raise _unused(layer, tuple_output)
    return grads.movedim(0, 1)


def _unused(layer: str, tuple_output: bool = False) -> XaikitConfigError:
    if tuple_output:
        return XaikitConfigError(
            f"layer {layer!r} returns a tuple and the scores do not depend on its first "
            "tensor, the one explained; choose a layer inside it (see `xaikit layers`)"
        )
    return XaikitConfigError(
        f"the explained scores do not depend on layer {layer!r} (the gradient does not reach "
        "it); choose a layer on the path from the input to the output"
    )


def _layer_name(layer: str | nn.Module, wrapped: bool) -> str | nn.Module:
    # A name copied from a DataParallel model's named_modules() starts with "module.".
    if wrapped and isinstance(layer, str) and layer.startswith("module."):
        return layer[len("module.") :]
    return layer


def run(
    model: nn.Module,
    inputs: Any,
    methods: Sequence[str],
    target: Any,
    settings: Settings,
) -> dict[str, Explanation]:
    """Explain ``inputs`` with every method in ``methods``; returns ``{method: Explanation}``.

    See :func:`xaikit.explain.explain` for the arguments. The model is borrowed for the call
    (eval mode, frozen parameters, grad enabled) and restored afterwards, exception or not.
    """
    methods = check_methods(methods)
    check_normalize(settings.normalize)
    check_reshape(settings.reshape)
    routed = route_options(methods, settings.options)
    # Inside a caller's torch.inference_mode() the inputs are inference tensors, which
    # autograd refuses: leave inference mode first, then copy them (prepare_inputs).
    with torch.inference_mode(False):
        adapter = ModelAdapter(
            model,
            inputs,
            output=settings.output,
            attribute_to=settings.attribute_to,
            score=settings.score,
        )
        class_names = settings.class_names
        if class_names is None:
            class_names = getattr(adapter.model, "class_names", None)
        with borrowed(adapter.model):
            adapter.warn_final_activation()
            budget = parse_memory_budget(settings.memory_budget)
            rows = max(1, budget // sample_bytes(adapter))
            n = adapter.x.shape[0]
            if n <= rows:
                return _run(adapter, methods, target, settings, routed, class_names, model, rows)
            return _run_chunked(
                adapter, methods, target, settings, routed, class_names, model, rows
            )


# --------------------------------------------------------------------------- memory budget

#: Default memory budget of one call, in bytes (1 GiB: fits a laptop next to the model).
DEFAULT_MEMORY_BUDGET = 1 << 30
#: Environment variable overriding the default budget (``"512M"``, ``"2G"``, bytes).
MEMORY_BUDGET_ENV = "XAIKIT_MEMORY_BUDGET"
#: Bytes of one sample's forward pass, per byte of its activations: the forward's saved
#: activations, their gradients and the transient of the backward pass.
ACTIVATION_FACTOR = 3
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_probe_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], int]] = (
    weakref.WeakKeyDictionary()
)


def parse_memory_budget(value: int | str | None) -> int:
    """The memory budget in bytes: ``value`` (bytes, or ``"512M"``, ``"1.5G"``, ``"800KiB"``),
    else ``$XAIKIT_MEMORY_BUDGET``, else :data:`DEFAULT_MEMORY_BUDGET`."""
    source = "memory_budget"
    if value is None:
        value = os.environ.get(MEMORY_BUDGET_ENV) or None
        source = MEMORY_BUDGET_ENV
        if value is None:
            return DEFAULT_MEMORY_BUDGET
    if isinstance(value, bool):
        raise XaikitConfigError(f"{source} must be a number of bytes or '512M', got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(value).lower())
        if match is None:
            raise XaikitConfigError(
                f"{source} must be a number of bytes or a size like '512M' or '2G', got {value!r}"
            )
        number = float(match.group(1)) * _UNITS[match.group(2)]
    if not number >= 1:
        raise XaikitConfigError(f"{source} must be at least 1 byte, got {value!r}")
    return int(number)


def sample_bytes(adapter: ModelAdapter) -> int:
    """Estimated peak bytes of one sample through one forward and backward pass.

    One dry forward of the first sample (no graph) sums the output bytes of every leaf
    module; the estimate is :data:`ACTIVATION_FACTOR` times that, plus the input's bytes.
    Cached per model, input shape and dtype (weakly: the model is not kept alive).
    """
    x = adapter.x
    key = (tuple(x.shape[1:]), x.dtype, x.device, adapter.output is None)
    cache = _probe_cache.setdefault(adapter.model, {})
    if key in cache:
        return cache[key]
    total = 0

    def count(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal total
        stack = [output]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                total += item.numel() * item.element_size()
            elif isinstance(item, (tuple, list)):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())

    leaves = [m for m in adapter.model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            adapter.trace_forward()(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    one = x[:1].numel() * x.element_size()
    estimate = max(1, ACTIVATION_FACTOR * total + 4 * one)
    cache[key] = estimate
    return estimate


def _slice_inputs(adapter: ModelAdapter, start: int, stop: int) -> ModelAdapter:
    """A shallow copy of ``adapter`` on inputs ``start:stop`` (every tensor carrying the
    batch is sliced, views, no copy)."""
    n = adapter.x.shape[0]
    prepared = adapter.inputs

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
            return value[start:stop]
        return value

    part = copy.copy(adapter)
    part.inputs = dataclasses.replace(
        prepared,
        args=tuple(cut(v) for v in prepared.args),
        kwargs={k: cut(v) for k, v in prepared.kwargs.items()},
    )
    return part


def _slice_target(target: Any, start: int, stop: int, n: int) -> Any:
    """The targets of inputs ``start:stop``: per-input forms (an ``(N, ...)`` tensor or
    array, a list of ``N``) are sliced, the others (keywords, one class, callables) kept."""
    if isinstance(target, torch.Tensor):
        return target[start:stop] if target.dim() > 0 and target.shape[0] == n else target
    if isinstance(target, (list, tuple)) and len(target) == n:
        return target[start:stop]
    shape = getattr(target, "shape", None)
    if not callable(target) and hasattr(target, "__array__") and shape and shape[0] == n:
        return target[start:stop]
    return target


def _run_chunked(
    adapter: ModelAdapter,
    methods: list[str],
    target: Any,
    settings: Settings,
    routed: dict[str, dict[str, Any]],
    class_names: Sequence[str] | None,
    original: nn.Module,
    rows: int,
) -> dict[str, Explanation]:
    """:func:`_run` on chunks of ``rows`` inputs, concatenated along the batch axis.

    Every input's computation is the same as in one call (the ``K`` targets of ragged
    requests are padded to the largest count over all chunks; SmoothGrad's noise follows the
    input's index). ``"global"`` normalization spans the whole call: chunks return raw maps
    and the heatmaps are normalized once, over every chunk.
    """
    n = adapter.x.shape[0]
    chunk_settings = settings
    if settings.normalize == "global":
        chunk_settings = dataclasses.replace(settings, normalize=None)
    parts = [
        _run(
            _slice_inputs(adapter, start, min(n, start + rows)),
            methods,
            _slice_target(target, start, min(n, start + rows), n),
            chunk_settings,
            routed,
            class_names,
            original,
            rows,
            first_index=start,
            chunked=True,
        )
        for start in range(0, n, rows)
    ]
    results = {name: concat_explanations([part[name] for part in parts]) for name in methods}
    size = tuple(adapter.x.shape[2:])
    if settings.normalize == "global":
        for name, result in results.items():
            valid = result.valid
            maps, degenerate = to_heatmaps(
                result.raw,
                size,
                relu=is_cam(name),
                normalize="global",
                eps=settings.eps,
                valid=None if bool(valid.all()) else valid,
            )
            result.maps, result.degenerate, result.normalize = maps, degenerate, "global"
    first = next(iter(results.values()))
    if first.targets.shape[1] == 0:
        _warn_no_targets()
    if any(bool(r.degenerate.any()) for r in results.values()):
        _warn_degenerate(results, _cam_layer(results))
    return results


def _cam_layer(results: Mapping[str, Explanation]) -> str | None:
    """The CAM layer a call's warnings name, as one unchunked call names it."""
    return next(
        (
            r.layer
            for name, r in results.items()
            if (is_cam(name) and cam_uses_layer(name)) or name == "guided-gradcam"
        ),
        None,
    )


def _warn_no_targets() -> None:
    warn_user(
        "no targets to explain (e.g. target='positive' and the model predicts no label "
        "for any input); the maps have K = 0",
        ExplainWarning,
    )


def _run(
    adapter: ModelAdapter,
    methods: list[str],
    target: Any,
    settings: Settings,
    routed: dict[str, dict[str, Any]],
    class_names: Sequence[str] | None,
    original: nn.Module,
    rows: int | None = None,
    *,
    first_index: int = 0,
    chunked: bool = False,
) -> dict[str, Explanation]:
    """Explain the adapter's whole batch at once. ``rows``: rows per forward pass of the
    methods that expand the batch (IG, SmoothGrad, occlusion) unless ``internal_batch_size``
    is given; ``first_index``: the batch's offset in the call (SmoothGrad's noise);
    ``chunked``: a chunk of a larger call, whose call-level warnings come once, after."""
    x = adapter.x
    n = x.shape[0]
    size = tuple(x.shape[2:])
    cams = [m for m in methods if is_cam(m)]
    if "guided-gradcam" in methods and "gradcam" not in cams:
        cams.append("gradcam")  # computed for Guided Grad-CAM, not returned on its own
    layered = [m for m in cams if cam_uses_layer(m)]

    layer_name: str | None = None
    layout: Layout | None = None
    first: LayerPass | None = None
    resolved: list[tuple[str, nn.Module]] = []
    if layered:
        layers = layer_list(settings.layer)
        wrapped = adapter.model is not original
        if any(isinstance(la, str) and la == "auto" for la in layers) and not auto_layer_cached(
            adapter.model, x
        ):
            # Choosing the layer takes one dry backward pass; bad targets are refused first.
            with torch.no_grad():
                early = adapter.logits(adapter.call(x), n)
            resolve_targets(
                target, early, task=adapter.task, predict=adapter.predict, class_names=class_names
            )
        resolved = [
            resolve_layer(adapter.model, _layer_name(la, wrapped), x, adapter.trace_forward())
            for la in layers
        ]
        first = capture_pass(
            adapter,
            *resolved[0],
            x,
            settings,
            grad=needs_capture_gradients(layered),
            check=True,
        )
        for extra_name, extra_module in resolved[1:]:
            if settings.reshape == "auto" and is_attention_internal(adapter.model, extra_name):
                capture_pass(adapter, extra_name, extra_module, x, settings, grad=False, check=True)
        layout = first.layout
        layer_name = layer_label([name for name, _module in resolved])
        logits = first.logits
    else:
        with torch.no_grad():
            logits = adapter.logits(adapter.call(x), n)

    targets = resolve_targets(
        target,
        logits,
        task=adapter.task,
        predict=adapter.predict,
        class_names=class_names,
    )
    index = targets.gather_index()
    selected = adapter.scores(logits).gather(1, index)  # (N, K), holds the head's graph
    explained_scores = selected.detach()
    logits = logits.detach()
    if targets.k == 0 and not chunked:
        _warn_no_targets()

    raws: dict[str, torch.Tensor] = {}
    layer_maps: dict[str, dict[str, torch.Tensor]] = {}
    if cams:
        cam_call = CamCall(
            adapter, cams, settings, routed, index, first, resolved, first_index, rows
        )
        first = None  # the call holds the first pass; freed with it
        raws, layer_maps = cam_raws(cam_call)
        del cam_call
    del selected  # frees the graph before the gradient methods run

    conservation: dict[str, torch.Tensor] = {}  # LRP: (N, K) summed relevance per target
    for name in methods:
        if name in GRADIENT_NAMES:
            options = dict(routed[name])
            takes = inspect.signature(_gradient_fn(name)).parameters
            if rows is not None and "internal_batch_size" in takes:
                options.setdefault("internal_batch_size", rows)
            if "first_index" in takes:  # seeded noise follows the input's index in the call
                options["first_index"] = first_index
            raws[name] = _gradient_method(adapter, name, index, settings, options, raws, size)
        elif name in ATTENTION_METHODS:
            # One forward with the attention probabilities captured, K targets per input.
            raws[name] = attention_map(
                adapter.model, adapter.forward, x, index, name, **routed[name]
            )
        elif name in LRP_METHODS:
            # One forward with the rules in place, K targets by one batched backward; the
            # relevance starts from the explained scores (conservation: sums ~ scores).
            raws[name], totals = explain_lrp(
                adapter, x, index, explained_scores, settings.layer, original, **routed[name]
            )
            conservation[name] = totals.masked_fill(~targets.valid, 0)

    valid = targets.valid
    all_valid = not targets.padded
    with torch.no_grad():
        explained = explained_scores
        probabilities = adapter.probabilities(logits).gather(1, index)
        if not all_valid:
            explained, probabilities = explained * valid, probabilities * valid
    results: dict[str, Explanation] = {}
    degenerate_total = 0
    for name in methods:
        uses_layer = is_cam(name) or name == "guided-gradcam"
        raw = raws[name].detach()
        if not all_valid:
            raw = raw * valid.reshape(*valid.shape, *[1] * (raw.dim() - 2)).to(raw.dtype)
        maps, degenerate = to_heatmaps(
            raw,
            size,
            relu=is_cam(name),
            normalize=settings.normalize,
            eps=settings.eps,
            valid=None if all_valid else valid,
        )
        degenerate_total += int(degenerate.sum())
        results[name] = Explanation(
            maps=maps,
            raw=raw,
            targets=targets.indices,
            valid=valid,
            scores=explained,
            probabilities=probabilities,
            degenerate=degenerate,
            method=name,
            layer=layer_name if uses_layer else _lrp_layer(name, settings.layer),
            score=settings.score,
            normalize=settings.normalize,
            single=targets.single,
            class_names=list(class_names) if class_names is not None else None,
            options=dict(routed.get(name, {})),
            layout=layout.describe() if layout is not None and uses_layer else None,
            conservation=conservation.get(name),
            logits=logits,
        )
    for name, per_layer in layer_maps.items():
        if name in results:
            results[name].layer_maps = per_layer
    for name in results:
        if name in CAM_METHODS and not cam_uses_layer(name):
            results[name].layer, results[name].layout = None, None
    if degenerate_total and not chunked:
        _warn_degenerate(results, layer_name)
    return results


def _gradient_method(
    adapter: ModelAdapter,
    name: str,
    index: torch.Tensor,
    settings: Settings,
    options: dict[str, Any],
    raws: dict[str, torch.Tensor],
    size: tuple[int, ...],
) -> torch.Tensor:
    x = adapter.x
    if index.shape[1] == 0:
        return x.new_zeros(x.shape[0], 0, *size)
    fn = _gradient_fn(name)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return adapter.forward(batch)

    if "model" in inspect.signature(fn).parameters:
        # Methods that hook the model's modules (DeepLift, deconvolution) get it too.
        options = {**options, "model": adapter.model}
    maps = fn(forward, x, index, seed=settings.seed, **options)
    if name == "guided-gradcam":
        cam = upsample(raws["gradcam"].clamp_min(0).to(maps.dtype), size)
        maps = maps * cam
    return maps


def _lrp_layer(name: str, layer: str | nn.Module) -> str | None:
    """The layer LRP's relevance was taken at (``None``: the input)."""
    if name not in LRP_METHODS or (isinstance(layer, str) and layer == "auto"):
        return None
    return layer if isinstance(layer, str) else type(layer).__name__


class DegenerateMapsWarning(ExplainWarning):
    """Constant maps were returned as zeros. ``counts``: ``{method: (constant, explained)}``
    maps of the call; ``layer``: the CAM layer named in the message. A caller that batched
    several requests into one call (the explorer) rebuilds each request's own warning from
    its rows' ``degenerate`` flags with :func:`degenerate_message`."""

    def __init__(self, counts: Mapping[str, tuple[int, int]], layer: str | None = None) -> None:
        self.counts = dict(counts)
        self.layer = layer
        super().__init__(degenerate_message(self.counts, layer))

    def __reduce__(self) -> tuple[Any, ...]:  # pickled and copied by its fields, not its text
        return (type(self), (self.counts, self.layer))


def degenerate_message(counts: Mapping[str, tuple[int, int]], layer: str | None) -> str:
    """The text of :class:`DegenerateMapsWarning` for ``{method: (constant, explained)}``."""
    parts = [f"{name}: {count} of {total}" for name, (count, total) in counts.items() if count]
    where = f" at layer {layer!r}" if layer else ""
    return (
        f"constant heatmaps ({'; '.join(parts)}) were returned as zeros and flagged in "
        f"Explanation.degenerate (e.g. a CAM with no positive evidence{where}: try another "
        "layer or target)"
    )


def _warn_degenerate(results: Mapping[str, Explanation], layer: str | None) -> None:
    counts = {
        name: (int(result.degenerate.sum()), int(result.valid.sum()))
        for name, result in results.items()
    }
    warn_user(DegenerateMapsWarning(counts, layer))
