"""Warnings point at the caller's line, whichever entry point was used."""

import warnings

import torch
from torch import nn

import xaikit
from xaikit.explain.api import explain


def _softmax_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
        nn.Softmax(dim=1),
    )


def test_explain_warnings_name_this_file_for_every_entry_point():
    model, x = _softmax_model(), torch.rand(1, 3, 8, 8)
    for entry in (xaikit.explain, explain, xaikit.explain.GradCAM(model, layer="0").attribute):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if getattr(entry, "__self__", None) is not None:
                entry(x)
            else:
                entry(model, x, layer="0")
        softmax = [w for w in caught if "nn.Softmax" in str(w.message)]
        assert softmax, entry
        assert softmax[0].filename == __file__
