"""Gradient-method maps are drawn the way the field reads them; CAM maps as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit.cli import main
from xaikit.errors import XaikitConfigError
from xaikit.explain import files
from xaikit.viz.colormaps import (
    DIVERGING_CMAP,
    SEQUENTIAL_CMAP,
    apply_colormap,
    colormap_color,
    display_family,
    display_map,
)
from xaikit.viz.overlay import overlay, overlay_figure
from xaikit.viz.report_figures import method_grid_figure

NAMES = ["circle", "square", "triangle"]


def _heavy_tailed(seed: int = 0, side: int = 100, outliers: int = 30) -> np.ndarray:
    """Most pixels at +-(0.01..0.1) (distinct values), ``outliers`` (< 1 %) at 100."""
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(0.01, 0.1, side * side)
    signs = rng.choice([-1.0, 1.0], side * side)
    raw = magnitude * signs
    raw[rng.choice(side * side, outliers, replace=False)] = 100.0
    return raw.reshape(side, side)


def _image(side: int = 100, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


# -- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ig", "inputxgrad", "saliency", "occlusion", "smoothgrad"])
def test_heavy_tailed_map_is_clipped_at_its_99th_percentile(method):
    raw = _heavy_tailed()
    shown = display_map(raw, method)
    assert shown.cmap == SEQUENTIAL_CMAP and not shown.signed
    assert shown.values.min() >= 0.0
    assert shown.values.max() == 1.0
    # the top 1 % (100 of 10 000 pixels: the 30 outliers and the 70 largest |a|) reach 1
    assert np.mean(shown.values == 1.0) == pytest.approx(0.01, abs=1e-12)
    assert np.all(shown.values[raw == 100.0] == 1.0)
    threshold = np.percentile(np.abs(raw), 99)
    below = np.abs(raw) < threshold
    np.testing.assert_allclose(shown.values[below], np.abs(raw[below]) / threshold)
    # what a min-max scale did: nearly every pixel in the bottom 0.2 % of the colour range
    minmax = (raw - raw.min()) / (raw.max() - raw.min())
    assert np.ptp(minmax[raw != 100.0]) < 0.002
    assert shown.suffix == ", |attribution|, clipped at 99th pct"


def test_outlier_perc_sets_the_clipped_share():
    shown = display_map(_heavy_tailed(), "ig", outlier_perc=5.0)
    assert np.mean(shown.values == 1.0) == pytest.approx(0.05, abs=1e-12)
    assert shown.suffix.endswith("clipped at 95th pct")


def test_positive_keeps_positive_evidence_only():
    raw = _heavy_tailed()
    shown = display_map(raw, "ig", sign="positive")
    assert np.all(shown.values[raw < 0] == 0.0)
    assert shown.values.max() == 1.0 and np.mean(shown.values == 1.0) == pytest.approx(0.01)
    assert shown.cmap == SEQUENTIAL_CMAP and "positive attribution" in shown.suffix


def test_signed_map_zero_is_the_diverging_centre_and_signs_opposite_ends():
    raw = _heavy_tailed()
    raw[0, :10] = 0.0
    raw[1, :5], raw[1, 5:10] = -1000.0, 1000.0
    shown = display_map(raw, "ig", sign="all")
    assert shown.signed and shown.cmap == DIVERGING_CMAP and shown.colour_range == (-1.0, 1.0)
    assert shown.values.min() == -1.0 and shown.values.max() == 1.0
    assert np.all(shown.values[0, :10] == 0.0)
    colour = apply_colormap(shown.colour_values, shown.cmap).astype(int)
    drawn = overlay(_image(), shown.colour_values, cmap=shown.cmap, alpha=1.0).astype(int)
    np.testing.assert_array_equal(drawn, colour)  # alpha 1: the colour layer itself
    centre = np.array(colormap_color(DIVERGING_CMAP, 0.5))
    # the midpoint of the colormap's own colour table, within 1/255 per channel
    cmap = xaikit.viz.get_colormap(DIVERGING_CMAP)
    midpoint = np.asarray(cmap(0.5)[:3]) * 255.0
    assert np.abs(centre - midpoint).max() <= 1.0
    assert np.abs(drawn[0, :10] - midpoint).max() <= 1.0
    low, high = (
        np.array(colormap_color(DIVERGING_CMAP, 0.0)),
        np.array(colormap_color(DIVERGING_CMAP, 1.0)),
    )
    np.testing.assert_array_equal(drawn[1, :5], np.tile(low, (5, 1)))  # negative: blue end
    np.testing.assert_array_equal(drawn[1, 5:10], np.tile(high, (5, 1)))  # positive: red end
    assert low[2] > low[0] and high[0] > high[2]
    assert "signed attribution" in shown.suffix


def test_magnitude_methods_are_always_absolute():
    raw = _heavy_tailed()
    for sign in ("auto", "absolute", "positive", "all"):
        shown = display_map(raw, "guided-backprop", sign=sign)
        assert not shown.signed and shown.values.min() >= 0.0
        np.testing.assert_array_equal(shown.values, display_map(raw, "saliency").values)


def test_a_constant_map_draws_as_zeros():
    shown = display_map(np.zeros((8, 8)), "ig", sign="all")
    assert np.all(shown.values == 0.0)


def test_bad_sign_and_outlier_perc_are_refused():
    with pytest.raises(XaikitConfigError, match="sign must be one of"):
        display_map(np.zeros((4, 4)), "ig", sign="negative")
    with pytest.raises(XaikitConfigError, match="outlier_perc"):
        display_map(np.zeros((4, 4)), "ig", outlier_perc=100.0)


# -- CAMs unchanged ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam", "attention-rollout"])
def test_cam_map_is_drawn_exactly_as_before(method):
    heat = np.random.default_rng(2).random((7, 7))
    image = _image(40)
    shown = display_map(heat, method, sign="all")
    assert display_family(method) == "cam"
    assert shown.cmap is None and shown.suffix == "" and not shown.signed
    np.testing.assert_array_equal(shown.values, heat)
    before = overlay(image, heat)  # the old path: the [0, 1] map on jet
    np.testing.assert_array_equal(overlay(image, shown.colour_values, cmap="jet"), before)


def test_signed_figure_colour_bar_reads_minus_one_to_one():
    shown = display_map(_heavy_tailed(side=20, outliers=1), "ig", sign="all")
    figure = overlay_figure(
        _image(20),
        shown.colour_values,
        cmap=shown.cmap,
        colorbar_range=shown.colour_range,
        title="x",
    )
    assert figure.axes[1].get_ylim() == pytest.approx((-1.0, 1.0))
    plain = overlay_figure(_image(20), np.zeros((20, 20)))
    assert plain.axes[1].get_ylim() == pytest.approx((0.0, 1.0))


def test_method_grid_titles_name_the_rule_and_cam_cells_are_unchanged():
    images = torch.rand(2, 3, 12, 12)
    maps = torch.rand(2, 12, 12)
    fig = method_grid_figure(images, {"gradcam": maps, "saliency": maps})
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles[1] == "gradcam" and titles[2] == "saliency (|a| ≤p99)"
    drawn = fig.axes[1].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(drawn), overlay(images[0], maps[0]))
    signed = method_grid_figure(
        images, {"ig": maps}, raw={"ig": torch.randn(2, 12, 12)}, sign="all"
    )
    assert signed.axes[1].get_title() == "ig (±a ≤p99)"


# -- xaikit explain ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    path = tmp_path_factory.mktemp("model") / "m"
    xaikit.save_model(model.eval(), path, input_shape=[3, 16, 16], class_names=NAMES)
    return str(path)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB"))


def test_cli_sign_all_changes_only_gradient_pngs_and_titles_say_the_rule(
    tiny, tmp_path, monkeypatch
):
    img = tmp_path / "photo.png"
    Image.fromarray(_image(24, seed=5)).save(img)
    titles: list[str] = []
    render = files._Figures.render

    def spy(self, display, heat, title, *args, **kwargs):
        titles.append(title)
        return render(self, display, heat, title, *args, **kwargs)

    monkeypatch.setattr(files._Figures, "render", spy)
    outs = {}
    for sign in ("auto", "all"):
        out = tmp_path / sign
        argv = ["explain", str(img), "-m", tiny, "-o", str(out), "--method", "gradcam,ig"]
        assert main([*argv, "--sign", sign, "-q"]) == 0
        outs[sign] = out
    (folder_auto,), (folder_all,) = (list(o.glob("photo.png")) for o in outs.values())
    (gradcam,) = (p.name for p in folder_auto.glob("gradcam.*.figure.png"))
    stem = gradcam.removesuffix(".figure.png")
    ig = stem.replace("gradcam", "ig")
    for name in (f"{stem}.png", f"{stem}.figure.png"):  # CAM pictures: pixel-equal
        np.testing.assert_array_equal(_pixels(folder_auto / name), _pixels(folder_all / name))
    for suffix in (".npy", ".raw.npy"):  # the data is the same
        for s in (stem, ig):
            a, b = np.load(folder_auto / f"{s}{suffix}"), np.load(folder_all / f"{s}{suffix}")
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_pixels(folder_auto / f"{ig}.png"), _pixels(folder_all / f"{ig}.png"))
    # the CAM overlay is the old one: the [0, 1] map on jet over the picture
    heat = np.load(folder_auto / f"{stem}.npy")
    old = overlay(np.asarray(Image.open(img).convert("RGB")), heat)
    np.testing.assert_array_equal(_pixels(folder_auto / f"{stem}.png"), old)
    # the ig overlay follows the rule, from the raw map
    raw = np.load(folder_all / f"{ig}.raw.npy")
    shown = display_map(raw, "ig", sign="all")
    drawn = overlay(
        np.asarray(Image.open(img).convert("RGB")), shown.colour_values, cmap=shown.cmap
    )
    np.testing.assert_array_equal(_pixels(folder_all / f"{ig}.png"), drawn)
    assert titles[0].endswith("— gradcam") and titles[2].endswith("— gradcam")
    assert titles[1].endswith("— ig, |attribution|, clipped at 99th pct")
    assert titles[3].endswith("— ig, signed attribution (0 = centre), clipped at 99th pct")


def test_cli_rejects_an_unknown_sign(tiny, tmp_path, capsys):
    img = tmp_path / "p.png"
    Image.fromarray(_image(16)).save(img)
    argv = ["explain", str(img), "-m", tiny, "-o", str(tmp_path / "o"), "--sign", "neg"]
    assert main(argv) == 2
    assert "--sign: invalid choice: 'neg'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
