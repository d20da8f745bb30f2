"""The page building blocks: compact PNG encoding, inlined images, escaping, the budget rule,
and the in-page image check (which must catch a broken image)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from html_checks import browser_body, decode_png, find_browser, parse
from PIL import Image

from xaikit.errors import XaikitConfigError
from xaikit.viz.html import Section, badge, data_uri, encode_png, img, page, table
from xaikit.viz.report_gallery import MIN_CELL_PX, GalleryCell, cell_side


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_encode_png_is_lossless_for_few_colours_and_downscales():
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:, 10:20] = (255, 0, 0)
    rgb[5:8] = (10, 200, 30)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(rgb))).convert("RGB"))
    assert np.array_equal(decoded, rgb)
    small = Image.open(io.BytesIO(encode_png(_noise(40, 80), max_side=20)))
    assert small.size == (20, 10)
    assert Image.open(io.BytesIO(encode_png(_noise(8, 8), max_side=64))).size == (8, 8)


def test_encode_png_keeps_the_smaller_of_palette_and_rgb():
    rgb = _noise(32, 32)
    raw = io.BytesIO()
    Image.fromarray(rgb).save(raw, format="PNG", optimize=True)
    assert len(encode_png(rgb, colors=16)) < len(raw.getvalue())
    assert len(encode_png(rgb, palette=False)) == len(raw.getvalue())
    with pytest.raises(XaikitConfigError, match="colors"):
        encode_png(rgb, colors=1)


def test_img_inlines_png_and_escapes_text():
    png = encode_png(np.zeros((4, 4, 3), dtype=np.uint8))
    tag = img(png, 'a "quoted" <alt>', title="x & y", width=50)
    parsed = parse(tag).images[0]
    assert parsed["alt"] == 'a "quoted" <alt>' and parsed["title"] == "x & y"
    assert base64.b64decode(str(parsed["src"]).split(",", 1)[1]) == png
    with pytest.raises(XaikitConfigError, match="PNG"):
        data_uri(b"GIF89a")
    assert "&lt;script&gt;" in table(["h"], [["<script>"]])
    assert 'class="badge pass"' in badge("ok", "pass")
    assert 'class="badge fail"' in badge("no", False)
    assert 'class="badge na"' in badge("?", None)


def test_cell_side_shrinks_cells_until_the_estimate_fits():
    cells = [GalleryCell(_noise(64, 64, seed), f"cell {seed}") for seed in range(40)]
    assert cell_side(cells, 96, budget=10**9) == 64  # never upscales
    side = cell_side(cells, 96, budget=100_000)
    assert MIN_CELL_PX <= side < 64
    total = sum(len(base64.b64encode(encode_png(c.rgb, max_side=side, colors=128))) for c in cells)
    assert total <= 100_000
    assert cell_side(cells, 96, budget=1) == MIN_CELL_PX


def test_in_page_check_reports_a_broken_image(tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install chromium)")
    good = img(encode_png(np.zeros((4, 4, 3), dtype=np.uint8)), "good")
    broken = '<img alt="broken" src="data:image/png;base64,iVBORw0KGgoAAAAN">'
    path = tmp_path / "page.html"
    path.write_text(page("t", "s", [Section("one", "One", good + broken)]), encoding="utf-8")
    body = browser_body(browser, path, tmp_path / "profile")
    assert body["images-loaded"] == "1/2"
    assert body["images-broken"] == "broken"
    assert body["sections"] == "one"
    decode_png(str(parse(good).images[0]["src"]))
