"""The report's opt-in frontier parts of the filters section: MACO feature visualizations
(``--maco``) and DFF concepts (``--concepts N``) of the atlas layer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from html_checks import decode_png, parse

import xaikit
from xaikit.cli import main
from xaikit.errors import XaikitConfigError
from xaikit.filters import concepts
from xaikit.viz.report import ReportSettings, build_report, load_context, render_context
from xaikit.viz.report_analysis import default_atlas_layer

N = 6
SETTINGS = {
    "n": N,
    "evaluate": False,
    "sanity": False,
    "atlas_channels": 2,
    "atlas_steps": 4,
    "quiet": True,
}


def _filters(text: str) -> str:
    """The filters section up to the next one (the atlas nests a ``<section>`` of its own)."""
    match = re.search(r'<section id="filters">(.*?)<section id="recurrent">', text, re.S)
    assert match, "no filters section"
    return match.group(1)


def _block(text: str, block_id: str) -> str:
    match = re.search(rf'<div id="{block_id}">(.*?)</div>', text, re.S)
    assert match, f"no block {block_id!r}"
    return match.group(1)


def _importance_rows(block: str) -> list[list[str]]:
    body = re.search(r"<tbody>(.*?)</tbody>", block, re.S)
    assert body, "no importance table"
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S) for row in rows]


@pytest.fixture(scope="module")
def frontier(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``xaikit report --maco --concepts 3`` on the tiny shapes-multiclass model."""
    out = tmp_path_factory.mktemp("frontier") / "report.html"
    argv = ["report", "--model", str(tiny_models / "shapes-multiclass"), "--out", str(out)]
    argv += ["--n", str(N), "--no-evaluate", "--no-sanity", "--atlas-channels", "2"]
    argv += ["--atlas-steps", "4", "--maco", "--concepts", "3", "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    return out.read_text(encoding="utf-8")


def _png_images(block: str) -> list[np.ndarray]:
    images = [str(item["src"]) for item in parse(block).images]
    assert images
    return [np.asarray(decode_png(src).convert("RGB")) for src in images]


def test_maco_and_concepts_sections_hold_decodable_images(frontier):
    filters = _filters(frontier)
    for block_id in ("filters-maco", "filters-concepts"):
        block = _block(filters, block_id)
        assert 'class="bad"' not in block, block[:300]
        for pixels in _png_images(block):
            assert pixels.shape[0] > 50 and pixels.shape[1] > 50
            assert pixels.std() > 5  # a drawn figure, not a blank canvas
    maco = _block(filters, "filters-maco")
    assert "MACO" in maco and "4 steps" in maco and "features.block1" in maco


def test_concept_importance_equals_concepts_run_directly(frontier, tiny_models):
    rows = _importance_rows(_block(_filters(frontier), "filters-concepts"))
    assert len(rows) == 3
    # The same samples and settings as the report, then the library directly.
    settings = ReportSettings(**SETTINGS)
    ctx = load_context(str(tiny_models / "shapes-multiclass"), settings=settings)
    layer = default_atlas_layer(ctx.model)
    data = torch.utils.data.TensorDataset(ctx.inputs, ctx.targets)
    bank = concepts(
        ctx.model, layer, data, 3, method="dff", seed=0, normalization=ctx.normalization
    )
    assert bank.importance is not None and bank.importance.shape == (len(bank.classes), 3)
    header = re.findall(r"<th>(.*?)</th>", frontier.split('id="filters-concepts"')[1])
    assert header[1 : 1 + len(bank.classes)] == [ctx.class_names[c] for c in bank.classes]
    for j, row in enumerate(rows):
        assert row[0] == f"c{j}"
        values = [float(v) for v in row[1:]]
        assert values == pytest.approx(bank.importance[:, j].tolist(), abs=5.1e-5)
    assert float(bank.importance.max()) > 0  # the table holds real importance, not zeros


def test_report_context_keeps_the_bank_it_showed(tiny_models):
    model, card = xaikit.load_model(tiny_models / "shapes-multiclass")
    settings = ReportSettings(**{**SETTINGS, "n": 4, "concepts": 2})
    ctx = load_context(model, "shapes", card=card, settings=settings)
    text = render_context(ctx)
    bank = ctx.cache["concepts"]
    assert bank.n_concepts == 2 and bank.layer == default_atlas_layer(model)
    rows = _importance_rows(_block(_filters(text), "filters-concepts"))
    shown = torch.tensor([[float(v) for v in row[1:]] for row in rows])
    torch.testing.assert_close(shown, bank.importance.T, rtol=0, atol=5.1e-5)
    assert "filters-maco" not in text  # --maco was not given


def test_without_the_flags_neither_part_is_built(tiny_models):
    text = build_report(str(tiny_models / "shapes-multiclass"), None, None, **SETTINGS)
    filters = _filters(text)
    assert "Atlas of" in filters
    assert "filters-maco" not in text and "filters-concepts" not in text
    assert "MACO" not in filters and "Concepts (DFF)" not in filters


def test_negative_concept_count_is_refused():
    with pytest.raises(XaikitConfigError, match="concepts must be >= 0"):
        ReportSettings(concepts=-1).check()
