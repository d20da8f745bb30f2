"""Class names are text, never markup, in every table of the HTML report.

A class named ``<b>x</b>`` or ``<script>alert(1)</script>`` must show up escaped wherever a
table names classes: the model card, the per-class metrics, the confusion matrix (header and
rows), the heatmap gallery and the per-class pointing game.
"""

from __future__ import annotations

import re

import pytest
import torch

import xaikit
from xaikit.data import SHAPE_CLASSES
from xaikit.viz.report import build_report

BOLD = "<b>x</b>"
SCRIPT = "<script>alert(1)</script>"
ESCAPED = {BOLD: "&lt;b&gt;x&lt;/b&gt;", SCRIPT: "&lt;script&gt;alert(1)&lt;/script&gt;"}
NAMES = [BOLD, SCRIPT, *SHAPE_CLASSES[2:]]
SMALL = {
    "n": 4,
    "eval_n": 4,
    "eval_steps": 4,
    "sanity": False,
    "atlas_channels": 2,
    "atlas_steps": 0,
    "exemplar_pool": 8,
    "quiet": True,
}


def _report(task: str, tmp_path) -> str:
    """A report on 32x32 shapes for a tiny model that predicts the two odd names for every
    image (large biases), with card metrics that have per-class lists and a confusion matrix."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = xaikit.create_model(
            "simple_cnn", num_classes=6, task=task, in_channels=3, widths=(4, 8), input_size=32
        )
    with torch.no_grad():
        model.head.fc.bias.copy_(torch.tensor([8.0, 9.0, -8.0, -8.0, -8.0, -8.0]))
    data = "shapes" if task == "multiclass" else "shapes-multilabel"
    metrics = {
        "test_accuracy": 0.5,
        "test_per_class_accuracy": [0.25, 0.5, 0.75, 1.0, 0.0, 0.5],
        "test_confusion_matrix": [[int(i == j) for j in range(6)] for i in range(6)],
    }
    path = xaikit.save_model(
        model,
        tmp_path / task,
        class_names=NAMES,
        input_shape=[3, 32, 32],
        data={"name": data, "options": {"size": 32}},
        metrics=metrics,
    )
    return build_report(path, None, None, **SMALL)


def _tables(text: str) -> list[str]:
    return re.findall(r"<table[^>]*>.*?</table>", text, re.S)


def _kind(table: str) -> str:
    head = re.search(r"<table([^>]*)>\s*(?:<tbody>\s*)?(?:<thead>)?<tr><th[^>]*>([^<]*)", table)
    assert head is not None, table[:200]
    return f"{head.group(1).strip()} {head.group(2).strip()}"


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_class_names_are_escaped_in_every_report_table(task, tmp_path):
    """Guards against class names written into report tables without escaping (the
    confusion matrix, the per-class metrics, the gallery, ...): no table holds the raw name,
    and each table that lists classes holds the escaped one."""
    text = _report(task, tmp_path)
    assert "Not available" not in text
    for name in (BOLD, SCRIPT):
        assert name not in text, f"{name} appears unescaped"
    naming = {}
    for table in _tables(text):
        for name in (BOLD, SCRIPT):
            assert name not in table, f"raw {name} in {table[:300]}"
        counts = [table.count(ESCAPED[name]) for name in (BOLD, SCRIPT)]
        if any(counts):
            naming[_kind(table)] = counts
    # The model card's "classes" row; the card's per-class metrics and the pointing game per
    # class (two "num" tables led by a "class" column); the card's confusion matrix; the
    # gallery (the explained class of each image: always label 1 for the multi-class model,
    # labels 0 and 1 for the multi-label one).
    assert set(naming) == {
        'class="kv" model',
        'class="num" class',
        'class="confusion" true \\ predicted',
        'class="gallery" #',
    }
    assert naming['class="kv" model'] == [1, 1]
    assert naming['class="confusion" true \\ predicted'] == [2, 2]  # column and row header
    gallery = naming['class="gallery" #']
    assert gallery[1] >= 4 and (gallery[0] >= 4 if task == "multilabel" else gallery[0] == 0)
    per_class = [t for t in _tables(text) if _kind(t) == 'class="num" class']
    assert len(per_class) == 2
    for table in per_class:
        assert table.count(ESCAPED[BOLD]) == 1 and table.count(ESCAPED[SCRIPT]) == 1
