"""``xaikit filters`` writes the PNG grids and a JSON index for every mode."""

from __future__ import annotations

import json

import pytest
import torch

import xaikit
from xaikit import cli
from xaikit.cli import filters as filters_command
from xaikit.data import TensorDataset
from xaikit.zoo.checkpoint import save_model


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=12, widths=(4, 6))
    return save_model(
        model.eval(),
        tmp_path / "model",
        input_shape=[3, 12, 12],
        normalization={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    )


@pytest.fixture
def tiny_data(monkeypatch):
    """``--data tiny`` gives 20 random 12x12 images (the real loader is tested elsewhere)."""
    calls = []
    gen = torch.Generator().manual_seed(0)
    dataset = TensorDataset(
        torch.rand(20, 3, 12, 12, generator=gen),
        torch.zeros(20, dtype=torch.long),
        name="tiny",
        split="test",
        classes=["a", "b", "c"],
        task="multiclass",
        input_kind="image",
    )

    def load(name, split="train", **options):
        calls.append((name, split))
        return dataset

    monkeypatch.setattr(filters_command, "load", load)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["filters"])
    return calls


def _run(*argv: str) -> int:
    return cli.main(["filters", *argv, "--quiet"])


def _index(folder) -> dict:
    index = json.loads((folder / "index.json").read_text())
    for name in index["files"]:
        assert (folder / name).read_bytes().startswith(b"\x89PNG") or name.endswith(".html")
    return index


def test_weights_mode(tmp_path, checkpoint, tiny_data):
    out = tmp_path / "w"
    assert _run("--model", str(checkpoint), "--mode", "weights", "--out", str(out)) == 0
    index = _index(out)
    assert index["layer"] == "features.block1.conv" and index["kernels"] == 4
    assert index["kernel_shape"] == [3, 3, 3] and index["files"] == [
        "weights.png",
        "weights_grid.png",
    ]
    assert not tiny_data  # no data needed


def test_activations_mode(tmp_path, checkpoint, tiny_data):
    out = tmp_path / "a"
    code = _run(
        "--model",
        str(checkpoint),
        "--mode",
        "activations",
        "--data",
        "tiny",
        "--n",
        "3",
        "--layer",
        "features.block1",
        "--out",
        str(out),
    )
    assert code == 0 and tiny_data == [("tiny", "test")]
    index = _index(out)
    assert index["files"] == [f"activations_{i:04d}.png" for i in range(3)]
    assert index["shape"] == [4, 6, 6] and len(index["inputs"]) == 3
    assert index["normalization"]["std"] == [0.25, 0.25, 0.25]


def test_maximize_mode(tmp_path, checkpoint, tiny_data):
    out = tmp_path / "m"
    code = _run(
        "--model",
        str(checkpoint),
        "--mode",
        "maximize",
        "--layer",
        "features.block2",
        "--channels",
        "0,2-3",
        "--steps",
        "6",
        "--seed",
        "1",
        "--out",
        str(out),
    )
    assert code == 0
    index = _index(out)
    assert [row["unit"] for row in index["channels"]] == [0, 2, 3]
    assert "maximize/channel_0002.png" in index["files"] and index["seed"] == 1
    assert set(index["channels"][0]) == {"unit", "initial", "score", "gain", "flat"}


def test_exemplars_mode(tmp_path, checkpoint, tiny_data):
    out = tmp_path / "e"
    code = _run(
        "--model",
        str(checkpoint),
        "--mode",
        "exemplars",
        "--data",
        "tiny",
        "--k",
        "4",
        "--out",
        str(out),
    )
    assert code == 0
    index = _index(out)
    assert index["layer"] == "features.block2"  # 'auto': the last spatial block
    assert index["receptive_field"] == {"size": [8, 8], "jump": [2, 2], "start": [-3, -3]}
    assert len(index["channels"]) == 6 and len(index["channels"][0]["indices"]) == 4


def test_atlas_mode_writes_a_standalone_page(tmp_path, checkpoint, tiny_data):
    out = tmp_path / "atlas"
    code = _run(
        "--model",
        str(checkpoint),
        "--mode",
        "atlas",
        "--data",
        "tiny",
        "--layer",
        "features.block1",
        "--channels",
        "1",
        "--k",
        "2",
        "--steps",
        "4",
        "--out",
        str(out),
    )
    assert code == 0
    index = _index(out)
    assert index["files"] == ["atlas.png", "atlas.html"]
    page = (out / "atlas.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "http" not in page


def test_bad_input_exits_2_with_one_line(tmp_path, checkpoint, tiny_data, capsys):
    base = ["--model", str(checkpoint), "--out", str(tmp_path / "x")]
    assert _run(*base, "--mode", "exemplars") == 2
    assert "needs --data" in capsys.readouterr().err
    assert _run(*base, "--mode", "maximize", "--channels", "a-b") == 2
    assert "--channels" in capsys.readouterr().err
    assert _run(*base, "--mode", "weights", "--layer", "nope") == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
    assert _run("--model", str(tmp_path / "missing"), "--mode", "weights", "--out", "x") == 2
    assert not (tmp_path / "x").exists()


def test_atlas_without_channels_shows_the_eight_most_active(tmp_path, tiny_data):
    """An atlas maximizes each channel it shows: by default the handful maximize uses, not
    all of them (the newcomer's 512-channel run)."""
    from xaikit.filters.maximize import most_active_channels

    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=12, widths=(4, 12))
    normalization = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    checkpoint = save_model(
        model.eval(), tmp_path / "wide", input_shape=[3, 12, 12], normalization=normalization
    )
    out = tmp_path / "atlas"
    argv = ["--model", str(checkpoint), "--mode", "atlas", "--data", "tiny"]
    argv += ["--layer", "features.block2", "--k", "2", "--steps", "2", "--out", str(out)]
    assert _run(*argv) == 0
    shown = [row["unit"] for row in _index(out)["channels"]]
    probe = torch.rand(20, 3, 12, 12, generator=torch.Generator().manual_seed(0))[:16]
    expected = most_active_channels(model, "features.block2", probe, 8, normalization=normalization)
    assert len(shown) == 8 < 12 and shown == expected
