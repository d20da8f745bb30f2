"""LRP rules as modified forward passes whose gradient *is* the relevance (the gradient trick).

Layer-wise relevance propagation (Bach et al., 2015, "On Pixel-Wise Explanations for
Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation"; Montavon et al., 2019,
"Layer-Wise Relevance Propagation: An Overview") redistributes the relevance ``R_out`` of a
layer's outputs onto its inputs ``a``. For a linear layer (``nn.Linear``, ``nn.Conv1d/2d/3d``)
every rule here has the form

    R_in = sum_p  m_p * J_p^T (R_out / s_p)

with ``J_p`` the Jacobian of a *modified* copy of the layer (clamped weights, clamped or
constant inputs) and ``s_p = stabilize(z_p)`` a denominator computed in the forward pass:
``x * grad(z_mod(x), x, grad_outputs=R / stabilized(z))`` in zennit's words (Anders et al.,
2021, "Software for Dataset-wide XAI: From Local Explanations to Global Insights with Zennit,
CoRelAy, and ViRelAy"), whose numerics these rules follow operation by operation.

Here the rules need no backward hooks: during the forward pass each rule returns a tensor
whose *value* is the layer's exact output and whose *gradient* is the rule. Relevance then
flows through the whole network as the gradient (``.grad`` of the input is the input's
relevance), so ``K`` targets are answered by one batched vector-Jacobian product
(``is_grads_batched=True``) and modules without a rule (max-pooling, flatten, dropout,
concatenation) pass relevance on by their ordinary gradient (winner-takes-all for
max-pooling, a split for concatenation). Two exact-zero tricks build these tensors:

* :func:`carrier` ``(a, value, mult)``: value ``value`` (bit-exact), gradient ``grad * mult``
  into ``a``;
* :func:`reroute` ``(value, surrogate)``: value ``value`` (bit-exact), gradient that of
  ``surrogate``.

Shapes: a rule maps a layer input ``(N, C_in, *S)`` to its output ``(N, C_out, *S')`` and,
backwards, ``(N, C_out, *S')`` relevance to ``(N, C_in, *S)`` relevance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xaikit.errors import XaikitConfigError

#: Default stabilizer of every rule (zennit's ``1e-6``).
DEFAULT_STABILIZER = 1e-6


def stabilize(z: Tensor, epsilon: float = DEFAULT_STABILIZER) -> Tensor:
    """``z + epsilon * sign(z)`` with ``sign(0) = +1``: a denominator that is never zero.

    The same formula as ``zennit.core.stabilize`` (without clipping or norm scaling).
    """
    sign = (z == 0.0).to(z) + z.sign()
    return z + sign * epsilon


def carrier(a: Tensor, value: Tensor, mult: Tensor | float) -> Tensor:
    """A tensor equal to ``value`` (bit-exact) whose gradient flows into ``a`` times ``mult``.

    ``value + (a - a.detach()) * mult``: ``a - a.detach()`` is exactly zero, so the value is
    untouched, and ``d/da = mult`` (elementwise). Shapes broadcast as in ``value + a * mult``.
    """
    return value + (a - a.detach()) * mult


def reroute(value: Tensor, surrogate: Tensor) -> Tensor:
    """A tensor equal to ``value`` (bit-exact) whose gradient is that of ``surrogate``."""
    return value.detach() + (surrogate - surrogate.detach())


@dataclass
class Layer:
    """What a rule needs of a module: its parameters and its operation.

    ``op(x, weight, bias)`` is the module's operation with given parameters (``F.linear``,
    the module's own ``_conv_forward``); for parameterless modules (pooling, the residual
    sum) ``weight`` is ``None`` and ``op(x, None, None)`` is the module's forward. ``weight``
    and ``bias`` may be the BatchNorm-merged parameters (:mod:`xaikit.lrp.canonizers`), never
    the module's own tensors modified in place.
    """

    module: nn.Module
    op: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    weight: Tensor | None = None
    bias: Tensor | None = None

    def __call__(
        self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None
    ) -> Tensor:
        return self.op(x, weight, bias)

    def value(self, x: Tensor) -> Tensor:
        """The layer's exact output ``(N, C_out, *S')`` (no graph; ``op`` never works in
        place, so the input keeps its values)."""
        with torch.no_grad():
            return self.op(x, self.weight, self.bias)

    def needs_params(self, rule: str) -> tuple[Tensor, Tensor | None]:
        if self.weight is None:
            raise XaikitConfigError(
                f"rule {rule} needs a layer with weights (Linear, Conv); "
                f"{type(self.module).__name__} has none (use Norm or Pass)"
            )
        return self.weight, self.bias


def _clamp(t: Tensor | None, low: float | None = None, high: float | None = None) -> Tensor | None:
    return None if t is None else t.clamp(min=low, max=high)


def _has_negatives(a: Tensor) -> bool:
    """Whether ``a`` has a negative entry (else the rules' ``a^-`` paths are exactly zero:
    zero inputs, no bias, so skipping them changes no bit of the result)."""
    return bool((a < 0).any())


class Rule:
    """Base class: ``rule.forward(layer, a)`` -> the layer's output, with the rule as gradient.

    Subclasses implement :meth:`forward`; ``name`` is the rule's name in composites.
    """

    name = "rule"

    def forward(self, layer: Layer, a: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Epsilon(Rule):
    """LRP-epsilon (Bach et al., 2015; Montavon et al., 2019, eq. 2 ``LRP-eps``):

    ``R_j = a_j * sum_k w_jk R_k / (z_k + eps * sign(z_k))``, ``z_k = b_k + sum_j a_j w_jk``.
    ``epsilon=0`` is LRP-0 (up to the zero guard). ``(N, C_in, *S)`` -> ``(N, C_out, *S')``.
    """

    name = "epsilon"

    def __init__(self, epsilon: float = DEFAULT_STABILIZER) -> None:
        self.epsilon = float(epsilon)

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        weight, bias = layer.needs_params(self.name)
        z = layer(carrier(a, a.detach(), a.detach()), weight, bias)  # value: the exact output
        s = stabilize(z.detach(), self.epsilon)
        return reroute(z, z / s)


class ZPlus(Rule):
    """LRP-z+ (Bach et al., 2015; Montavon et al., 2017 "Explaining nonlinear classification
    decisions with deep Taylor decomposition"): only positive contributions ``z_jk^+``,

    ``R_j = sum_k (a_j^+ w_jk^+ + a_j^- w_jk^-) R_k / s_k``,
    ``s_k = stabilize(sum_j a_j^+ w_jk^+ + b_k^+ + sum_j a_j^- w_jk^-)``, i.e. alpha=1, beta=0
    for signed inputs (zennit's ``ZPlus``).
    """

    name = "zplus"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.stabilizer = float(stabilizer)

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        weight, bias = layer.needs_params(self.name)
        ad = a.detach()
        pos, neg = ad.clamp(min=0), ad.clamp(max=0)
        z1 = layer(carrier(a, pos, pos), weight.clamp(min=0), _clamp(bias, low=0))
        if not _has_negatives(ad):  # after a ReLU: the a^- path is exactly zero
            s = stabilize(z1.detach(), self.stabilizer)
            return reroute(layer.value(ad), z1 / s)
        z2 = layer(carrier(a, neg, neg), weight.clamp(max=0), None)
        s = stabilize((z1 + z2).detach(), self.stabilizer)
        return reroute(layer.value(ad), z1 / s + z2 / s)


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al., 2015; Montavon et al., 2019, section 10.2.3):

    ``R_j = sum_k (alpha * z_jk^+ / s_k^+ - beta * z_jk^- / s_k^-) R_k`` with the positive
    contributions ``z^+ = a^+ w^+ (+ b^+)``, ``a^- w^-`` and the negative ones
    ``a^+ w^- (+ b^-)``, ``a^- w^+``, each group normalized by its own stabilized sum.
    ``alpha - beta = 1`` (relevance is conserved); the usual choice is ``alpha=2, beta=1``.
    """

    name = "alpha-beta"

    def __init__(
        self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = DEFAULT_STABILIZER
    ) -> None:
        if alpha < 0 or beta < 0:
            raise XaikitConfigError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
        if alpha - beta != 1:
            raise XaikitConfigError(f"alpha - beta must be 1, got {alpha} - {beta}")
        self.alpha, self.beta, self.stabilizer = float(alpha), float(beta), float(stabilizer)

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        weight, bias = layer.needs_params(self.name)
        ad = a.detach()
        pos, neg = ad.clamp(min=0), ad.clamp(max=0)
        wp, wn = weight.clamp(min=0), weight.clamp(max=0)
        al, be = self.alpha, self.beta
        z1 = layer(carrier(a, pos, pos * al), wp, _clamp(bias, low=0))
        z3 = layer(carrier(a, pos, pos * -be), wn, _clamp(bias, high=0))
        if not _has_negatives(ad):  # after a ReLU: the a^- paths are exactly zero
            sp = stabilize(z1.detach(), self.stabilizer)
            sn = stabilize(z3.detach(), self.stabilizer)
            return reroute(layer.value(ad), z1 / sp + z3 / sn)
        z2 = layer(carrier(a, neg, neg * al), wn, None)
        z4 = layer(carrier(a, neg, neg * -be), wp, None)
        sp = stabilize((z1 + z2).detach(), self.stabilizer)
        sn = stabilize((z3 + z4).detach(), self.stabilizer)
        return reroute(layer.value(ad), z1 / sp + z2 / sp + z3 / sn + z4 / sn)


class Gamma(Rule):
    """LRP-gamma (Montavon et al., 2019, section 10.2.2), generalized to signed inputs as in
    zennit (Andeol et al., 2021): weights ``w + gamma * w^+`` favour positive contributions.

    For outputs ``z_k > 0``: ``R_j = sum_k [a_j^+ (w + g w^+)_jk + a_j^- (w + g w^-)_jk]
    R_k / s_k^+`` with ``s_k^+`` their stabilized sum (bias ``b + g b^+``); for ``z_k < 0``
    the mirror image with ``w + g w^-`` on ``a^+`` and ``w + g w^+`` on ``a^-``.
    """

    name = "gamma"

    def __init__(self, gamma: float = 0.25, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.gamma, self.stabilizer = float(gamma), float(stabilizer)

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        weight, bias = layer.needs_params(self.name)
        g = self.gamma
        ad = a.detach()
        pos, neg = ad.clamp(min=0), ad.clamp(max=0)
        wp = weight + g * weight.clamp(min=0)
        wn = weight + g * weight.clamp(max=0)
        bp = None if bias is None else bias + g * bias.clamp(min=0)
        bn = None if bias is None else bias + g * bias.clamp(max=0)
        z1 = layer(carrier(a, pos, pos), wp, bp)
        z3 = layer(carrier(a, pos, pos), wn, bn)
        z = layer.value(ad)
        mp, mn = (z > 0.0).to(z), (z < 0.0).to(z)
        if not _has_negatives(ad):  # after a ReLU: the a^- paths are exactly zero
            sp = stabilize(z1.detach(), self.stabilizer)
            sn = stabilize(z3.detach(), self.stabilizer)
            return reroute(z, z1 * mp / sp + z3 * mn / sn)
        z2 = layer(carrier(a, neg, neg), wn, None)
        z4 = layer(carrier(a, neg, neg), wp, None)
        sp = stabilize((z1 + z2).detach(), self.stabilizer)
        sn = stabilize((z3 + z4).detach(), self.stabilizer)
        return reroute(z, z1 * mp / sp + z2 * mp / sp + z3 * mn / sn + z4 * mn / sn)


class ZBox(Rule):
    """LRP-z^B for bounded inputs ``low <= x <= high`` (Montavon et al., 2017, deep Taylor
    decomposition; Montavon et al., 2019, eq. in section 10.3 for the pixel layer):

    ``R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) R_j / s_j``,
    ``s_j = stabilize(z_j - (sum_i l_i w_ij^+ + b_j^+) - (sum_i h_i w_ij^- + b_j^-))``.

    ``low`` and ``high`` broadcast against the input ``(N, C, *S)`` (floats, ``(1, C, 1, 1)``
    per channel); for normalized images they are ``(0 - mean) / std`` and ``(1 - mean) /
    std`` (:func:`box_from_normalization`).
    """

    name = "zbox"

    def __init__(
        self, low: Tensor | float, high: Tensor | float, stabilizer: float = DEFAULT_STABILIZER
    ) -> None:
        self.low, self.high, self.stabilizer = low, high, float(stabilizer)

    @staticmethod
    def _bound(bound: Tensor | float, a: Tensor) -> Tensor:
        b = torch.as_tensor(bound, dtype=a.dtype, device=a.device)
        if b.dim() == a.dim() and b.shape[0] > a.shape[0]:
            b = b[: a.shape[0]]  # bounds given for a larger batch (zennit's cut_batch_dim)
        try:
            return torch.broadcast_to(b, a.shape)
        except RuntimeError:
            raise XaikitConfigError(
                f"z-box bounds of shape {tuple(b.shape)} do not broadcast to the input "
                f"{tuple(a.shape)}"
            ) from None

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        weight, bias = layer.needs_params(self.name)
        ad = a.detach()
        low, high = self._bound(self.low, ad), self._bound(self.high, ad)
        z0 = layer(carrier(a, ad, ad), weight, bias)
        z1 = layer(carrier(a, low, -low), weight.clamp(min=0), _clamp(bias, low=0))
        z2 = layer(carrier(a, high, -high), weight.clamp(max=0), _clamp(bias, high=0))
        s = stabilize((z0 - (z1 + z2)).detach(), self.stabilizer)
        return reroute(z0, z0 / s + z1 / s + z2 / s)


class Flat(Rule):
    """LRP-flat (Lapuschkin et al., 2019, "Unmasking Clever Hans predictors"): relevance
    spread uniformly over each output's receptive field, ``R_j = sum_k R_k / s_k`` with
    ``s_k`` the stabilized receptive-field size (all weights and inputs set to one, no bias).
    """

    name = "flat"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.stabilizer = float(stabilizer)

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        weight, _ = layer.needs_params(self.name)
        ad = a.detach()
        ones = torch.ones_like(ad)
        z = layer(carrier(a, ones, ones), torch.ones_like(weight), None)
        s = stabilize(z.detach(), self.stabilizer)
        return reroute(layer.value(ad), z / s)


class WSquare(Rule):
    """LRP-w^2 (Montavon et al., 2017, deep Taylor decomposition for unbounded inputs):
    ``R_j = sum_k w_jk^2 R_k / s_k``, ``s_k = stabilize(sum_j w_jk^2 + b_k^2)`` (zennit
    squares the bias too)."""

    name = "wsquare"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.stabilizer = float(stabilizer)

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        weight, bias = layer.needs_params(self.name)
        ad = a.detach()
        ones = torch.ones_like(ad)
        z = layer(carrier(a, ones, ones), weight**2, None if bias is None else bias**2)
        s = stabilize(z.detach(), self.stabilizer)
        return reroute(layer.value(ad), z / s)


class Norm(Rule):
    """Normalized redistribution for parameterless linear maps (average pooling, adaptive
    average pooling, global average pooling, the residual sum): ``R_j = a_j * sum_k
    (dz_k / da_j) R_k / stabilize(z_k)``, LRP-0 without weights (zennit's ``Norm``)."""

    name = "norm"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.stabilizer = float(stabilizer)

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        z = layer(carrier(a, a.detach(), a.detach()), None, None)
        s = stabilize(z.detach(), self.stabilizer)
        return reroute(z, z / s)


class Pass(Rule):
    """Identity for element-wise layers (ReLU and other activations, BatchNorm that was not
    merged): the output's relevance is the input's, ``R_j = R_j`` (Montavon et al., 2019,
    section 10.1: activations are part of the neuron, relevance passes through them)."""

    name = "pass"

    def forward(self, layer: Layer, a: Tensor) -> Tensor:
        out = layer.value(a.detach())
        if out.shape != a.shape:
            raise XaikitConfigError(
                f"rule pass needs an element-wise layer; {type(layer.module).__name__} maps "
                f"{tuple(a.shape)} to {tuple(out.shape)}"
            )
        return reroute(out, a)


#: Rule names accepted in a composite mapping (and their classes).
RULES: dict[str, type[Rule]] = {
    "epsilon": Epsilon,
    "zplus": ZPlus,
    "z-plus": ZPlus,
    "alpha-beta": AlphaBeta,
    "alpha2-beta1": AlphaBeta,
    "gamma": Gamma,
    "zbox": ZBox,
    "z-box": ZBox,
    "flat": Flat,
    "wsquare": WSquare,
    "w-square": WSquare,
    "norm": Norm,
    "pass": Pass,
}


def as_rule(rule: Rule | str) -> Rule:
    """A :class:`Rule` from an instance or a name of :data:`RULES` (default parameters)."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str) and rule in RULES:
        if RULES[rule] is ZBox:
            raise XaikitConfigError("rule 'zbox' needs bounds: pass ZBox(low, high)")
        return RULES[rule]()
    raise XaikitConfigError(
        f"unknown LRP rule {rule!r}; choose one of {', '.join(RULES)} or a xaikit.lrp Rule"
    )
