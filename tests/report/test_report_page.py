"""The HTML report: self-contained, every image decodes (statically and in a real browser),
the sections are there, and the numbers on the page are the library's numbers."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from html_checks import browser_body, decode_png, find_browser, parse, section_html
from PIL import Image

import xaikit
from xaikit.data import load
from xaikit.data.sampling import balanced_order
from xaikit.errors import XaikitConfigError
from xaikit.evaluate import evaluate_methods
from xaikit.explain.temporal import explain_sequence
from xaikit.viz.report import SECTION_IDS, SIZE_BUDGET, build_report, dataset_options

SMALL = {
    "n": 6,
    "eval_n": 6,
    "eval_steps": 4,
    "atlas_channels": 3,
    "atlas_steps": 8,
    "exemplar_pool": 32,
    "quiet": True,
}


@pytest.fixture(scope="module")
def pages(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small report per tiny reference model."""
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name in ("shapes-multiclass", "shapes-multilabel", "recall-lstm"):
        out[name] = build_report(str(tiny_models / name), None, folder / f"{name}.html", **SMALL)
    return out


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["shapes-multiclass", "shapes-multilabel", "recall-lstm"])
def test_page_is_self_contained_and_every_image_decodes(pages, name):
    text = _text(pages[name])
    page = parse(text)
    assert page.sections[: len(SECTION_IDS)] == list(SECTION_IDS)
    assert page.images, "the page has no images"
    for tag, attr, value in page.references:
        assert not re.match(r"\s*(https?:)?//", value, re.I), (tag, attr, value[:80])
        assert value.startswith(("data:image/png;base64,", "#")), (tag, attr, value[:80])
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", text, re.I)
    assert page.scripts_with_src == 0 and page.links == 0
    for image in page.images:
        picture = decode_png(str(image["src"]))
        assert picture.width > 0 and picture.height > 0
        assert image["alt"]
    # Written atomically: no temporary file is left beside the page.
    assert sorted(p.name for p in pages[name].parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("name", ["shapes-multiclass", "recall-lstm"])
def test_every_image_loads_in_headless_chromium(pages, name, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install chromium)")
    body = browser_body(browser, pages[name], tmp_path / "profile")
    count = len(parse(_text(pages[name])).images)
    assert count > 0
    assert body["images-loaded"] == f"{count}/{count}"
    assert body["images-broken"] == ""
    assert set(SECTION_IDS) <= set(body["sections"].split())


def test_page_states_the_model_card(pages, tiny_models):
    card = json.loads((tiny_models / "shapes-multiclass.json").read_text())
    text = section_html(_text(pages["shapes-multiclass"]), "model-card")
    for value in (card["architecture"], card["weights_sha256"], "circle, square, triangle"):
        assert value in text
    assert "[3, 32, 32]" in text and "Training recipe" in text and "torch" in text


def test_training_curves_come_from_beside_the_checkpoint(pages, tiny_models):
    text = section_html(_text(pages["shapes-multiclass"]), "training")
    images = parse(text).images
    assert len(images) == 1
    shown = decode_png(str(images[0]["src"]))
    with Image.open(tiny_models / "shapes-multiclass.curves.png") as original:
        assert shown.width / shown.height == pytest.approx(original.width / original.height, 0.02)
    assert "shapes-multiclass.curves.png" in text


def test_confusion_matrix_is_the_cards(pages, tiny_models):
    card = json.loads((tiny_models / "shapes-multiclass.json").read_text())
    matrix = card["metrics"]["test_confusion_matrix"]
    text = section_html(_text(pages["shapes-multiclass"]), "metrics")
    table = re.search(r'<table class="confusion">(.*?)</table>', text, re.S).group(1)
    body = table.split("<tbody>")[1]
    rows = re.findall(r"<tr><th>[^<]*</th>(.*?)</tr>", body, re.S)
    shown = [[int(v) for v in re.findall(r">(\d+)</td>", row)] for row in rows]
    assert shown == matrix
    assert f"{card['metrics']['test_accuracy']:.4f}" in text


def test_multilabel_gallery_has_a_row_per_label_with_its_probability(pages, tiny_models):
    model, card = xaikit.load_model(tiny_models / "shapes-multilabel")
    options = dataset_options("shapes-multilabel", card, 32)
    image, labels, _ = load("shapes-multilabel", "test", **options)[0]
    with torch.no_grad():
        probabilities = model(image[None]).sigmoid()[0]
    predicted, true = probabilities >= 0.5, labels.bool()
    # The documented choice: labels predicted or true, true-and-predicted first, then by
    # probability, at most 4, shown in class order.
    candidates = (predicted | true).nonzero().reshape(-1).tolist()
    candidates.sort(key=lambda k: (not (predicted[k] and true[k]), -float(probabilities[k])))
    expected = sorted(candidates[:4]) or [int(probabilities.argmax())]
    text = section_html(_text(pages["shapes-multilabel"]), "gallery")
    span = re.search(r'<td rowspan="(\d+)">#0</td>', text)
    block = text[span.end() : text.index(">#1</td>")]  # sample 0's rows
    shown = re.findall(r"<b>([a-z]+)</b><br>p = ([0-9.]+)<br>(.*?)</td>", block)
    assert [name for name, _, _ in shown] == [card["class_names"][k] for k in expected]
    assert int(span.group(1)) == len(shown)
    for name, p, tags in shown:
        k = card["class_names"].index(name)
        assert float(p) == pytest.approx(float(probabilities[k]), abs=0.006)
        assert (">true</span>" in tags) == bool(true[k])
        assert (">predicted</span>" in tags) == bool(predicted[k])
    assert text.count("<th>label</th>") == 1


@pytest.mark.filterwarnings("ignore:constant heatmaps")
def test_evaluation_numbers_are_those_of_evaluate_methods(pages, tiny_models):
    model, card = xaikit.load_model(tiny_models / "shapes-multiclass")
    dataset = load("shapes", "test", **dataset_options("shapes", card, 32))
    items = [dataset[i] for i in range(6)]
    report = evaluate_methods(
        model,
        torch.stack([item[0] for item in items]),
        ["gradcam", "gradcam++", "layercam", "saliency"],
        labels=torch.stack([item[1] for item in items]),
        masks=torch.stack([item[2] for item in items]),
        steps=4,
        class_names=card["class_names"],
        quiet=True,
    )
    text = section_html(_text(pages["shapes-multiclass"]), "evaluation")
    raw = re.search(r"<pre>(.*?)</pre>", text, re.S).group(1)
    shown = json.loads(html.unescape(raw))
    for method in ("gradcam", "saliency", "random", "gaussian"):
        for metric in ("deletion_auc", "insertion_auc", "pointing_game"):
            expected = report.scores[method][metric]["mean"]
            assert shown["scores"][method][metric]["mean"] == pytest.approx(expected, abs=1e-9)
        verdict = report.sanity[method]["randomization"]["verdict"]
        assert shown["sanity"][method]["randomization"]["verdict"] == verdict
    assert "deletion AUC ↓" in text and "insertion AUC ↑" in text
    assert text.count('class="badge pass"') + text.count('class="badge fail"') == 12
    assert 'class="badge fail"' in text  # the random baseline fails the randomization check


def test_recurrent_page_shows_gates_and_scores_temporal_maps(pages, tiny_models):
    text = _text(pages["recall-lstm"])
    recurrent = section_html(text, "recurrent")
    alts = [image["alt"] for image in parse(recurrent).images]
    assert "lstm states 0" in alts and "temporal inputxgrad 0" in alts
    assert "forget gate" in recurrent
    assert "no convolution filters" in section_html(text, "filters")

    model, card = xaikit.load_model(tiny_models / "recall-lstm")
    dataset = load("recall", "test", **dataset_options("recall", card, 32))
    sequences = torch.stack([dataset[i][0] for i in range(6)])
    maps = explain_sequence(model, sequences, method="gradxinput")
    hits = (maps.argmax(dim=1) == dataset.positions[:6]).float().mean()
    row = re.search(r"<td>inputxgrad</td><td>([0-9.]+)</td>", section_html(text, "evaluation"))
    assert float(row.group(1)) == pytest.approx(float(hits), abs=5e-4)


def test_sections_that_do_not_apply_say_so(pages):
    text = _text(pages["shapes-multiclass"])
    assert "Not a recurrent model" in section_html(text, "recurrent")
    filters = section_html(text, "filters")
    assert len(re.findall(r'alt="maximization \d+"', filters)) == SMALL["atlas_channels"]
    assert len(re.findall(r'alt="kernel \d+"', filters)) == SMALL["atlas_channels"]


def test_model_state_is_borrowed(tiny_models, tmp_path):
    model, card = xaikit.load_model(tiny_models / "shapes-multiclass")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    text = build_report(model, "shapes", None, card=card, **{**SMALL, "n": 3, "eval_n": 3})
    assert isinstance(text, str) and "<!DOCTYPE html>" in text
    assert model.training
    assert flags == [p.requires_grad for p in model.parameters()]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
    # A bare module has no checkpoint: the training section says where curves would be.
    assert "No training curves found" in section_html(text, "training")


def test_mismatched_model_and_data_is_a_clear_error(tiny_models):
    with pytest.raises(XaikitConfigError, match="6 outputs but data set 'digits' has 10"):
        build_report(str(tiny_models / "shapes-multiclass"), "digits", None, **SMALL)
    model = xaikit.create_model("simple_cnn", num_classes=6, in_channels=3)
    with pytest.raises(XaikitConfigError, match="names no data set"):
        build_report(model, None, None, **SMALL)


@pytest.mark.slow
def test_one_hundred_samples_stay_under_the_size_budget(tmp_path):
    """The worst case: 64x64 inputs and a random multi-label model that predicts every label,
    so the gallery has the most rows it can have (4 per sample, 4 methods each)."""
    model = xaikit.create_model(
        "simple_cnn", num_classes=6, task="multilabel", in_channels=3, input_size=64
    )
    path = xaikit.save_model(
        model,
        tmp_path / "wide",
        class_names=list(xaikit.data.SHAPE_CLASSES),
        input_shape=[3, 64, 64],
    )
    out = build_report(
        path,
        "shapes-multilabel",
        tmp_path / "report.html",
        n=100,
        evaluate=False,
        atlas_channels=4,
        atlas_steps=0,
        quiet=True,
    )
    size = out.stat().st_size
    assert size < SIZE_BUDGET, f"{size / 1e6:.2f} MB"
    gallery = section_html(out.read_text(encoding="utf-8"), "gallery")
    assert gallery.count("<tr>") - 1 >= 100  # every sample has at least one row
    assert len(parse(gallery).images) > 400


@pytest.mark.parametrize(
    ("arch", "layout", "shape", "expect"),
    [
        ("simple_cnn1d", "signal", [1, 40], ("signal atlas", "first-layer kernels")),
        ("gru", "sequence", [40, 1], ("No LSTM gates to show", "temporal heatmaps")),
    ],
)
def test_signal_cnn_and_gru_pages(arch, layout, shape, expect, tmp_path):
    """1-D CNNs get curves (gallery bands, a curve atlas); recurrent models other than LSTMs
    get temporal heatmaps and a note instead of gate plots."""
    classes = [str(d) for d in range(10)]
    size = {"input_size": shape[-1]} if layout == "signal" else {}
    model = xaikit.create_model(arch, num_classes=10, in_channels=1, **size)
    data = {"name": "mnist1d", "options": {"layout": layout}}
    path = xaikit.save_model(
        model, tmp_path / arch, class_names=classes, input_shape=shape, data=data
    )
    text = build_report(path, None, None, **{**SMALL, "n": 3, "eval_n": 3})
    page = parse(text)
    assert page.sections[: len(SECTION_IDS)] == list(SECTION_IDS)
    for image in page.images:
        decode_png(str(image["src"]))
    alts = {str(image["alt"]) for image in page.images}
    for needle in expect:
        assert needle in alts or needle in text, needle
    assert "Not available" not in text


def test_binary_model_on_an_image_folder(tmp_path):
    """A one-logit head: outcomes named from the folder's two classes, p of the predicted
    outcome, and sanity checks over its two outcomes (the logit z explained as (-z, z))."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(20):  # the held-out test split: 15 %, 3 per class
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    data = f"imagefolder:{tmp_path / 'data'}"
    model = xaikit.create_model(
        "simple_cnn", num_classes=1, task="binary", in_channels=3, input_size=16
    )
    path = xaikit.save_model(
        model,
        tmp_path / "binary",
        class_names=["cat", "dog"],
        input_shape=[3, 16, 16],
        data={"name": data, "options": {"size": 16}},
    )
    # A card never chooses a folder (security): the folder is named, as a user would.
    text = build_report(path, data, None, **{**SMALL, "exemplar_pool": 6})
    assert "Not available" not in text
    assert "sanity checks skipped" not in text
    evaluation = section_html(text, "evaluation")
    assert "randomization" in evaluation and "class contrast" in evaluation
    dataset = load(data, "test", size=16)
    order = balanced_order(dataset.targets, 0)  # a fixed folder is sampled class-balanced
    images = torch.stack([dataset[i][0] for i in order])
    with torch.no_grad():
        positive = model.eval()(images).sigmoid()[:, 0]
    shown = re.findall(r"true <b>(\w+)</b><br>pred (\w+) \(([0-9.]+)\)", text)
    assert sorted(truth for truth, _, _ in shown) == ["cat"] * 3 + ["dog"] * 3
    assert [truth for truth, _, _ in shown] == [dataset.classes[dataset.targets[i]] for i in order]
    for (_, pred, p), pos in zip(shown, positive.tolist()):
        expected = ("dog", pos) if pos >= 0.5 else ("cat", 1 - pos)
        assert (pred, float(p)) == (expected[0], pytest.approx(expected[1], abs=0.006))


def test_same_inputs_give_the_same_page(tiny_models):
    """Seeded throughout and no wall-clock stamp in the page: a report can be diffed."""
    settings = {**SMALL, "n": 3, "eval_n": 3}
    first = build_report(str(tiny_models / "shapes-multiclass"), None, None, **settings)
    second = build_report(str(tiny_models / "shapes-multiclass"), None, None, **settings)
    assert first == second


def test_atlas_defaults_to_the_block_around_the_first_convolution():
    from xaikit.viz.report_analysis import default_atlas_layer

    zoo = xaikit.create_model("simple_cnn", widths=(4, 8), input_size=16)
    assert default_atlas_layer(zoo) == "features.block1"
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    assert default_atlas_layer(plain) == "0"
