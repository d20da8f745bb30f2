"""``xaikit train``: flags and recipes train a model and write checkpoint, card and history."""

import json

import pytest
import torch

import xaikit
from xaikit.cli import main
from xaikit.train.recipe import Recipe

TINY = ["--data-option", "n=240", "--data-option", "size=16", "--model-option", "widths=[4,8]"]


def test_train_from_flags_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            "shapes",
            "--model",
            "simple_cnn",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--lr",
            "0.01",
            "--seed",
            "3",
            "--quiet",
            *TINY,
        ]
    )
    assert code == 0
    names = {p.name for p in out.iterdir()}
    expected = {
        "model.safetensors",
        "model.json",
        "best.safetensors",
        "last.safetensors",
        "history.csv",
        "history.json",
        "curves.png",
        "metrics.json",
    }
    assert expected <= names
    model, card = xaikit.load_model(out / "model")
    metrics = json.loads((out / "metrics.json").read_text())
    assert card["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    # The recorded figure is the chosen model's accuracy on the test split it was given.
    test = xaikit.data.load("shapes", "test", n=240, size=16)
    with torch.no_grad():
        logits = model(torch.stack([test[i][0] for i in range(len(test))]))
    measured = float((logits.argmax(dim=1) == test.targets).double().mean())
    assert metrics["test_accuracy"] == pytest.approx(measured, abs=1e-9)
    assert card["class_names"] == ["circle", "square", "triangle", "cross", "star", "ring"]
    assert card["input_shape"] == [3, 16, 16]
    assert card["recipe"]["train"]["options"]["lr"] == 0.01
    assert card["seed"] == 3
    assert f"test_accuracy          {metrics['test_accuracy']:.4f}" in capsys.readouterr().out
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 6)


def test_recipe_reproduces_the_same_weights(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        """
[data]
name = "shapes-multilabel"
options = { n = 120, size = 16, seed = 1 }
val_fraction = 0.25

[model]
arch = "simple_cnn"
options = { widths = [4, 8] }

[train]
epochs = 1
options = { optimizer = "sgd", lr = 0.05, momentum = 0.9, seed = 5 }
"""
    )
    for run in ("a", "b"):
        assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / run), "-q"]) == 0
    a, card = xaikit.load_model(tmp_path / "a" / "model")
    b, _ = xaikit.load_model(tmp_path / "b" / "model")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert card["task"] == "multilabel"
    assert {"test_map", "test_f1_micro"} <= set(card["metrics"])


def test_recipe_errors_are_clear(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nname = 'shapes'\n[model]\n")
    assert main(["train", "--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "needs [data] name" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "o")]) == 2
    assert "--data and --model" in capsys.readouterr().err
    assert main(["train", "--data", "nope", "--model", "simple_cnn", "--out", "o"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    code = main(
        [
            "train",
            "--data",
            "shapes",
            "--model",
            "simple_cnn",
            "--out",
            str(tmp_path / "r"),
            "--resume",
            "-q",
            *TINY,
        ]
    )
    assert code == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_recipe_round_trips_through_a_dict():
    recipe = Recipe(data="digits", model="simple_cnn", epochs=3, model_options={"widths": [8, 16]})
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(xaikit.XaikitConfigError, match="unknown table"):
        Recipe.from_dict({**recipe.to_dict(), "extra": {}})
