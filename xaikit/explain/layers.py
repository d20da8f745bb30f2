"""Finding the layer to explain: by name, by module, or ``"auto"``.

``"auto"`` is the last module, in execution order, whose output is a spatial map of the input
(:mod:`xaikit.explain.layouts`: ``(N, C, H, W)``, channels-last ``(N, H, W, C)`` or a token
sequence ``(N, P + H*W, C)``; ``(N, C, L)`` for signals) and that explains, checked on one dry
forward and backward pass of one sample:

* **on the score's path**: the gradient of the scores reaches the map's spatial part (not
  only prefix tokens). This rules out a tuple's unused element (PiT), and the output of a
  class-token transformer's last block, whose patch tokens reach the head through nothing:
  there the last block's first norm wins, the tokens that the class token attends to
  (pytorch-grad-cam's documented choice for ViT);
* **run once per forward**: a module shared by two blocks (CoaT's ``crpe``) is skipped;
* **not attention internals**: no module inside an attention module (q / k / v, their norms,
  attention probabilities), nor the attention module itself (a residual branch);
* **not a resampled copy**: adaptive pooling (VGG's ``avgpool`` 7x7) and everything after a
  "logits convolution" (a 1x1 convolution with one channel per class, SqueezeNet) are
  skipped.

Containers and their last child produce the same tensor; the container wins, so the choice
reads as a block name (``features.block3``, ``layer4``), and a residual block wins over the
branches inside it (it finishes after them). Nothing is restricted to ``features``:
torchvision's Swin ends in a ``permute`` outside it, which is the NCHW map.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.hooks import replace_first
from xaikit.explain.layouts import (
    Layout,
    ModelHints,
    is_channels_last_module,
    model_hints,
    read_layout,
)
from xaikit.explain.state import borrowed, model_device


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``xaikit layers``: a module and what it output in a dry run."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int
    order: int  # position in execution order (-1: never ran)
    calls: int = 0  # how many times it ran in one forward pass
    layout: Layout | None = None  # how its output reads as a map of the input (None: not)
    on_path: bool | None = None  # the scores' gradient reaches its map (None: not checked)
    #: "nonzero", "zero" (connected, but every gradient is 0 on this example: a dead ReLU
    #: on a blank input, or only prefix tokens reach the head) or "none" (not connected).
    gradient: str | None = None
    excluded: str | None = field(default=None, compare=False)  # why "auto" passes it over
    output_id: int | None = field(default=None, compare=False, repr=False)  # tensor identity
    passed_id: int | None = field(default=None, compare=False, repr=False)  # what went on


_AUTO_CACHE: WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = WeakKeyDictionary()
#: Module types that compute attention (timm's Attention, WindowAttention, ClassAttn, ...;
#: torch's MultiheadAttention), but not the blocks named after it (ClassAttentionBlock).
_ATTENTION_TYPE = re.compile(r"att(n|ention)", re.IGNORECASE)
_BLOCK_TYPE = re.compile(r"(block|layer|stage)", re.IGNORECASE)
#: Leaf names of attention internals in models whose attention type has another name (XCA).
_ATTENTION_PARTS = frozenset(
    {"q", "k", "v", "qkv", "q_norm", "k_norm", "v_norm", "attn_drop", "softmax", "kv"}
)
#: Top-level containers that hold the whole feature extractor.
_WHOLE_CONTAINERS = frozenset({"features", "stages", "layers", "blocks", "encoder", "trunk"})
_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_ADAPTIVE_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _shape(output: Any) -> tuple[int, ...] | None:
    tensor = _first_tensor(output)
    return tuple(tensor.shape) if tensor is not None else None


def _score_tensor(output: Any) -> torch.Tensor | None:
    """The tensor of scores in a model's output (a tensor, the first of a tuple, ``logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    return _first_tensor(output)


def trace_layers(
    model: nn.Module,
    example: torch.Tensor,
    forward: Callable[[torch.Tensor], Any] | None = None,
    *,
    check_path: bool = True,
) -> list[LayerInfo]:
    """Run one dry forward (and backward) pass on ``example`` and describe every module.

    Rows are in execution order (when each module's forward finished); modules that never
    ran come last with ``order=-1``. Each row says how the output reads as a map of the
    input (``layout``) and whether the scores' gradient reaches that map (``on_path``;
    ``check_path=False`` skips the backward pass). The model's state is borrowed and
    restored. ``forward(example)`` replaces ``model(example)`` for models that take more
    than one input (it must run ``model``).
    """
    return trace(model, example, forward, check_path=check_path)[0]


def trace(
    model: nn.Module,
    example: torch.Tensor,
    forward: Callable[[torch.Tensor], Any] | None = None,
    *,
    check_path: bool = True,
) -> tuple[list[LayerInfo], tuple[int, ...] | None]:
    finished: dict[str, int] = {}
    outputs: dict[str, list[torch.Tensor]] = {}
    linear_inputs: dict[str, torch.Tensor] = {}
    originals: dict[str, int] = {}  # id of the tensor each module returned (last call)
    handles = []

    def recorder(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if isinstance(module, nn.Linear) and inputs and isinstance(inputs[0], torch.Tensor):
                linear_inputs[name] = inputs[0]
            # Re-inserting moves the name to the end: the order is when it last finished.
            finished.pop(name, None)
            finished[name] = len(finished)
            tensor = _first_tensor(output)
            if tensor is None:
                return None
            originals[name] = id(tensor)
            if not (tensor.requires_grad and tensor.is_floating_point()):
                outputs.setdefault(name, []).append(tensor)
                return None
            # Pass on a copy, as a capture passes on its leaf: the gradient then counts only
            # what reads the output after this module ran (CoaT's parallel blocks hand back
            # an input that was consumed before them). A copy, not a view: an in-place ReLU
            # after the module (DenseNet's) must not cut the copy from the graph.
            passed = tensor.clone()
            outputs.setdefault(name, []).append(passed)
            return replace_first(output, passed)

        return hook

    input_size = tuple(example.shape[2:])
    hints = model_hints(model, input_size)
    modules = dict(model.named_modules())
    try:
        for name, module in modules.items():
            if name:
                handles.append(module.register_forward_hook(recorder(name)))
        with borrowed(model):
            example = example.to(model_device(model))
            if check_path and example.is_floating_point():
                example = example.detach().requires_grad_(True)
                output = model(example) if forward is None else forward(example)
            else:
                with torch.no_grad():
                    output = model(example) if forward is None else forward(example)
            scores = _score_tensor(output)
            on_path = {}
            if check_path:
                source = _gradient_source(scores, outputs, linear_inputs, modules, originals)
                on_path = _path_check(source, outputs, input_size, hints)
    finally:
        for handle in handles:
            handle.remove()
    output_shape = tuple(scores.shape) if scores is not None else None
    rows = []
    order = {name: i for i, name in enumerate(finished)}
    for name, module in modules.items():
        if not name:
            continue
        tensors = outputs.get(name, [])
        shape = tuple(tensors[-1].shape) if tensors else None
        layout = None
        if shape is not None:
            layout = read_layout(
                shape,
                input_size,
                hints,
                channels_last=is_channels_last_module(module, shape),
            )
        params = sum(p.numel() for p in module.parameters())
        rows.append(
            LayerInfo(
                name,
                type(module).__name__,
                shape,
                params,
                order.get(name, -1),
                calls=len(tensors),
                layout=layout,
                on_path=(on_path[name] == "nonzero") if name in on_path else None,
                gradient=on_path.get(name),
                output_id=originals.get(name),
                passed_id=id(tensors[-1]) if tensors else None,
            )
        )
    ran = sorted((r for r in rows if r.order >= 0), key=lambda r: r.order)
    return ran + [r for r in rows if r.order < 0], output_shape


def _gradient_source(
    scores: torch.Tensor | None,
    outputs: dict[str, list[torch.Tensor]],
    linear_inputs: dict[str, torch.Tensor],
    modules: dict[str, nn.Module],
    originals: dict[str, int],
) -> torch.Tensor | None:
    """What the path check backpropagates from: the scores, or, when the classifier that
    produced them is zero-initialized (timm's Mixer, ResMLP, Hiera; torchvision's ViT) and so
    passes no gradient at all, the classifier's input."""
    if scores is None:
        return None
    # The tensors that are the scores: what the model returned, and, down the containers
    # that handed it on (each module passes on a copy), what each one received.
    same = {id(scores)}
    changed = True
    while changed:
        changed = False
        for name, calls in outputs.items():
            if calls and id(calls[-1]) in same and originals.get(name) not in same:
                same.add(originals[name])
                changed = True
    for name, tensor in linear_inputs.items():
        produced = outputs.get(name)
        if produced and id(produced[-1]) in same:
            weight = getattr(modules[name], "weight", None)
            if isinstance(weight, torch.Tensor) and not weight.detach().any():
                return tensor
    return scores


def _path_check(
    scores: torch.Tensor | None,
    outputs: dict[str, list[torch.Tensor]],
    input_size: tuple[int, ...],
    hints: ModelHints,
) -> dict[str, str]:
    """For each module's last output that reads as a map: does the scores' gradient reach
    its spatial part (``"nonzero"``, ``"zero"``, ``"none"``)? One backward pass for all."""
    if scores is None or not scores.requires_grad:
        return {}
    scores = scores.reshape(scores.shape[0], -1)
    names, tensors, prefixes = [], [], []
    reached: dict[str, str] = {}
    for name, calls in outputs.items():
        tensor = calls[-1]
        if not tensor.is_floating_point():
            continue
        if not tensor.requires_grad:
            reached[name] = "none"  # detached inside the model, or a constant
            continue
        layout = read_layout(tuple(tensor.shape), input_size, hints)
        if layout is None:
            layout = read_layout(tuple(tensor.shape), input_size, hints, channels_last=True)
        if layout is None:
            continue
        names.append(name)
        tensors.append(tensor)
        prefixes.append(layout.prefix)
    if not tensors:
        return reached
    # Random signs weight the scores, so no symmetry cancels (softmax outputs sum to 1).
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(scores.shape, generator=generator).to(scores)
    grads = torch.autograd.grad((scores * weights).sum(), tensors, allow_unused=True)
    for name, grad, prefix in zip(names, grads, prefixes):
        if grad is None:
            reached[name] = "none"
            continue
        part = grad[:, prefix:] if prefix else grad
        reached[name] = "nonzero" if bool(part.abs().sum() > 0) else "zero"
    return reached


def _is_logits_conv(module: nn.Module, num_outputs: int | None, classifier: bool) -> bool:
    """A 1x1 convolution, or a linear layer over tokens, with one channel per class: its
    output may be a map of class scores (SqueezeNet's classifier, VOLO's token-labelling
    head), not of features (:func:`explain_choices` also asks that only maps of that width
    follow it). A linear layer counts only beside a linear classifier of the same width
    (``classifier``): in a headless model the output width is the features' own."""
    if num_outputs is None:
        return False
    if isinstance(module, nn.Linear):
        return classifier and module.out_features == num_outputs
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d))
        and all(k == 1 for k in module.kernel_size)
        and module.out_channels == num_outputs
    )


def _is_attention(module: nn.Module) -> bool:
    kind = type(module).__name__
    return isinstance(module, nn.MultiheadAttention) or (
        bool(_ATTENTION_TYPE.search(kind)) and not _BLOCK_TYPE.search(kind)
    )


def _attention_names(modules: dict[str, nn.Module]) -> set[str]:
    """Names of attention modules, everything inside them, and attention-part leaves."""
    roots = [name for name, module in modules.items() if name and _is_attention(module)]
    inside = {
        name
        for name in modules
        if name and any(name == root or name.startswith(root + ".") for root in roots)
    }
    inside |= {name for name in modules if name.rsplit(".", 1)[-1] in _ATTENTION_PARTS}
    return inside


def is_attention_internal(model: nn.Module, name: str) -> bool:
    """Whether module ``name`` is an attention module, inside one, or an attention part.

    The same rule as :func:`_attention_names`, walking only ``name``'s ancestors: it runs on
    every explanation, so it must not scan the whole model."""
    if not name or name.rsplit(".", 1)[-1] in _ATTENTION_PARTS:
        return bool(name)
    parts = name.split(".")
    module = model
    for part in parts:
        module = module.get_submodule(part)
        if _is_attention(module):
            return True
    return False


def explain_choices(
    rows: list[LayerInfo], model: nn.Module, num_outputs: int | None
) -> list[LayerInfo]:
    """``rows`` with ``excluded`` set to why ``"auto"`` passes over each map-shaped output."""
    modules = dict(model.named_modules())
    attention = _attention_names(modules)
    classifier = any(
        isinstance(modules[r.name], nn.Linear)
        and r.output_shape is not None
        and len(r.output_shape) == 2
        and r.output_shape[-1] == num_outputs
        for r in rows
    )
    # A map of class scores comes after every map of features: only parameter-free layers
    # of its width (a ReLU, then pooling) follow it. `features_after[i]`: a map of features
    # (another width, or a layer with weights of its own) comes after row i.
    features_after = [False] * (len(rows) + 1)
    for i in range(len(rows) - 1, -1, -1):
        r = rows[i]
        feature = (
            r.layout is not None
            and r.gradient != "none"
            and (
                r.layout.channels != num_outputs
                or any(True for _ in modules[r.name].parameters(recurse=False))
            )
        )
        features_after[i] = features_after[i + 1] or feature
    after_logits = False
    marked = []
    for index, row in enumerate(rows):
        reason = None
        module = modules[row.name]
        if row.order < 0:
            reason = "never ran"
        elif after_logits:
            reason = "after a map of class scores"
        elif (
            row.layout is not None
            and not features_after[index + 1]
            and _is_logits_conv(module, num_outputs, classifier)
        ):
            # A squeeze-excitation 1x1 conv on (N, C, 1, 1), or the head, is no logits map.
            reason = "a map of class scores (logits)"
            after_logits = True
        elif row.layout is None:
            reason = "not a map of the input"
        elif row.name in attention:
            reason = "attention internals"
        elif isinstance(module, _ADAPTIVE_POOLS):
            reason = "adaptive pooling (a resampled copy)"
        elif isinstance(module, _PASS_THROUGH):
            reason = "dropout (passes its input on)"
        elif row.calls > 1:
            reason = f"runs {row.calls} times per forward"
        elif row.gradient == "none":
            reason = "its map does not reach the scores"
        elif row.gradient == "zero":
            reason = "zero gradient on its map"
        marked.append(
            LayerInfo(
                row.name,
                row.type,
                row.output_shape,
                row.parameters,
                row.order,
                row.calls,
                row.layout,
                row.on_path,
                row.gradient,
                reason,
                row.output_id,
                row.passed_id,
            )
        )
    return marked


def auto_layer_cached(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether :func:`auto_layer` already knows the choice for inputs like ``example``."""
    return tuple(example.shape[1:]) in _AUTO_CACHE.get(model, {})


def auto_layer(
    model: nn.Module,
    example: torch.Tensor,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> str:
    """The name of the default target layer for inputs shaped like ``example``.

    The result is cached per model and input shape, so only the first call pays for the
    dry forward and backward pass (on one sample). ``forward``: see :func:`trace_layers`.
    """
    key = tuple(example.shape[1:])
    cached = _AUTO_CACHE.setdefault(model, {})
    if key in cached:
        return cached[key]
    best = choose_layer(*trace(model, example[:1], forward), model)
    if best is None:
        raise XaikitConfigError(
            f"no layer of this model outputs a spatial map that reaches the scores for inputs "
            f"of shape {tuple(example.shape)}; pass layer=<name> (see `xaikit layers`)"
        )
    cached[key] = best
    return best


def choose_layer(
    rows: list[LayerInfo], output_shape: tuple[int, ...] | None, model: nn.Module
) -> str | None:
    """The ``"auto"`` choice among traced ``rows`` (``None``: no layer qualifies)."""
    num_outputs = output_shape[-1] if output_shape else None
    marked = explain_choices(rows, model, num_outputs)
    candidates = [r for r in marked if r.excluded is None]
    if not candidates:
        # Every gradient is zero on this example (a blank input through ReLUs, a model that
        # ignores its input): the connected maps, then any map; explain flags the result.
        for fallback in ("zero gradient on its map", "its map does not reach the scores"):
            candidates = [r for r in marked if r.excluded == fallback]
            if candidates:
                break
    if not candidates:
        return None
    # The last to finish; a container finishes after its last child with the same output.
    best = candidates[-1]
    # A whole-network container (`features`, timm's `stages`) reads better as its last block.
    while best.name in _WHOLE_CONTAINERS:
        # The child that handed on the very tensor (its gradient may read 0 where an
        # in-place ReLU after the container rewrote the container's copy: the same map).
        inside = [
            r
            for r in marked
            if r.excluded in (None, "zero gradient on its map")
            and r.name.startswith(best.name + ".")
            and r.name.count(".") == best.name.count(".") + 1
            and r.passed_id == best.output_id
        ]
        if not inside:
            break
        best = inside[-1]
    return best.name


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(
    model: nn.Module,
    layer: str | nn.Module,
    example: torch.Tensor | None = None,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> tuple[str, nn.Module]:
    """Turn ``"auto"``, a dotted name or a module into ``(name, module)``.

    ``example`` (and ``forward`` for several-input models, see :func:`trace_layers`) are
    needed for ``"auto"`` only.

    Raises:
        XaikitConfigError: an unknown name (the message lists the closest valid names) or a
            module that is not part of ``model``.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise XaikitConfigError("the given layer module is not part of this model")
    if layer == "auto":
        if example is None:
            raise XaikitConfigError("layer='auto' needs an example input to trace the model")
        name = auto_layer(model, example, forward)
        return name, model.get_submodule(name)
    if isinstance(layer, str) and layer:
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            pass
    names = layer_names(model)
    close = difflib.get_close_matches(str(layer), names, n=5, cutoff=0.4)
    hint = (
        f"closest: {', '.join(close)}" if close else f"valid names include: {', '.join(names[-8:])}"
    )
    raise XaikitConfigError(
        f"model has no layer named {layer!r}; {hint} (`xaikit layers --model M` lists all)"
    )
