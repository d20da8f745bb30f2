"""Every example runs as a script in fast mode, offline, and writes the files it promises."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

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


def test_examples_have_help_and_a_fast_flag():
    for script in EXPECTED:
        text = (EXAMPLES / script).read_text(encoding="utf-8")
        assert '"--fast"' in text and '"--out"' in text and "XAIKIT_FAST" in text, script
        assert "plt.show" not in text and "http" not in text, script
