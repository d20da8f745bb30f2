"""Layer-wise relevance propagation (LRP; Bach et al., 2015; Montavon et al., 2019).

``xaikit.lrp.lrp(model, x, target, composite="epsilon-plus")`` returns the relevance of
``K`` targets per input, ``(N, K, C, *S)``, from one forward pass and one batched backward
pass; ``xaikit.explain(model, x, method="lrp", composite=...)`` returns it as an
:class:`~xaikit.explain.Explanation` (maps summed over channels, conservation in
``Explanation.conservation``). Numerically the rules follow zennit (Anders et al., 2021).

* :mod:`xaikit.lrp.rules`: :class:`Epsilon`, :class:`ZPlus`, :class:`AlphaBeta`,
  :class:`Gamma`, :class:`ZBox`, :class:`Flat`, :class:`WSquare`, :class:`Norm`,
  :class:`Pass`;
* :mod:`xaikit.lrp.composites`: :class:`Composite` and the built-in :data:`COMPOSITES`;
* :mod:`xaikit.lrp.canonizers`: BatchNorm merging, residual splitting, refusal of what LRP
  cannot explain.
"""

from xaikit.lrp.canonizers import merge_batchnorm, plan, residual_sum
from xaikit.lrp.composites import COMPOSITES, Composite, box_from_normalization, make_composite
from xaikit.lrp.core import LRP_OPTIONS, Relevance, explain_lrp, lrp, relevance_at
from xaikit.lrp.rules import (
    RULES,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
    stabilize,
)

__all__ = [
    "COMPOSITES",
    "LRP_OPTIONS",
    "RULES",
    "AlphaBeta",
    "Composite",
    "Epsilon",
    "Flat",
    "Gamma",
    "Norm",
    "Pass",
    "Relevance",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "box_from_normalization",
    "explain_lrp",
    "lrp",
    "make_composite",
    "merge_batchnorm",
    "plan",
    "relevance_at",
    "residual_sum",
    "stabilize",
]
