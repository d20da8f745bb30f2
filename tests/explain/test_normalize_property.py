"""Normalization never produces NaN/inf and always lands in its documented range."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xaikit.explain as X

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
maps = st.lists(values, min_size=8, max_size=8).map(lambda v: torch.tensor(v).reshape(1, 2, 2, 2))
special = st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -float("inf")])


@settings(max_examples=150, deadline=None)
@given(maps=maps, mode=st.sampled_from(["minmax", "max_abs", "global", None]), bad=special)
def test_normalized_maps_are_finite_and_in_range(maps, mode, bad):
    maps = maps.clone()
    maps[0, 1, 0, 0] = bad  # the second map may hold NaN or inf
    out, degenerate = X.normalize_maps(maps, mode)
    assert torch.isfinite(out).all()
    low = -1.0 if mode == "max_abs" else 0.0
    if mode is not None:
        assert out.min() >= low and out.max() <= 1.0
        assert (out[degenerate] == 0).all()
        span = maps.flatten(2).amax(2) - maps.flatten(2).amin(2)
        tiny = torch.finfo(torch.float32).tiny
        scale = maps.flatten(2).abs().amax(2)
        nonconstant = torch.isfinite(span) & (span > 1e-3 * scale) & (span >= tiny)
        if mode == "minmax":
            assert (out.flatten(2).amax(2)[nonconstant] >= 1.0 - 1e-6).all()
    if bad != bad or abs(bad) == float("inf"):
        assert degenerate[0, 1]
