"""No foreign code: a pickle that would run code (it creates a marker file) is refused under
any name, extension or wrapping, by ``load_model`` and by every command's ``--model``, and
the marker never appears."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_files import (
    CHECKPOINT_NAMES,
    HOSTILE_FORMS,
    files_under,
    hostile_bytes,
    plant_hostile,
    write_image,
)

import xaikit
from xaikit.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("form", HOSTILE_FORMS)
def test_the_payloads_really_run_code_when_unpickled(tmp_path, form):
    """The control: without xaikit's refusal each payload would have created its marker."""
    marker = tmp_path / "marker"
    data = hostile_bytes(marker, form)
    if form.startswith("torch"):
        torch.load(io.BytesIO(data), weights_only=False)
    else:
        pickle.loads(data[8:] if form == "after-fake-header" else data)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
@pytest.mark.parametrize("form", HOSTILE_FORMS)
def test_load_model_refuses_a_hostile_pickle_under_any_name(tmp_path, form, name):
    marker = tmp_path / "marker"
    given = plant_hostile(tmp_path / "ckpt", name, marker, form)
    with pytest.raises(xaikit.CheckpointError):
        xaikit.load_model(given)
    with pytest.raises(xaikit.CheckpointError):
        xaikit.load_model(str(given))
    assert not marker.exists()


def test_a_hostile_reference_model_name_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    plant_hostile(tmp_path / "models", "evil.safetensors", marker)
    monkeypatch.setenv("XAIKIT_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(xaikit.CheckpointError, match="pickle"):
        xaikit.load_model("evil")
    assert not marker.exists()


def _command(name: str, model: str, tmp: Path) -> list[str]:
    out = str(tmp / "out")
    if name == "layers":
        return ["layers", "--model", model]
    if name == "explain":
        image = write_image(tmp / "inputs" / "x.png")
        return ["explain", str(image), "--model", model, "--out", out, "-q"]
    if name == "filters":
        return ["filters", "--model", model, "--mode", "weights", "--out", out, "-q"]
    if name == "report":
        return ["report", "--model", model, "--data", "shapes", "--out", out + "/r.html", "-q"]
    if name == "evaluate":
        return ["evaluate", "--model", model, "--data", "shapes", "--n", "4", "--out", out]
    raise ValueError(name)  # pragma: no cover


@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
@pytest.mark.parametrize("command", ["layers", "explain", "filters", "evaluate", "report"])
def test_every_model_option_refuses_a_hostile_pickle(tmp_path, capsys, command, name):
    marker = tmp_path / "marker"
    given = plant_hostile(tmp_path / "ckpt", name, marker, "torch-zip")
    assert main(_command(command, str(given), tmp_path)) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err
    assert line.startswith("xaikit: error: ")
    assert not marker.exists()
    assert files_under(tmp_path / "out") == []


def test_demo_refuses_hostile_reference_models(tmp_path, capsys):
    marker = tmp_path / "marker"
    for name in ["shapes-multiclass", "shapes-multilabel", "recall-lstm"]:
        plant_hostile(tmp_path / "models", f"{name}.safetensors", marker, "torch-zip")
    args = ["demo", "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "models")]
    assert main([*args, "--fast", "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pickle" in line
    assert not marker.exists()
    assert files_under(tmp_path / "out") == []


def test_train_resume_refuses_hostile_checkpoint_files(tmp_path, capsys):
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    plant_hostile(out, "last.safetensors", marker, "pickle4")
    (out / "last.train.safetensors").write_bytes(hostile_bytes(marker, "torch-zip"))
    (out / "last.train.json").write_text(json.dumps({"format": "xaikit-training-state"}))
    args = ["train", "--data", "shapes", "--model", "simple_cnn", "--epochs", "2", "--resume"]
    args += ["--data-option", "n=60", "--data-option", "size=16", "--out", str(out), "-q"]
    assert main(args) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and "last" in line
    assert not marker.exists()


def test_a_model_card_cannot_make_torchvision_unpickle_its_cache(tmp_path, monkeypatch):
    """A card may say ``"weights": "DEFAULT"`` for a fine-tuned torchvision model. Loading
    must take the weights from the safetensors file only: torchvision would otherwise read
    ``$TORCH_HOME/hub/checkpoints/<file>.pth`` with ``torch.load(weights_only=False)`` (or
    need the network)."""
    import torchvision

    marker = tmp_path / "marker"
    url = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT.url
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(hostile_bytes(marker, "torch-zip"))
    model = xaikit.create_model("torchvision:squeezenet1_1", num_classes=1000)
    xaikit.save_model(model, tmp_path / "fine-tuned", input_shape=[3, 64, 64])
    card_path = tmp_path / "fine-tuned.json"
    card = json.loads(card_path.read_text())
    card["config"]["weights"] = "DEFAULT"
    card_path.write_text(json.dumps(card))

    loaded, _card = xaikit.load_model(tmp_path / "fine-tuned")
    assert not marker.exists()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_planted_cifar10_pickle_is_refused_by_its_checksum(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["batches.meta", "test_batch", *[f"data_batch_{i}" for i in range(1, 6)]]:
        (folder / name).write_bytes(hostile_bytes(marker, "pickle2"))
    with pytest.raises(xaikit.DataError, match="cifar10"):
        xaikit.data.load("cifar10", "test", root=tmp_path)
    assert not marker.exists()


@pytest.mark.slow
def test_process_refuses_a_hostile_pickle_renamed_to_pt(tmp_path):
    marker = tmp_path / "marker"
    given = plant_hostile(tmp_path, "model.pt", marker, "torch-legacy")
    image = write_image(tmp_path / "x.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XAIKIT_QUIET": "1"}
    args = ["explain", str(image), "--model", str(given), "--out", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-m", "xaikit", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "model.pt" in line and "pickle" in line
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
