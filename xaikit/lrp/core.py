"""Layer-wise relevance propagation of ``K`` targets per input from one forward pass.

:func:`lrp` runs the model once with every layer's rule in place (:mod:`xaikit.lrp.rules`:
each rule's output has the layer's exact value and the rule as its gradient) and answers the
``K`` targets of every input by one batched vector-Jacobian product over ``K`` output
relevances (``is_grads_batched=True``, as :func:`xaikit.explain.engine.layer_gradients`
does for CAMs). Target ``k`` of input ``n`` starts with relevance ``R = score[n, k]`` (the
explained logit, or the value given as ``start``) on its output and zero elsewhere, so that
``sum(input relevance) ~ score`` when the rules conserve relevance (no biases, z+ or a tiny
epsilon; biases and stabilizers absorb the rest): :attr:`Relevance.total` reports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from xaikit.errors import XaikitConfigError
from xaikit.lrp.canonizers import plan
from xaikit.lrp.composites import Composite, box_from_normalization, make_composite
from xaikit.lrp.rules import DEFAULT_STABILIZER

#: Options of ``explain(..., method="lrp", **options)``.
LRP_OPTIONS: tuple[str, ...] = (
    "composite",
    "canonize",
    "epsilon",
    "gamma",
    "stabilizer",
    "low",
    "high",
    "normalization",
)


@dataclass
class Relevance:
    """The relevance of ``K`` targets of ``N`` inputs at the input or at a layer.

    Attributes:
        relevance: ``(N, K, C, *S)`` relevance per channel and position (at the input, or at
            the output of ``layer``).
        scores: ``(N, K)`` the relevance each target started with (the explained scores).
        layer: the layer's name, ``None`` at the input.
    """

    relevance: Tensor
    scores: Tensor
    layer: str | None = None

    @property
    def map(self) -> Tensor:
        """``(N, K, *S)``: relevance summed over channels (the conserving reduction)."""
        return self.relevance.sum(dim=2)

    @property
    def channels(self) -> Tensor:
        """``(N, K, C)``: relevance summed over the positions of each channel."""
        return self.relevance.flatten(start_dim=3).sum(dim=3)

    @property
    def total(self) -> Tensor:
        """``(N, K)``: the summed relevance, to compare with :attr:`scores` (conservation)."""
        return self.relevance.flatten(start_dim=2).sum(dim=2)


def _as_index(target: Any, logits: Tensor) -> Tensor:
    n = logits.shape[0]
    if target is None or (isinstance(target, str) and target == "predicted"):
        return logits.argmax(dim=1, keepdim=True)
    if isinstance(target, str):
        raise XaikitConfigError(
            f"LRP targets here are class indices or 'predicted', got {target[:40]!r}; for "
            "'positive', 'all', top-k or class names use xaikit.explain(..., method='lrp')"
        )
    index = torch.as_tensor(target, device=logits.device)
    if index.is_floating_point() or index.dtype == torch.bool:
        raise XaikitConfigError(f"LRP targets must be class indices, got dtype {index.dtype}")
    index = index.long()
    if index.dim() == 0:
        index = index.expand(n, 1)
    elif index.dim() == 1:
        index = index.unsqueeze(1) if index.shape[0] == n else index.unsqueeze(0).expand(n, -1)
    if index.dim() != 2 or index.shape[0] != n:
        raise XaikitConfigError(
            f"LRP targets must be one index, (N,) or (N, K) indices; got {tuple(index.shape)} "
            f"for {n} inputs"
        )
    outputs = logits.shape[1]
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= outputs):
        raise XaikitConfigError(
            f"LRP target out of range for a model with {outputs} outputs: {index.tolist()}"
        )
    return index


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise XaikitConfigError("the layer module given is not part of the model")
    if layer not in modules:
        close = [n for n in modules if n and (layer in n or n in layer)][:5]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise XaikitConfigError(f"model has no layer {layer!r}{hint}; see `xaikit layers`")
    return layer, modules[layer]


@contextlib.contextmanager
def _capture(module: nn.Module, name: str) -> Iterator[list[Tensor]]:
    seen: list[Tensor] = []

    def hook(mod: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise XaikitConfigError(f"layer {name!r} does not return one tensor; choose another")
        seen.append(output)

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def _batched_vjp(out: Tensor, wrt: Tensor, grads: Tensor) -> Tensor:
    """``(K, *out.shape)`` output relevances -> ``(N, K, *wrt.shape[1:])`` relevances."""
    k = grads.shape[0]
    if k == 1:
        (g,) = torch.autograd.grad(out, wrt, grads[0], allow_unused=True)
        g = torch.zeros_like(wrt) if g is None else g
        return g.unsqueeze(1)
    try:
        (g,) = torch.autograd.grad(
            out, wrt, grads, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError:  # an operation without a batching rule: K backward passes
        parts = [
            torch.autograd.grad(out, wrt, grads[j], retain_graph=True, allow_unused=True)[0]
            for j in range(k)
        ]
        g = None if parts[0] is None else torch.stack(parts)
    if g is None:
        g = torch.zeros(k, *wrt.shape, dtype=wrt.dtype, device=wrt.device)
    return g.movedim(0, 1)


def lrp(
    model: nn.Module,
    x: Tensor,
    target: Any = None,
    *,
    composite: str | Composite | Mapping[Any, Any] = "epsilon-plus",
    canonize: bool = True,
    layer: str | nn.Module | None = None,
    forward: Callable[[Tensor], Tensor] | None = None,
    start: Tensor | None = None,
    epsilon: float = DEFAULT_STABILIZER,
    gamma: float = 0.25,
    stabilizer: float = DEFAULT_STABILIZER,
    low: Tensor | float | None = None,
    high: Tensor | float | None = None,
    normalization: Mapping[str, Any] | None = None,
) -> Relevance:
    """LRP relevance of ``K`` targets per input, from one forward and one batched backward.

    Args:
        model: the network; borrowed for the call (eval mode, frozen parameters), every
            parameter and buffer left bit-identical.
        x: ``(N, C, *S)`` inputs (not modified).
        target: class indices: one, ``(N,)``, or ``(N, K)``; ``None``: the top class.
        composite: a built-in composite name (:data:`~xaikit.lrp.composites.COMPOSITES`),
            a :class:`~xaikit.lrp.composites.Composite`, or a mapping from layer names /
            types to rules (a user composite).
        canonize: merge each BatchNorm into the convolution / linear layer before it (an
            error names a BatchNorm that cannot be merged); ``False`` passes relevance
            through BatchNorm unchanged. Known residual blocks are always split.
        layer: a layer name or module: return the relevance at its output instead of the
            input's, ``(N, K, C, h, w)``.
        forward: ``forward(x) -> (N, num_outputs)`` logits running ``model`` once (default
            ``model`` itself); the relevance starts on its outputs.
        start: ``(N, K)`` initial relevance of each target (default: its logit).
        epsilon, gamma, stabilizer: the rules' parameters (see :func:`make_composite`).
        low, high, normalization: z-box bounds of ``epsilon-gamma-box`` (``normalization``
            ``{"mean", "std"}`` gives those of ``[0, 1]`` pixels; without any, ``[0, 1]``
            when the inputs lie in it).

    Returns:
        :class:`Relevance` with ``relevance`` ``(N, K, C, *S)`` (input) or ``(N, K, C, h, w)``
        (layer), in the input's dtype, on its device.

    Raises:
        XaikitConfigError: an unknown composite or rule, a model part LRP cannot explain
            (named), bad targets or a bad layer.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise XaikitConfigError(f"LRP inputs must be a floating point (N, C, ...) tensor; {got}")
    key = composite.replace("_", "-").lower() if isinstance(composite, str) else None
    if key == "epsilon-gamma-box" and (low is None or high is None):
        low, high = _box(x, low, high, normalization)
    comp = make_composite(
        composite, epsilon=epsilon, gamma=gamma, stabilizer=stabilizer, low=low, high=high
    )
    layer_name: str | None = None
    layer_module: nn.Module | None = None
    if layer is not None:
        layer_name, layer_module = _resolve_layer(model, layer)
    # Imported here: xaikit.explain's engine imports this module.
    from xaikit.explain.state import borrowed

    run = forward if forward is not None else model
    with borrowed(model):
        the_plan = plan(model, comp, canonize=canonize, stabilizer=stabilizer)
        leaf = x.detach().clone().requires_grad_(True)
        with contextlib.ExitStack() as stack:
            seen = stack.enter_context(_capture(layer_module, layer_name)) if layer_module else []
            stack.enter_context(the_plan.applied())
            out = run(leaf)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise XaikitConfigError(f"LRP needs (N, num_outputs) logits, the model gave {shape}")
        index = _as_index(target, out.detach())
        n, k = index.shape
        scores = out.detach().gather(1, index) if start is None else start.detach().to(out)
        if layer_module is not None:
            if len(seen) != 1:
                raise XaikitConfigError(
                    f"layer {layer_name!r} ran {len(seen)} times in one forward pass; LRP at a "
                    "layer needs one that runs once"
                )
            wrt = seen[0]
        else:
            wrt = leaf
        if k == 0:
            return Relevance(wrt.new_zeros(n, 0, *wrt.shape[1:]).detach(), scores, layer_name)
        if not out.requires_grad or not wrt.requires_grad:
            raise XaikitConfigError(
                "the model's outputs do not depend on the explained tensor through "
                "differentiable operations"
            )
        grads = out.new_zeros(k, *out.shape)
        grads.scatter_(2, index.t().unsqueeze(2), scores.t().unsqueeze(2))
        relevance = _batched_vjp(out, wrt, grads)
    return Relevance(relevance.detach(), scores, layer_name)


def relevance_at(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    target: Any = None,
    composite: str | Composite | Mapping[Any, Any] = "epsilon-plus",
    **options: Any,
) -> Relevance:
    """LRP relevance at the output of ``layer``: ``.relevance`` ``(N, K, C, h, w)`` and
    ``.channels`` ``(N, K, C)`` (per-channel sums). See :func:`lrp` for the options."""
    return lrp(model, x, target, composite=composite, layer=layer, **options)


def _box(
    x: Tensor,
    low: Tensor | float | None,
    high: Tensor | float | None,
    normalization: Mapping[str, Any] | None,
) -> tuple[Tensor | float, Tensor | float]:
    box = box_from_normalization(normalization, x.shape[1], x.dim())
    if box is not None:
        lo, hi = box
        return (lo if low is None else low), (hi if high is None else high)
    lo_v = 0.0 if low is None else low
    hi_v = 1.0 if high is None else high
    lo_t = torch.as_tensor(lo_v, dtype=x.dtype, device=x.device)
    hi_t = torch.as_tensor(hi_v, dtype=x.dtype, device=x.device)
    if bool((x < lo_t).any()) or bool((x > hi_t).any()):
        raise XaikitConfigError(
            "composite 'epsilon-gamma-box' needs the input's bounds: the inputs leave [0, 1], "
            "so pass normalization={'mean': [...], 'std': [...]} (the bounds of [0, 1] pixels "
            "after it) or low= and high="
        )
    return lo_v, hi_v


def explain_lrp(
    adapter: Any,
    x: Tensor,
    index: Tensor,
    scores: Tensor,
    layer: Any = "auto",
    original: nn.Module | None = None,
    **options: Any,
) -> tuple[Tensor, Tensor]:
    """The engine's entry point (:mod:`xaikit.explain.engine`): ``(N, K, *S)`` relevance
    summed over channels (at the input, or at ``layer``'s output) and its ``(N, K)`` totals.

    ``adapter`` is the engine's :class:`~xaikit.explain.adapter.ModelAdapter`; the relevance
    starts from the explained ``scores`` ``(N, K)`` (logits, or probabilities with
    ``score="prob"``) placed on the targets' logits. ``layer``: ``"auto"`` (the input), a
    name or module, or a list of one; ``original``: the model as the user passed it (a
    ``DataParallel`` wrapper's layer names start with ``module.``).
    """
    unknown = sorted(set(options) - set(LRP_OPTIONS))
    if unknown:
        raise XaikitConfigError(f"unknown LRP option(s) {', '.join(unknown)}")
    if isinstance(layer, (list, tuple)):
        if len(layer) != 1:
            raise XaikitConfigError(f"LRP explains at one layer, got {len(layer)}: {layer!r}")
        layer = layer[0]
    if isinstance(layer, str) and layer == "auto":
        layer = None
    wrapped = original is not None and adapter.model is not original
    if wrapped and isinstance(layer, str) and layer.startswith("module."):
        layer = layer[len("module.") :]

    def forward(batch: Tensor) -> Tensor:
        return adapter.logits(adapter.call(batch), batch.shape[0])

    result = lrp(adapter.model, x, index, forward=forward, start=scores, layer=layer, **options)
    return result.map, result.total
