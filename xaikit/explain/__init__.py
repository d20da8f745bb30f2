"""Heatmaps for CNNs: the CAM family, gradient methods, targets, borrowed hooks.

``xaikit.explain(model, images, method="gradcam", target="predicted", layer="auto")`` is the
entry point (:func:`~xaikit.explain.api.explain`). This package is itself callable, so
``import xaikit.explain as X; X(model, images)`` and ``xaikit.explain.hooks`` both work
whether or not ``xaikit`` re-exports the function under the same name.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from xaikit.explain.adapter import ExplainWarning, ModelAdapter, select_output, unwrap
from xaikit.explain.api import (
    EigenCAM,
    Explainer,
    FastScoreCAM,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    InputXGradient,
    IntegratedGradients,
    LayerCAM,
    Occlusion,
    Saliency,
    ScoreCAM,
    SmoothGrad,
    XGradCAM,
    explain,
)
from xaikit.explain.cam import CAM_METHODS, CamMethod, register_cam_method
from xaikit.explain.engine import METHODS, DegenerateMapsWarning
from xaikit.explain.hooks import Capture
from xaikit.explain.layers import auto_layer, resolve_layer, trace_layers
from xaikit.explain.postprocess import normalize_maps
from xaikit.explain.result import Explanation
from xaikit.explain.state import borrowed
from xaikit.explain.targets import Targets, resolve_targets

__all__ = [
    "CAM_METHODS",
    "METHODS",
    "CamMethod",
    "Capture",
    "DegenerateMapsWarning",
    "EigenCAM",
    "ExplainWarning",
    "Explainer",
    "Explanation",
    "FastScoreCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "InputXGradient",
    "IntegratedGradients",
    "LayerCAM",
    "ModelAdapter",
    "Occlusion",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "Targets",
    "XGradCAM",
    "auto_layer",
    "borrowed",
    "explain",
    "normalize_maps",
    "register_cam_method",
    "resolve_layer",
    "resolve_targets",
    "select_output",
    "trace_layers",
    "unwrap",
]


class _CallablePackage(types.ModuleType):
    """``xaikit.explain(...)`` calls :func:`explain` even when it resolves to this package."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
