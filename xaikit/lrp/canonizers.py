"""Canonizers: put a model in the form LRP rules expect, for one call, and give it back.

* **BatchNorm merging** (zennit's ``SequentialMergeBatchNorm``; Montavon et al., 2019,
  section 10.3; Kohlbrenner et al., 2020): a BatchNorm that directly follows a convolution or
  linear layer is folded into it, ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) *
  gamma / sqrt(var + eps) + beta``, and the BatchNorm becomes the identity. The merged
  parameters are *new tensors* used by the layer's rule for the call; the module's own
  parameters and buffers are never written, so they are bit-identical afterwards, exception
  or not. (zennit writes the merged values into the parameters and makes the BatchNorm
  compute ``x / sqrt(1 + eps)``; here it is exactly the identity, so the canonized model
  computes exactly the original function up to float rounding of the fold.)
* **Residual splitting** (zennit's ``ResNetCanonizer``): the addition of torchvision's
  ``BasicBlock`` / ``Bottleneck`` and of :class:`xaikit.zoo.ResidualBlock` is done by the
  :class:`~xaikit.lrp.rules.Norm` rule, so its relevance is split in proportion to the two
  summands (``R_a = a / (a + b) * R``).
* **Refusal**: what the rules cannot explain raises :class:`~xaikit.errors.XaikitConfigError`
  naming the module: attention, layers with weights but no rule (LayerNorm, embeddings,
  recurrent layers, transposed convolutions), a BatchNorm not preceded by a convolution or
  linear layer (with ``canonize=True``), and, seen during the forward pass, any addition,
  product or matrix product of two computed tensors (an unknown residual or gating module).

Everything here is applied by overriding ``forward`` on module instances for the duration
of :meth:`Plan.applied` (the instance attribute is deleted afterwards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from xaikit.errors import XaikitConfigError
from xaikit.lrp.composites import ACTIVATIONS, BATCHNORMS, LINEARS, Composite
from xaikit.lrp.rules import DEFAULT_STABILIZER, Layer, Rule, carrier, reroute, stabilize
from xaikit.zoo.blocks import ResidualBlock

_MISSING = object()


def _residual_types() -> tuple[type[nn.Module], ...]:
    types: list[type[nn.Module]] = [ResidualBlock]
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # pragma: no cover - torchvision is optional
        return tuple(types)
    return (*types, BasicBlock, Bottleneck)


def residual_sum(a: Tensor, b: Tensor, stabilizer: float = DEFAULT_STABILIZER) -> Tensor:
    """``a + b`` whose relevance splits by :class:`~xaikit.lrp.rules.Norm`:
    ``R_a = a * R / stabilize(a + b)``, ``R_b = b * R / stabilize(a + b)``; same shapes."""
    z = carrier(a, a.detach(), a.detach()) + carrier(b, b.detach(), b.detach())
    return reroute(z, z / stabilize(z.detach(), stabilizer))


Split = Callable[[Tensor, Tensor], Tensor]


def _basic_block(block: nn.Module, x: Tensor, split: Split) -> Tensor:
    # torchvision.models.resnet.BasicBlock.forward with the addition split.
    identity = x
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if block.downsample is not None:
        identity = block.downsample(x)
    return block.relu(split(identity, out))


def _bottleneck(block: nn.Module, x: Tensor, split: Split) -> Tensor:
    # torchvision.models.resnet.Bottleneck.forward with the addition split.
    identity = x
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    if block.downsample is not None:
        identity = block.downsample(x)
    return block.relu(split(identity, out))


def _zoo_block(block: nn.Module, x: Tensor, split: Split) -> Tensor:
    # xaikit.zoo.blocks.ResidualBlock.forward with the addition split.
    out = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))
    return block.act2(split(out, block.shortcut(x)))


def _residual_forward(module: nn.Module) -> Callable[[nn.Module, Tensor, Split], Tensor]:
    if isinstance(module, ResidualBlock):
        return _zoo_block
    from torchvision.models.resnet import BasicBlock

    return _basic_block if isinstance(module, BasicBlock) else _bottleneck


def _op(module: nn.Module) -> Callable[[Tensor, Tensor | None, Tensor | None], Tensor]:
    """``op(x, weight, bias)`` of a module (its own forward for parameterless ones)."""
    if isinstance(module, nn.Linear):
        return lambda x, w, b: F.linear(x, w, b)
    if isinstance(module, LINEARS):
        return lambda x, w, b: module._conv_forward(x, w, b)  # type: ignore[operator]
    if isinstance(module, nn.ReLU):
        return lambda x, w, b: F.relu(x)  # never in place: the input is another layer's output
    forward = module.forward
    if getattr(module, "inplace", False):
        return lambda x, w, b: forward(x.clone())
    return lambda x, w, b: forward(x)


def merge_batchnorm(layer: nn.Module, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``layer`` followed by ``bn`` (eval statistics), new tensors.

    The formula and the order of operations are zennit's ``MergeBatchNorm.merge_batch_norm``.
    """
    with torch.no_grad():
        weight = layer.weight.detach()
        bias = layer.bias
        bias = (
            torch.zeros(1, device=weight.device, dtype=weight.dtype)
            if bias is None
            else bias.detach()
        )
        mean, var = bn.running_mean, bn.running_var
        if mean is None or var is None:
            raise XaikitConfigError(
                f"BatchNorm without running statistics cannot be merged "
                f"({type(bn).__name__}, track_running_stats=False); pass canonize=False"
            )
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(mean)
        scale = gamma / (var + bn.eps) ** 0.5
        index = (slice(None), *((None,) * (weight.dim() - 1)))
        return weight * scale[index], (bias - mean) * scale + beta


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if not children:
        yield prefix, module
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def _describe(name: str, module: nn.Module) -> str:
    return f"{name or '<model>'!r} ({type(module).__name__})"


class _Guard(TorchFunctionMode):
    """Refuses, during the forward pass, operations that combine two computed tensors.

    An addition of two tensors that both depend on the input is a residual connection the
    canonizers do not know (its relevance would be duplicated, not split); a product or a
    matrix product of two such tensors is gating or attention, which no rule here explains.
    Operations inside the rules themselves are allowed (:meth:`allowed`).
    """

    WATCHED = frozenset(
        {
            "add",
            "add_",
            "__add__",
            "__iadd__",
            "__radd__",
            "sub",
            "sub_",
            "__sub__",
            "__isub__",
            "__rsub__",
            "mul",
            "mul_",
            "__mul__",
            "__imul__",
            "__rmul__",
            "div",
            "div_",
            "__truediv__",
            "__itruediv__",
            "__rtruediv__",
            "matmul",
            "__matmul__",
            "__rmatmul__",
            "mm",
            "bmm",
            "baddbmm",
            "einsum",
            "scaled_dot_product_attention",
        }
    )

    def __init__(self, names: dict[nn.Module, str]) -> None:
        super().__init__()
        self.names = names
        self.stack: list[nn.Module] = []
        self.suspended = 0

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        self.suspended += 1
        try:
            yield
        finally:
            self.suspended -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if self.stack and not self.suspended:
            fname = getattr(func, "__name__", "")
            if fname in self.WATCHED and _grad_operands(args, kwargs) >= 2:
                module = self.stack[-1]
                what = (
                    f"an addition of two computed tensors ({fname}: a residual connection)"
                    if "add" in fname or "sub" in fname
                    else f"a product of two computed tensors ({fname}: gating or attention)"
                )
                raise XaikitConfigError(
                    f"LRP cannot explain module {_describe(self.names.get(module, '?'), module)}"
                    f": it computes {what}, which no canonizer of xaikit.lrp splits (known "
                    "residual blocks: torchvision BasicBlock/Bottleneck, "
                    "xaikit.zoo.ResidualBlock); use a gradient method, or a model whose "
                    "residual additions are nn.Module blocks xaikit knows"
                )
        return func(*args, **kwargs)


def _grad_operands(args: Any, kwargs: dict[str, Any]) -> int:
    count = 0
    for value in (*args, *kwargs.values()):
        items = value if isinstance(value, (list, tuple)) else (value,)
        count += sum(1 for v in items if isinstance(v, Tensor) and v.requires_grad)
    return count


@dataclass
class Plan:
    """What one LRP call does to each module of the model (see :func:`plan`)."""

    model: nn.Module
    names: dict[nn.Module, str]
    rules: dict[nn.Module, Rule] = field(default_factory=dict)
    merged: dict[nn.Module, tuple[Tensor, Tensor]] = field(default_factory=dict)
    #: BatchNorm -> the layer it is merged into.
    folded: dict[nn.Module, nn.Module] = field(default_factory=dict)
    residual: list[nn.Module] = field(default_factory=list)
    stabilizer: float = DEFAULT_STABILIZER

    def describe(self) -> dict[str, str]:
        """Layer name -> rule name (``"merged"`` for folded BatchNorms), for messages/tests."""
        out = {self.names[m]: r.name for m, r in self.rules.items()}
        out.update({self.names[bn]: "merged" for bn in self.folded})
        out.update({self.names[m]: "residual-norm" for m in self.residual})
        return out

    @contextlib.contextmanager
    def applied(self) -> Iterator[_Guard]:
        """Override the planned modules' ``forward`` and watch the forward pass; restore
        every instance ``forward`` on exit, exception or not."""
        guard = _Guard(self.names)
        saved: list[tuple[nn.Module, Any]] = []
        hooks = []
        outputs: dict[nn.Module, Tensor] = {}

        def override(module: nn.Module, fn: Callable[..., Tensor]) -> None:
            saved.append((module, module.__dict__.get("forward", _MISSING)))
            module.forward = fn  # type: ignore[method-assign]

        try:
            for module, rule in self.rules.items():
                weight, bias = self.merged.get(module, (None, None))
                if weight is None and isinstance(module, LINEARS):
                    weight = module.weight.detach()
                    bias = None if module.bias is None else module.bias.detach()
                layer = Layer(module, _op(module), weight, bias)
                override(module, self._rule_forward(rule, layer, guard, outputs))
            for bn, source in self.folded.items():
                override(bn, self._identity_forward(bn, source, outputs))
                if source not in self.rules:
                    # A merged layer without a rule (a user composite's gradient) still
                    # computes with the merged parameters.
                    w, b = self.merged[source]
                    op = _op(source)
                    override(source, self._merged_forward(source, op, w, b, outputs))
            eps = self.stabilizer

            def split(a: Tensor, b: Tensor) -> Tensor:
                with guard.allowed():
                    return residual_sum(a, b, eps)

            for block in self.residual:
                fn = _residual_forward(block)

                def forward(x: Tensor, _b: nn.Module = block, _f: Any = fn) -> Tensor:
                    return _f(_b, x, split)

                override(block, forward)
            for module in self.names:
                hooks.append(module.register_forward_pre_hook(_push(guard)))
                hooks.append(module.register_forward_hook(_pop(guard)))
            with guard:
                yield guard
        finally:
            for handle in hooks:
                handle.remove()
            for module, previous in reversed(saved):
                if previous is _MISSING:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = previous  # type: ignore[method-assign]

    def _rule_forward(
        self, rule: Rule, layer: Layer, guard: _Guard, outputs: dict[nn.Module, Tensor]
    ) -> Callable[..., Tensor]:
        module = layer.module

        def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            if args or kwargs or not isinstance(x, Tensor):
                raise XaikitConfigError(
                    f"LRP rule {rule.name} needs one tensor input; module "
                    f"{_describe(self.names[module], module)} was called with more"
                )
            with guard.allowed():
                out = rule.forward(layer, x)
            outputs[module] = out
            return out

        return forward

    def _merged_forward(
        self, module: nn.Module, op: Any, w: Tensor, b: Tensor, outputs: dict[nn.Module, Tensor]
    ) -> Callable[..., Tensor]:
        def forward(x: Tensor) -> Tensor:
            out = op(x, w, b)
            outputs[module] = out
            return out

        return forward

    def _identity_forward(
        self, bn: nn.Module, source: nn.Module, outputs: dict[nn.Module, Tensor]
    ) -> Callable[..., Tensor]:
        def forward(x: Tensor) -> Tensor:
            if outputs.get(source) is not x:
                raise XaikitConfigError(
                    f"BatchNorm {_describe(self.names[bn], bn)} does not read the output of "
                    f"{_describe(self.names[source], source)}, the layer before it, so it "
                    "cannot be merged into it; pass canonize=False (relevance then passes "
                    "through the BatchNorm unchanged, zennit's default)"
                )
            return x

        return forward


def _push(guard: _Guard) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any) -> None:
        guard.stack.append(module)

    return hook


def _pop(guard: _Guard) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if guard.stack and guard.stack[-1] is module:
            guard.stack.pop()

    return hook


def plan(
    model: nn.Module,
    composite: Composite,
    *,
    canonize: bool = True,
    stabilizer: float = DEFAULT_STABILIZER,
) -> Plan:
    """Decide every module's rule, the BatchNorm merges and the residual splits of ``model``.

    Raises :class:`~xaikit.errors.XaikitConfigError` naming the first module LRP cannot
    handle (before any forward pass).
    """
    names = {module: name for name, module in model.named_modules()}
    composite.check_names(model)
    result = Plan(model, names, stabilizer=stabilizer)
    residual_types = _residual_types()
    # nn.MultiheadAttention first, then attention modules by class name (timm's Attention,
    # transformers' ViTSelfAttention, ...), the model itself excepted.
    attention = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    attention += [
        (n, m)
        for n, m in model.named_modules()
        if n and type(m).__name__.lower().endswith("attention")
    ]
    if attention:
        raise XaikitConfigError(
            f"LRP cannot explain attention module {_describe(*attention[0])}: xaikit.lrp has "
            "no rules for attention (softmax of products of computed tensors); use "
            "method='attention-gradients' or a gradient method"
        )
    result.residual = [m for m in model.modules() if isinstance(m, residual_types)]
    ctx: dict[str, Any] = {}
    for name, module in model.named_modules():
        rule = composite.rule_for(ctx, name, module)
        if rule is not None:
            if next(module.children(), None) is not None:
                raise XaikitConfigError(
                    f"LRP rules apply to single layers; {_describe(name, module)} has children"
                )
            result.rules[module] = rule
    previous: tuple[str, nn.Module] | None = None
    for name, leaf in _leaves(model):
        has_params = any(True for _ in leaf.parameters(recurse=False))
        if isinstance(leaf, BATCHNORMS):
            if canonize:
                if previous is None or not isinstance(previous[1], LINEARS):
                    before = "it is the first layer"
                    if previous is not None:
                        before = f"it follows {_describe(*previous)}"
                    raise XaikitConfigError(
                        f"BatchNorm {_describe(name, leaf)} cannot be merged: {before}, not "
                        "a convolution or linear layer; pass canonize=False (relevance then "
                        "passes through it unchanged, zennit's default)"
                    )
                if previous[1] in result.merged:
                    raise XaikitConfigError(
                        f"BatchNorm {_describe(name, leaf)} follows {_describe(*previous)}, "
                        "which already has a BatchNorm merged"
                    )
                result.merged[previous[1]] = merge_batchnorm(previous[1], leaf)
                result.folded[leaf] = previous[1]
                result.rules.pop(leaf, None)
        elif has_params and not isinstance(leaf, (*LINEARS, *ACTIVATIONS)):
            raise XaikitConfigError(
                f"LRP has no rule for {_describe(name, leaf)}, a layer with weights (xaikit.lrp "
                "handles Linear, Conv1d/2d/3d, BatchNorm, activations and pooling); use a "
                "gradient method"
            )
        previous = (name, leaf)
    return result
