"""A bare reference name always loads the shipped model; ``./name`` loads the local file.

What ``--model digits-cnn`` loads must not depend on the folder a command runs in: a planted
``digits-cnn.safetensors`` (or folder ``digits-cnn``) in the working directory is ignored for
the bare name and loaded only when written as a path. The loaded card says which file it read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import xaikit
from xaikit.cli import main
from xaikit.errors import CheckpointError
from xaikit.explain.files import explain_files
from xaikit.zoo.checkpoint import (
    PACKAGED_MODELS_DIR,
    is_bare_name,
    list_shipped_models,
    provenance,
    resolve_checkpoint,
    shipped_models_dir,
)

NAME = "digits-cnn"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _first_tensor(path: Path) -> tuple[str, torch.Tensor]:
    state = load_file(str(path))
    key = sorted(state)[0]
    return key, state[key]


@pytest.fixture(autouse=True)
def _packaged_models(monkeypatch):
    """These tests are about the packaged models, not an override from the environment."""
    monkeypatch.delenv("XAIKIT_MODELS_DIR", raising=False)


@pytest.fixture
def shipped() -> Path:
    path = PACKAGED_MODELS_DIR / f"{NAME}.safetensors"
    assert path.is_file(), f"{path}: the reference model is not in the package"
    return path


@pytest.fixture(params=["file", "folder"])
def planted(request, tmp_path, monkeypatch) -> Path:
    """A cwd holding ``digits-cnn.safetensors`` + card (or ``digits-cnn/model.*``) whose
    weights and card differ from the shipped model's; returns the planted weights file."""
    model, card = xaikit.load_model(NAME)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    fields = {k: v for k, v in card.items() if k not in ("weights_file", "weights_sha256")}
    fields["metrics"] = {"test_accuracy": 0.0}
    base = tmp_path / NAME if request.param == "file" else tmp_path / NAME / "model"
    weights = xaikit.save_model(model, base, **fields)
    monkeypatch.chdir(tmp_path)
    return weights


def test_shipped_models_live_inside_the_package():
    assert shipped_models_dir() == PACKAGED_MODELS_DIR
    assert PACKAGED_MODELS_DIR.parent == Path(xaikit.__file__).resolve().parent
    assert len(list_shipped_models()) >= 5


def test_models_dir_override_still_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIKIT_MODELS_DIR", str(tmp_path))
    assert shipped_models_dir() == tmp_path
    assert list_shipped_models() == []


def test_bare_reference_name_loads_the_shipped_model(planted, shipped):
    assert resolve_checkpoint(NAME) == shipped
    model, card = xaikit.load_model(NAME)
    key, shipped_tensor = _first_tensor(shipped)
    _, planted_tensor = _first_tensor(planted)
    loaded = model.state_dict()[key]
    assert torch.equal(loaded, shipped_tensor)
    assert not torch.equal(loaded, planted_tensor)
    assert card["metrics"]["test_accuracy"] > 0.9  # the shipped card, not the planted one


def test_dot_slash_name_loads_the_local_file(planted, shipped):
    model, card = xaikit.load_model(f"./{NAME}")
    key, planted_tensor = _first_tensor(planted)
    assert torch.equal(model.state_dict()[key], planted_tensor)
    assert card["metrics"] == {"test_accuracy": 0.0}
    assert resolve_checkpoint(f"./{NAME}").resolve() == planted.resolve()


@pytest.mark.parametrize("spec", [NAME, f"./{NAME}"])
def test_card_source_is_the_file_actually_read(planted, shipped, spec):
    _, card = xaikit.load_model(spec)
    read = shipped if spec == NAME else planted
    assert card["source"] == {"path": str(read.resolve()), "sha256": _sha256(read)}


def test_provenance_is_the_absolute_path_and_digest(planted):
    relative = Path(planted.relative_to(Path.cwd()))
    assert provenance(relative) == {"path": str(planted.resolve()), "sha256": _sha256(planted)}


def test_a_local_name_that_is_no_reference_model_still_loads(tmp_path, monkeypatch):
    model = xaikit.create_model("simple_cnn", num_classes=2, widths=(4, 8), input_size=8)
    weights = xaikit.save_model(model, tmp_path / "mine", input_shape=[3, 8, 8])
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("mine") == Path("mine.safetensors")
    assert resolve_checkpoint("mine").resolve() == weights.resolve()


def test_unknown_bare_name_lists_the_reference_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"no reference model or checkpoint named 'nope'.*"):
        resolve_checkpoint("nope")
    with pytest.raises(CheckpointError, match=NAME):
        resolve_checkpoint("nope")


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("digits-cnn", True),
        ("./digits-cnn", False),
        ("runs/digits-cnn", False),
        ("digits-cnn/", False),
        ("digits-cnn.safetensors", False),
        ("/abs/digits-cnn", False),
        (".", False),
        ("", False),
    ],
)
def test_what_counts_as_a_bare_name(text, bare):
    assert is_bare_name(text) is bare


def test_explain_results_record_the_model_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "img.png"
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    out = tmp_path / "out"
    argv = ["explain", str(image), "--model", "shapes-multiclass", "--out", str(out), "-q"]
    assert main([*argv, "--no-figure", "--device", "cpu"]) == 0
    run = json.loads((out / "results.json").read_text(encoding="utf-8"))["run"]
    weights = shipped_models_dir() / "shapes-multiclass.safetensors"
    assert run["model"]["model"] == "shapes-multiclass"
    assert run["model_source"] == {"path": str(weights.resolve()), "sha256": _sha256(weights)}


def test_results_keep_model_source_out_of_the_resume_check(tmp_path):
    model, card = xaikit.load_model("shapes-multiclass")
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"

    def run(source: dict[str, str], *, resume: bool) -> dict:
        explain_files(
            model,
            [image],
            out,
            input_shape=card["input_shape"],
            normalization=card.get("normalization"),
            figures=False,
            resume=resume,
            model_info={"model": "shapes-multiclass", "model_source": source},
            quiet=True,
            workers=0,
        )
        return json.loads((out / "results.json").read_text(encoding="utf-8"))["run"]

    first = {"path": "/a/shapes-multiclass.safetensors", "sha256": "0" * 64}
    assert run(first, resume=False)["model_source"] == first
    # The same weights read from another copy (another install) may resume the run.
    moved = {**first, "path": "/b/shapes-multiclass.safetensors"}
    results = run(moved, resume=True)
    assert results["model_source"] == moved
    assert "model_source" not in results["model"]
