"""The report's methods x metrics comparison: with ``settings.metrics`` the evaluation runs the
chosen catalogue metrics and shows :meth:`EvaluationReport.comparison` as an HTML table (and
in the section's JSON). ``ReportSettings`` has no ``metrics`` field yet: a subclass adds it,
which is all the report reads (``getattr(settings, "metrics", None)``)."""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from xaikit.evaluate import METRICS, EvaluationReport, evaluate_methods
from xaikit.viz.report import ReportSettings, load_context
from xaikit.viz.report_analysis import comparison_html, evaluation_section, run_evaluation

CHOSEN = ["sparseness", "pixel_flipping"]


@dataclass(frozen=True)
class MetricSettings(ReportSettings):
    metrics: tuple[str, ...] | None = None


@pytest.fixture(scope="module")
def evaluated(tiny_models: Path):
    settings = MetricSettings(
        n=4, eval_steps=4, methods=("gradcam", "saliency"), quiet=True, metrics=tuple(CHOSEN)
    )
    ctx = load_context(str(tiny_models / "shapes-multiclass"), settings=settings)
    section = evaluation_section(ctx)
    return ctx, run_evaluation(ctx), section.body


def _cells(body: str) -> dict[tuple[str, str], dict[str, str]]:
    table = re.search(r'<table class="num comparison">(.*?)</table>', body, re.S)
    assert table, "no comparison table"
    out = {}
    for attrs, text in re.findall(r"<td([^>]*data-metric[^>]*)>(.*?)</td>", table.group(1)):
        found = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', attrs))
        found["text"] = html.unescape(text)
        out[(html.unescape(found["data-method"]), found["data-metric"])] = found
    return out


def test_report_comparison_cells_equal_the_report_comparison(evaluated, tiny_models):
    ctx, report, body = evaluated
    assert report.settings["metrics"] == CHOSEN and not report.sanity
    view = report.comparison()
    assert sorted(view["metrics"]) == sorted(CHOSEN)  # in the catalogue's order
    methods = ["gradcam", "saliency", "random", "gaussian"]
    assert report.methods == methods
    cells = _cells(body)
    assert len(cells) == len(methods) * len(CHOSEN)
    for method in methods:
        for metric in CHOSEN:
            mean = view["methods"][method]["means"][metric]
            rank = view["methods"][method]["ranks"][metric]
            cell = cells[(method, metric)]
            assert float(cell["data-mean"]) == mean and float(cell["data-rank"]) == rank
            assert cell["text"] == f"{mean:.3f} ({rank:g})"
    # Ranks follow each metric's direction: rank 1 holds the best mean.
    for metric in CHOSEN:
        means = {m: view["methods"][m]["means"][metric] for m in methods}
        best = (max if METRICS[metric].higher_is_better else min)(means, key=means.get)
        assert view["methods"][best]["ranks"][metric] == 1
        assert len(set(means.values())) == len(methods)  # real, distinct figures
    ranks = re.findall(r'data-mean-rank="([^"]*)"', body)
    assert [float(r) for r in ranks] == [view["methods"][m]["mean_rank"] for m in methods]
    # The same batch through the library directly gives the same means.
    n = report.settings["n"]
    direct = evaluate_methods(
        ctx.model, ctx.inputs[:n], ["gradcam", "saliency"], metrics=CHOSEN, steps=4, seed=0,
        normalization=ctx.normalization, class_names=ctx.class_names, quiet=True,
    )  # fmt: skip
    for method in methods:
        for metric in CHOSEN:
            assert direct.scores[method][metric]["mean"] == pytest.approx(
                view["methods"][method]["means"][metric], rel=1e-6
            )


def test_report_comparison_is_in_the_section_json(evaluated):
    _, report, body = evaluated
    raw = re.search(r"<pre>(.*?)</pre>", body, re.S)
    assert raw
    data = json.loads(html.unescape(raw.group(1)))
    view = report.comparison()
    assert data["comparison"]["metrics"] == view["metrics"]
    for method, row in view["methods"].items():
        shown = data["comparison"]["methods"][method]
        assert shown["ranks"] == row["ranks"] and shown["mean_rank"] == row["mean_rank"]
        assert shown["means"] == pytest.approx(row["means"], rel=1e-12)
    # Without deletion / insertion figures there is no suite table nor bar figure.
    assert "evaluation figure" not in body and "Methods x metrics" in body


def test_comparison_html_escapes_text_and_leaves_unranked_cells_blank():
    nan = math.nan
    report = EvaluationReport(
        scores={
            "<b>m</b>": {"sparseness": {"mean": 0.5, "std": 0.1, "n": 3}},
            "x&y": {"sparseness": {"mean": nan, "std": nan, "n": 0}},
        },
        sanity={},
        settings={"metrics": ["sparseness"]},
    )
    text = comparison_html(report)
    assert "<b>m</b>" not in text and "&lt;b&gt;m&lt;/b&gt;" in text and "x&amp;y" in text
    cells = _cells(text)
    assert cells[("<b>m</b>", "sparseness")]["text"] == "0.500 (1)"
    assert cells[("x&y", "sparseness")] == {
        "data-method": "x&amp;y",
        "data-metric": "sparseness",
        "data-mean": "",
        "data-rank": "",
        "text": "-",
    }


def test_report_metrics_flag_fills_the_table_and_refuses_an_unknown_metric(tmp_path, capsys):
    import re

    from xaikit.cli import main

    html = tmp_path / "r.html"
    args = ["report", "--model", "shapes-multiclass", "--data", "shapes", "--n", "4"]
    args += ["--no-sanity", "--atlas-steps", "0", "-q", "--out", str(html)]
    assert main([*args, "--metrics", "sparseness"]) == 0
    page = html.read_text()
    cells = re.findall(r'data-method="([^"]+)" data-metric="sparseness"', page)
    assert cells == ["gradcam", "gradcam++", "layercam", "saliency", "random", "gaussian"]
    html.unlink()
    assert main([*args, "--metrics", "sparseness,bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown metric 'bogus'" in err[0]
    assert not html.exists()
