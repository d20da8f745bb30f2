"""Every example runs as a script in fast mode, offline, and writes the files it promises."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit.data import load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# script -> the files it writes into --out
EXPECTED = {
    "quickstart.py": [
        "gradcam_0.png",
        "gradcam_1.png",
        "methods.png",
        "gradcam/explanation.npz",
        "gradcam/explanation.json",
    ],
    "multilabel_heatmaps.py": ["labels.png", "true_labels.png", "labels.json"],
    "filter_inspection.py": [
        "weights.png",
        "feature_maps.png",
        "maximize.png",
        "exemplars.png",
        "atlas.html",
        "channels.json",
    ],
    "lstm_inspection.py": ["gates.png", "temporal.png", "sequence0.png", "hits.json"],
    "train_on_image_folder.py": [
        "run/model.safetensors",
        "run/model.json",
        "run/curves.png",
        "heatmaps.png",
        "report.html",
    ],
    "explain_torchvision.py": ["layers.txt", "resnet18.png", "resnet18_layer3.png", "top5.json"],
}


def _load_helper():
    """The tiny-model trainer shared with the report tests (tests/report/report_models.py)."""
    path = ROOT / "tests" / "report" / "report_models.py"
    spec = importlib.util.spec_from_file_location("report_models_for_examples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _load_helper().train_tiny_models(tmp_path_factory.mktemp("models"))


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_in_fast_mode(script, models_dir, tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "XAIKIT_MODELS_DIR": str(models_dir),
        "XAIKIT_FAST": "1",
        "XAIKIT_QUIET": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in EXPECTED[script]:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        if path.suffix == ".json":
            json.loads(path.read_text())
        assert str(path) in done.stdout or path.parent.name in ("gradcam", "run"), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written elsewhere
    JSON_CHECKS[script](out, models_dir)


# --- what each example's JSON says, recomputed here -------------------------------------------


def _read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _check_quickstart(out: Path, models_dir: Path) -> None:
    """gradcam/explanation.json names the predicted class of each of the 2 fast-mode test
    images, agreeing with the .npz beside it and with the model run here."""
    meta = _read(out / "gradcam" / "explanation.json")
    model, card = xaikit.load_model(models_dir / "shapes-multiclass")
    size = card["input_shape"][-1]
    test = load("shapes", "test", n=2, size=size)
    with torch.no_grad():
        predicted = model(torch.stack([test[i][0] for i in range(2)])).argmax(dim=1).tolist()
    settings = [meta[key] for key in ("method", "score", "normalize", "single")]
    assert settings == ["gradcam", "logit", "minmax", True]
    assert meta["shape"] == [2, 1, size, size]
    # Names are recorded when explain() knows them (class_names=...); the indices always are.
    assert meta["target_names"] in (None, [[card["class_names"][p]] for p in predicted])
    arrays = np.load(out / "gradcam" / "explanation.npz")
    assert arrays["targets"].tolist() == [[p] for p in predicted]
    assert arrays["maps"].shape == (2, 1, size, size)


def _check_multilabel(out: Path, models_dir: Path) -> None:
    """labels.json lists, for each of the 3 images, exactly its true labels in index order,
    with the model's sigmoid probability of each (rounded to 4 decimals)."""
    summary = _read(out / "labels.json")
    model, card = xaikit.load_model(models_dir / "shapes-multilabel")
    test = load("shapes-multilabel", "test", n=3, size=card["input_shape"][-1])
    with torch.no_grad():
        probs = model(torch.stack([test[i][0] for i in range(3)])).sigmoid()
    assert [entry["image"] for entry in summary] == [0, 1, 2]
    for i, entry in enumerate(summary):
        labels = test.targets[i].nonzero().flatten().tolist()
        rows = entry["true_labels"]
        assert [row["label"] for row in rows] == [card["class_names"][k] for k in labels]
        for row, k in zip(rows, labels):
            assert row["probability"] == pytest.approx(float(probs[i, k]), abs=1e-4)
            assert 0.0 <= row["energy_in_mask"] <= 1.0


def _check_filters(out: Path, models_dir: Path) -> None:
    """channels.json: the first convolution's kernel norms and the channel means of image 0
    match the model; the strongest channels are the 5 largest means; 6 exemplars per
    channel among the 48 searched images."""
    data = _read(out / "channels.json")
    model, card = xaikit.load_model(models_dir / "shapes-multiclass")
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    norms = torch.linalg.vector_norm(first.weight.detach(), dim=(1, 2, 3)).tolist()
    assert data["first_layer_kernel_norms"] == pytest.approx(norms, abs=1e-5)
    layer = dict(model.named_modules())[data["layer"]]
    image = load("shapes", "test", n=48, size=card["input_shape"][-1])[0][0][None]
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.update(out=o.detach()))
    with torch.no_grad():
        model(image)
    handle.remove()
    means = captured["out"][0].flatten(1).mean(dim=1).tolist()
    assert data["mean_activation_of_image_0"] == pytest.approx(means, abs=1e-5)
    shown = data["mean_activation_of_image_0"]
    strongest = data["strongest_channels_of_image_0"]
    assert [shown[c] for c in strongest] == sorted(shown, reverse=True)[:5]
    assert set(data["exemplars"]) == {"0", "1", "2"}
    for row in data["exemplars"].values():
        assert len(row) == len(set(row)) == 6 and all(0 <= i < 48 for i in row)


def _check_lstm(out: Path, models_dir: Path) -> None:
    """hits.json: 6 sequences, a hit rate per method in sixths, and the random baseline's
    rate recomputed exactly from its seed and the markers of the test sequences."""
    data = _read(out / "hits.json")
    _, card = xaikit.load_model(models_dir / "recall-lstm")
    length, features = card["input_shape"]
    test = load("recall", "test", n=6, length=length, num_classes=features - 1)
    random = torch.rand(6, length, generator=torch.Generator().manual_seed(0))
    expected = float((random.argmax(dim=1) == test.positions).float().mean())
    assert data["sequences"] == 6
    rates = data["marker_hit_rate"]
    assert set(rates) == {"inputxgrad", "occlusion", "random"}
    assert rates["random"] == expected
    for rate in rates.values():
        assert rate * 6 == pytest.approx(round(rate * 6))


def _check_torchvision(out: Path, models_dir: Path) -> None:
    """top5.json: the default CAM layer of a ResNet-18 and the 5 top classes of each of the
    2 fast-mode images under its seeded random weights, recomputed here."""
    data = _read(out / "top5.json")
    model, card = xaikit.load_model("torchvision:resnet18")
    images = torch.stack([item[0] for item in load("shapes", "test", n=2, size=112)])
    with torch.no_grad():
        top5 = model(xaikit.data.normalize(images, card["normalization"])).topk(5, dim=1)
    assert data["layer"] == "layer4"
    assert data["top5"] == top5.indices.tolist()


def _check_image_folder(out: Path, models_dir: Path) -> None:
    """run/model.json, the trained model's card: the folder's classes, the input shape, one
    epoch, and a test accuracy that is a whole number of the 24 test images."""
    card = _read(out / "run" / "model.json")
    shapes = load("shapes", "train", n=120, size=32, seed=0)
    present = {shapes.classes[int(t)] for t in shapes.targets}
    assert card["class_names"] == sorted(present)
    assert card["input_shape"] == [3, 32, 32]
    assert card["metrics"]["epochs"] == 1
    correct = card["metrics"]["test_accuracy"] * 24
    assert correct == pytest.approx(round(correct))


JSON_CHECKS = {
    "quickstart.py": _check_quickstart,
    "multilabel_heatmaps.py": _check_multilabel,
    "filter_inspection.py": _check_filters,
    "lstm_inspection.py": _check_lstm,
    "explain_torchvision.py": _check_torchvision,
    "train_on_image_folder.py": _check_image_folder,
}


def test_examples_have_help_and_a_fast_flag():
    for script in EXPECTED:
        text = (EXAMPLES / script).read_text(encoding="utf-8")
        assert '"--fast"' in text and '"--out"' in text and "XAIKIT_FAST" in text, script
        assert "plt.show" not in text and "http" not in text, script
