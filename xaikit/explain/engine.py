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
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xaikit._names import GRADIENT_NAMES, SCORE_CAM_METHODS
from xaikit.errors import XaikitConfigError
from xaikit.explain.adapter import ExplainWarning, InputKey, ModelAdapter, OutputSelector
from xaikit.explain.attention import ATTENTION_METHODS, attention_map, options_of
from xaikit.explain.cam import CAM_METHODS
from xaikit.explain.hooks import Capture
from xaikit.explain.layers import auto_layer_cached, resolve_layer
from xaikit.explain.layouts import (
    Layout,
    Reshape,
    check_reshape,
    is_channels_last_module,
    layout_for,
    model_hints,
    to_map,
)
from xaikit.explain.postprocess import DEFAULT_EPS, check_normalize, to_heatmaps, upsample
from xaikit.explain.result import Explanation
from xaikit.explain.scorecam import DEFAULT_BATCH_SIZE, FILL_RULES, score_cam
from xaikit.explain.state import borrowed
from xaikit.explain.targets import resolve_targets
from xaikit.warn import warn_user

#: The built-in method names (methods added to ``CAM_METHODS`` later are accepted too).
METHODS = (*CAM_METHODS, *SCORE_CAM_METHODS, *GRADIENT_NAMES, *ATTENTION_METHODS)


def method_names() -> tuple[str, ...]:
    """Every method name ``explain`` accepts now, registered CAM methods included."""
    return (*CAM_METHODS, *SCORE_CAM_METHODS, *GRADIENT_NAMES, *ATTENTION_METHODS)


def is_cam(name: str) -> bool:
    """A method of the CAM family (a map at the target layer, ReLU applied for display)."""
    return name in CAM_METHODS or name in SCORE_CAM_METHODS


#: Options of the Score-CAM methods (the others go to the gradient methods).
SCORE_CAM_OPTIONS = {"scorecam": ("batch_size",), "scorecam-fast": ("batch_size", "top_k", "fill")}


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
    options: dict[str, Any] = field(default_factory=dict)


def check_methods(method: str | Sequence[str]) -> list[str]:
    """The requested method names, validated and without duplicates (order kept)."""
    names = [method] if isinstance(method, str) else list(method)
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
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("seed",)
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
        else:
            accepted = set(SCORE_CAM_OPTIONS.get(m, ()))
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
            return _run(adapter, methods, target, settings, routed, class_names, model)


def _run(
    adapter: ModelAdapter,
    methods: list[str],
    target: Any,
    settings: Settings,
    routed: dict[str, dict[str, Any]],
    class_names: Sequence[str] | None,
    original: nn.Module,
) -> dict[str, Explanation]:
    x = adapter.x
    n = x.shape[0]
    size = tuple(x.shape[2:])
    cams = [m for m in methods if is_cam(m)]
    if "guided-gradcam" in methods and "gradcam" not in cams:
        cams.append("gradcam")  # computed for Guided Grad-CAM, not returned on its own
    needs_grads = any(m in CAM_METHODS and CAM_METHODS[m].needs_gradients for m in cams)

    layer_name: str | None = None
    activations: torch.Tensor | None = None
    layout: Layout | None = None
    tuple_output = False
    if cams:
        layer = _layer_name(settings.layer, adapter.model is not original)
        if isinstance(layer, str) and layer == "auto" and not auto_layer_cached(adapter.model, x):
            # Choosing the layer takes one dry backward pass; bad targets are refused first.
            with torch.no_grad():
                early = adapter.logits(adapter.call(x), n)
            resolve_targets(
                target, early, task=adapter.task, predict=adapter.predict, class_names=class_names
            )
        layer_name, module = resolve_layer(adapter.model, layer, x, adapter.trace_forward())
        with Capture(adapter.model, {layer_name: module}, grad=needs_grads) as capture:
            args, kwargs = adapter.inputs.with_input(x)
            output = capture.run(*args, **kwargs)
        activations = capture.activations[layer_name]
        tuple_output = layer_name in capture.tuples
        # Decided before any backward pass: a layer that is no map of the input is refused.
        layout = layout_for(
            layer_name,
            tuple(activations.shape),
            size,
            model_hints(adapter.model, size),
            settings.reshape,
            sample=activations,
            channels_last=is_channels_last_module(module, tuple(activations.shape)),
        )
        if capture.calls.get(layer_name, 1) > 1:
            warn_user(
                f"layer {layer_name!r} ran {capture.calls[layer_name]} times in one forward "
                "pass (a shared module); the last call is explained. Choose a layer that runs "
                "once (see `xaikit layers`)",
                ExplainWarning,
            )
        logits = adapter.logits(output, n)
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
    if targets.k == 0:
        warn_user(
            "no targets to explain (e.g. target='positive' and the model predicts no label "
            "for any input); the maps have K = 0",
            ExplainWarning,
        )

    raws: dict[str, torch.Tensor] = {}
    if cams and activations is not None:
        gradients = None
        if needs_grads and targets.k > 0:
            gradients = layer_gradients(selected, activations, layer_name or "", tuple_output)
            gradients = to_map(gradients, layout, lead=2) if layout is not None else gradients
        acts = activations.detach()
        acts = to_map(acts, layout) if layout is not None else acts
        for name in cams:
            if name in CAM_METHODS:
                if targets.k == 0:
                    raws[name] = acts.new_zeros(n, 0, *acts.shape[2:])
                    continue
                raws[name] = CAM_METHODS[name].map(acts, gradients, targets.k)
            else:
                raws[name] = _score_cam(adapter, name, acts, index, settings, routed[name])
    del selected  # frees the graph before the gradient methods run

    for name in methods:
        if name in GRADIENT_NAMES:
            raws[name] = _gradient_method(adapter, name, index, settings, routed[name], raws, size)
        elif name in ATTENTION_METHODS:
            # One forward with the attention probabilities captured, K targets per input.
            raws[name] = attention_map(
                adapter.model, adapter.forward, x, index, name, **routed[name]
            )

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
            layer=layer_name if uses_layer else None,
            score=settings.score,
            normalize=settings.normalize,
            single=targets.single,
            class_names=list(class_names) if class_names is not None else None,
            options=dict(routed.get(name, {})),
            layout=layout.describe() if layout is not None and uses_layer else None,
        )
    if degenerate_total:
        _warn_degenerate(results, layer_name)
    return results


def _score_cam(
    adapter: ModelAdapter,
    name: str,
    activations: torch.Tensor,
    index: torch.Tensor,
    settings: Settings,
    options: dict[str, Any],
) -> torch.Tensor:
    batch_size = options.get("batch_size", DEFAULT_BATCH_SIZE)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise XaikitConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if index.shape[1] == 0:
        return activations.new_zeros(index.shape[0], 0, *activations.shape[2:])
    top_k = None
    fill = "mean"
    if name == "scorecam-fast":
        channels = activations.shape[1]
        top_k = options.get("top_k", max(1, channels // 8))
        fill = options.get("fill", "mean")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise XaikitConfigError(f"top_k must be a positive integer, got {top_k!r}")
        if fill not in FILL_RULES:
            raise XaikitConfigError(f"fill must be one of {', '.join(FILL_RULES)}; got {fill!r}")
    return score_cam(
        adapter.forward,
        adapter.x,
        activations,
        index,
        batch_size=batch_size,
        top_k=top_k,
        fill=fill,
        quiet=settings.quiet,
    )


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

    maps = fn(forward, x, index, seed=settings.seed, **options)
    if name == "guided-gradcam":
        cam = upsample(raws["gradcam"].clamp_min(0).to(maps.dtype), size)
        maps = maps * cam
    return maps


def _warn_degenerate(results: Mapping[str, Explanation], layer: str | None) -> None:
    parts = []
    for name, result in results.items():
        count = int(result.degenerate.sum())
        if count:
            total = int(result.valid.sum())
            parts.append(f"{name}: {count} of {total}")
    where = f" at layer {layer!r}" if layer else ""
    warn_user(
        f"constant heatmaps ({'; '.join(parts)}) were returned as zeros and flagged in "
        f"Explanation.degenerate (e.g. a CAM with no positive evidence{where}: try another "
        "layer or target)",
        ExplainWarning,
    )
