"""The method catalogue: every name ``explain`` accepts has a family and a paper."""

from __future__ import annotations

import pytest

from xaikit.explain.cam import CAM_METHODS
from xaikit.explain.catalogue import FAMILIES, method_catalogue, method_info
from xaikit.explain.engine import is_cam, method_names


def test_every_accepted_method_has_a_family_and_a_paper():
    rows = method_catalogue()
    assert sorted(row.name for row in rows) == sorted(method_names())
    for row in rows:
        assert row.family in FAMILIES, row
        assert len(row.paper) > 20, row  # a citation, not a placeholder


def test_rows_are_grouped_in_family_order():
    order = [list(FAMILIES).index(row.family) for row in method_catalogue()]
    assert order == sorted(order)


def test_cam_rows_take_their_paper_from_the_cam_registry_and_use_a_layer():
    for name, method in CAM_METHODS.items():
        row = method_info(name)
        assert row.paper == method.paper
        assert row.uses_layer == (name != "fullgrad")  # FullGrad: every biased layer
    assert method_info("saliency").uses_layer is False
    assert method_info("guided-gradcam").uses_layer is True
    for name in method_names():
        if name not in CAM_METHODS:
            assert method_info(name).uses_layer == (is_cam(name) or name == "guided-gradcam")


def test_an_alias_gets_its_canonical_row_and_an_unknown_name_is_a_key_error():
    assert method_info("gradxinput") == method_info("inputxgrad")
    with pytest.raises(KeyError):
        method_info("not-a-method")


def test_every_attribution_method_has_a_display_rule():
    """Gradient, perturbation and relevance maps are drawn as magnitudes or signed maps (never
    as CAM heatmaps), so a new method cannot be drawn with the wrong rule unnoticed."""
    from xaikit.viz.colormaps import display_family

    for row in method_catalogue():
        expected = {"cam", "cam-free", "cam-perturbation", "attention"}
        if row.family in expected:
            assert display_family(row.name) == "cam", row.name
        else:
            assert display_family(row.name) in ("magnitude", "signed"), row.name
