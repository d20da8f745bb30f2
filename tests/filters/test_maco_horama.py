"""MACO behaves like horama's reference MACO: on the shapes-multiclass zoo model, with the
same magnitude, steps, crops, learning rate and value range, the activation xaikit reaches
is within 10 % of horama's or better (the fast version of
``benchmarks/bench_maco_vs_horama.py``, which also runs torchvision's resnet18)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

import xaikit

pytest.importorskip("horama.maco_fv")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench = pytest.importorskip("bench_maco_vs_horama")


def test_maco_reaches_horamas_activation_on_the_zoo_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XAIKIT_CACHE", str(tmp_path / "cache"))
    model, _ = xaikit.load_model("shapes-multiclass")
    ratios = bench.compare(
        "shapes-multiclass",
        model,
        "features.block4",
        [0, 1, 2],
        size=64,
        canvas=128,
        steps=STEPS,
        seeds=[0],
        crops=3,
        values_range=(0.0, 1.0),
        eval_crops=8,
    )
    assert len(ratios) == 3
    assert statistics.median(ratios) >= 0.9, ratios
    assert min(ratios) >= 0.7, ratios


STEPS = 16
