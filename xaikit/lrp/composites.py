"""Composites: which LRP rule each layer gets, by name, by type and by position.

The built-in composites have zennit's names (with dashes) and semantics (Kohlbrenner et al.,
2020, "Towards Best Practice in Explaining Neural Network Decisions with LRP"; Montavon et
al., 2019, section 10.3): every composite passes relevance through activations and unmerged
BatchNorm (:class:`~xaikit.lrp.rules.Pass`) and redistributes average pooling and residual
sums by :class:`~xaikit.lrp.rules.Norm`; then

==============================  ============================  ==================  ==========
composite                       first conv/linear layer       other convolutions  nn.Linear
==============================  ============================  ==================  ==========
``epsilon-plus``                (as the others)               z+                  epsilon
``epsilon-plus-flat``           flat                          z+                  epsilon
``epsilon-gamma-box``           z-box (first *convolution*)   gamma (0.25)        epsilon
``epsilon-alpha2-beta1``        (as the others)               alpha=2, beta=1     epsilon
``epsilon-alpha2-beta1-flat``   flat                          alpha=2, beta=1     epsilon
==============================  ============================  ==================  ==========

"First" is the first matching module in ``model.named_modules()`` order, as in zennit.
Modules that get no rule (max-pooling, dropout, flatten, identity) pass relevance on by their
gradient: winner-takes-all for max-pooling (zennit's default).

A user composite is :class:`Composite` with a mapping from layer names (``"features.0"``)
or layer types (``nn.Conv2d``) to rules (instances or names of :data:`~xaikit.lrp.rules.RULES`),
names matched first, then types in the mapping's order, then the base rules above; convolution
and linear layers it does not map get ``default`` (LRP-epsilon unless told otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.lrp.rules import (
    DEFAULT_STABILIZER,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    Rule,
    ZBox,
    ZPlus,
    as_rule,
)
from xaikit.zoo.heads import GlobalPool

CONVOLUTIONS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Layers with weights that the rules handle (zennit's ``Linear``, without transposed convs).
LINEARS: tuple[type[nn.Module], ...] = (*CONVOLUTIONS, nn.Linear)
BATCHNORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVGPOOLS: tuple[type[nn.Module], ...] = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
#: Element-wise activations (zennit's ``Activation``, without MultiheadAttention).
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ELU,
    nn.Hardshrink,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.LogSigmoid,
    nn.PReLU,
    nn.ReLU,
    nn.ReLU6,
    nn.RReLU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.Softplus,
    nn.Softshrink,
    nn.Softsign,
    nn.Tanh,
    nn.Tanhshrink,
    nn.Threshold,
)

#: The built-in composite names.
COMPOSITES: tuple[str, ...] = (
    "epsilon-plus",
    "epsilon-plus-flat",
    "epsilon-gamma-box",
    "epsilon-alpha2-beta1",
    "epsilon-alpha2-beta1-flat",
)

_DEFAULT = object()


def is_avgpool(module: nn.Module) -> bool:
    """Average pooling of any kind, xaikit's ``GlobalPool("avg")`` included."""
    return isinstance(module, AVGPOOLS) or (isinstance(module, GlobalPool) and module.mode == "avg")


class Composite:
    """A rule for every layer: ``composite.rule_for(ctx, name, module) -> Rule | None``.

    Args:
        rules: layer name or layer type -> rule (a :class:`~xaikit.lrp.rules.Rule` or its
            name). Names are matched first, then types (``isinstance``, in order).
        first: the rule of the first layer of a type in ``first_types`` (in
            ``named_modules()`` order) that no name maps.
        first_types: the types ``first`` applies to (convolutions and ``nn.Linear``).
        default: the rule of convolution / linear layers nothing else maps
            (:class:`~xaikit.lrp.rules.Epsilon` by default; ``None``: their gradient).
        stabilizer: the stabilizer of the base :class:`~xaikit.lrp.rules.Norm` rule.
        name: a label for messages and results.
    """

    def __init__(
        self,
        rules: Mapping[str | type[nn.Module], Rule | str] | None = None,
        *,
        first: Rule | str | None = None,
        first_types: tuple[type[nn.Module], ...] = LINEARS,
        default: Any = _DEFAULT,
        stabilizer: float = DEFAULT_STABILIZER,
        name: str = "custom",
    ) -> None:
        self.names: dict[str, Rule] = {}
        self.types: list[tuple[type[nn.Module], Rule]] = []
        for key, rule in (rules or {}).items():
            if isinstance(key, str):
                self.names[key] = as_rule(rule)
            elif isinstance(key, type) and issubclass(key, nn.Module):
                self.types.append((key, as_rule(rule)))
            elif isinstance(key, tuple) and all(isinstance(k, type) for k in key):
                self.types.extend((k, as_rule(rule)) for k in key)
            else:
                raise XaikitConfigError(
                    f"composite keys must be layer names or nn.Module types, got {key!r}"
                )
        self.first = None if first is None else as_rule(first)
        self.first_types = first_types
        self.default: Rule | None = Epsilon() if default is _DEFAULT else default
        self.norm = Norm(stabilizer)
        self.name = name

    def check_names(self, model: nn.Module) -> None:
        """Refuse names that are not modules of ``model`` (a typo would silently fall back)."""
        known = {n for n, _ in model.named_modules()}
        missing = sorted(set(self.names) - known)
        if missing:
            raise XaikitConfigError(
                f"composite maps unknown layer(s) {', '.join(map(repr, missing))}; "
                "see `xaikit layers` for the model's layer names"
            )

    def rule_for(self, ctx: dict[str, Any], name: str, module: nn.Module) -> Rule | None:
        """The rule of ``module`` (``ctx`` carries "first layer seen" across the calls)."""
        if name in self.names:
            if isinstance(module, self.first_types):
                ctx["first_seen"] = True
            return self.names[name]
        first_open = self.first is not None and not ctx.get("first_seen")
        if first_open and isinstance(module, self.first_types):
            ctx["first_seen"] = True
            return self.first
        for types, rule in self.types:
            if isinstance(module, types):
                return rule
        if isinstance(module, (*ACTIVATIONS, *BATCHNORMS)):
            return PASS
        if is_avgpool(module):
            return self.norm
        if isinstance(module, LINEARS):
            return self.default
        return None

    def __repr__(self) -> str:
        return f"Composite({self.name!r})"


PASS = Pass()


def box_from_normalization(
    normalization: Mapping[str, Any] | None, channels: int, dims: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``low = (0 - mean) / std`` and ``high = (1 - mean) / std``, ``(1, C, 1, ...)``: the
    bounds of ``[0, 1]`` pixels after the normalization ``{"mean": [...], "std": [...]}``."""
    if normalization is None:
        return None
    if not isinstance(normalization, Mapping) or not {"mean", "std"} <= set(normalization):
        raise XaikitConfigError(
            f"normalization must be a dict with 'mean' and 'std' lists, got {normalization!r}"
        )
    mean = torch.tensor([float(v) for v in normalization["mean"]])
    std = torch.tensor([float(v) for v in normalization["std"]])
    if mean.shape != std.shape or len(mean) not in (1, channels) or bool((std <= 0).any()):
        raise XaikitConfigError(
            f"normalization needs 1 or {channels} mean/std values with positive std, got "
            f"mean={mean.tolist()} std={std.tolist()}"
        )
    shape = (1, -1) + (1,) * (dims - 2)
    return ((0 - mean) / std).reshape(shape), ((1 - mean) / std).reshape(shape)


def make_composite(
    composite: str | Composite | Mapping[Any, Any],
    *,
    epsilon: float = DEFAULT_STABILIZER,
    gamma: float = 0.25,
    stabilizer: float = DEFAULT_STABILIZER,
    low: torch.Tensor | float | None = None,
    high: torch.Tensor | float | None = None,
) -> Composite:
    """A :class:`Composite` from a built-in name (:data:`COMPOSITES`), a composite, or a
    mapping (a user composite with the default first rule ``None``).

    ``epsilon`` is the epsilon rule's (dense layers), ``stabilizer`` every other rule's,
    ``gamma`` the gamma rule's; ``low``/``high`` the z-box bounds of ``epsilon-gamma-box``.
    """
    if isinstance(composite, Composite):
        return composite
    if isinstance(composite, Mapping):
        return Composite(composite, stabilizer=stabilizer)
    key = str(composite).replace("_", "-").lower()
    if key not in COMPOSITES:
        raise XaikitConfigError(
            f"unknown LRP composite {composite!r}; choose one of {', '.join(COMPOSITES)}, "
            "or pass a xaikit.lrp.Composite / a mapping of layer names or types to rules"
        )
    eps = Epsilon(epsilon)
    if key in ("epsilon-plus", "epsilon-plus-flat"):
        conv: Rule = ZPlus(stabilizer)
    elif key == "epsilon-gamma-box":
        conv = Gamma(gamma, stabilizer)
    else:
        conv = AlphaBeta(2.0, 1.0, stabilizer)
    rules: dict[Any, Rule] = {CONVOLUTIONS: conv, nn.Linear: eps}
    first: Rule | None = None
    first_types = LINEARS
    if key.endswith("-flat"):
        first = Flat(stabilizer)
    elif key == "epsilon-gamma-box":
        if low is None or high is None:
            raise XaikitConfigError(
                "composite 'epsilon-gamma-box' needs the input's bounds: pass low= and high= "
                "or normalization={'mean': [...], 'std': [...]} (bounds of [0, 1] pixels)"
            )
        first = ZBox(low, high, stabilizer)
        first_types = CONVOLUTIONS
    return Composite(
        rules,
        first=first,
        first_types=first_types,
        default=None,
        stabilizer=stabilizer,
        name=key,
    )
