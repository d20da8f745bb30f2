"""Concepts on the shapes-multilabel reference model: DFF with a median baseline at the last
block finds one concept per shape class; each concept's maps point at its class's masks,
and its per-image Sobol importance ranks it first for its class (the fast version of
``benchmarks/bench_concepts_shapes.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import xaikit
from xaikit.filters.concepts import concepts

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench = pytest.importorskip("bench_concepts_shapes")


def test_one_pure_and_important_concept_per_shape_class():
    model, _ = xaikit.load_model("shapes-multilabel")
    model.eval()
    train, _, _ = bench.split("shapes-multilabel", "train", 200)
    images, labels, masks = bench.split("shapes-multilabel", "test", 150)
    bank = concepts(
        model,
        "features.block4",
        train,
        6,
        method="dff",
        baseline="median",
        nmf_steps=100,
        importance=False,
        k=2,
    )
    assert bank.extra["baseline"] == "median"
    assignment, localization, purity, top1, per_class = bench.evaluate(
        bank, model, images, labels, masks, tolerance=4, n_designs=16
    )
    assert sorted(assignment.tolist()) == list(range(6)), assignment  # one concept per class
    assert (localization >= 0.9).all(), localization
    assert (purity >= 0.9).all(), purity
    assert top1 >= 0.9 and (per_class >= 0.8).all(), per_class
    # the pytorch-grad-cam baseline (each channel's minimum) spends a concept on the
    # background instead: fewer than six classes get a concept
    plain = concepts(
        model, "features.block4", train, 6, method="dff", nmf_steps=100, importance=False, k=2
    )
    plain_assignment = bench.evaluate(plain, model, images, labels, masks, n_designs=4)[0]
    assert len(set(plain_assignment.tolist())) < 6, plain_assignment
