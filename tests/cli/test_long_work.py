"""Long or large runs are announced, refused past the limits without ``--yes``, and their
progress bars count real units of work (xaikit.estimates)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit import cli
from xaikit.cli import filters as filters_command
from xaikit.data import TensorDataset
from xaikit.estimates import LIMIT_FILES, explain_estimate, scorecam_batches
from xaikit.explain import scorecam
from xaikit.filters.activations import activations
from xaikit.filters.maximize import DEFAULT_CHANNELS, most_active_channels, probe_inputs
from xaikit.zoo.checkpoint import save_model


def _checkpoint(path: Path, classes: int) -> str:
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=classes, widths=(4, 8), input_size=16)
    save_model(model.eval(), path, input_shape=[3, 16, 16])
    return str(path)


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_explain_all_classes_is_refused_with_the_exact_file_count(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m600", 600)
    images = _images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    code = cli.main(["explain", str(images), "-m", ckpt, "-o", str(out), "-t", "all", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    expected = 2 * 600 * 4 + 2  # images x classes x files per map, results.json, journal
    assert expected > LIMIT_FILES
    assert f"1200 maps, {expected} files" in err
    assert err.strip().splitlines()[-1].startswith("xaikit: error: this run is large")
    assert "--yes" in err and not out.exists()


def test_explain_with_yes_writes_what_the_estimate_said(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XAIKIT_LIMIT_FILES", "20")
    ckpt = _checkpoint(tmp_path / "m6", 6)
    images = _images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    argv = ["explain", str(images), "-m", ckpt, "-o", str(out), "-t", "all", "-q"]
    assert cli.main(argv) == 2 and not out.exists()
    assert "50 files" in capsys.readouterr().err
    assert cli.main([*argv, "--yes"]) == 0
    assert len(_files(out)) == explain_estimate(2, 6, 1).files == 50


def test_small_explain_runs_print_no_estimate(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m3", 3)
    images = _images(tmp_path / "imgs", 1)
    assert cli.main(["explain", str(images), "-m", ckpt, "-o", str(tmp_path / "o"), "-q"]) == 0
    assert "files" not in capsys.readouterr().err


@pytest.fixture
def wide(tmp_path):
    """A checkpoint whose ``features.block2`` has 12 channels (more than the default 8)."""
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=12, widths=(4, 12))
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    path = save_model(model.eval(), tmp_path / "wide", input_shape=[3, 12, 12], normalization=norm)
    return model.eval(), str(path), norm


@pytest.fixture
def tiny_data(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    inputs = torch.rand(20, 3, 12, 12, generator=gen)
    dataset = TensorDataset(
        inputs,
        torch.zeros(20, dtype=torch.long),
        name="tiny",
        split="test",
        classes=["a", "b", "c"],
        task="multiclass",
        input_kind="image",
    )
    monkeypatch.setattr(filters_command, "load", lambda name, split="train", **kw: dataset)
    return inputs


def _maximize(out: Path, ckpt: str, *extra: str) -> int:
    base = ["filters", "-m", ckpt, "--mode", "maximize", "--layer", "features.block2"]
    return cli.main([*base, "--steps", "2", "--out", str(out), "-q", *extra])


def test_maximize_defaults_to_the_most_active_channels_of_the_data(tmp_path, wide, tiny_data):
    model, ckpt, norm = wide
    out = tmp_path / "m"
    assert _maximize(out, ckpt, "--data", "tiny") == 0
    index = json.loads((out / "index.json").read_text())
    units = [row["unit"] for row in index["channels"]]
    acts = activations(model, tiny_data[:16], "features.block2", normalization=norm)
    means = acts["features.block2"].mean(dim=(0, 2, 3))
    assert units == means.argsort(descending=True)[:DEFAULT_CHANNELS].tolist()
    assert len(units) == DEFAULT_CHANNELS == 8
    assert sorted(p.name for p in (out / "maximize").glob("*.png")) == [
        f"channel_{u:04d}.png" for u in sorted(units)
    ]


def test_maximize_defaults_to_noise_without_data(tmp_path, wide):
    model, ckpt, norm = wide
    out = tmp_path / "m"
    assert _maximize(out, ckpt) == 0
    units = [row["unit"] for row in json.loads((out / "index.json").read_text())["channels"]]
    probe = probe_inputs(model, 12, seed=0)
    acts = activations(model, probe, "features.block2", normalization=norm)["features.block2"]
    assert units == acts.mean(dim=(0, 2, 3)).argsort(descending=True)[:8].tolist()
    assert units == most_active_channels(model, "features.block2", probe, normalization=norm)


def test_maximize_over_the_limits_is_refused(tmp_path, wide, monkeypatch, capsys):
    monkeypatch.setenv("XAIKIT_LIMIT_FILES", "10")
    _model, ckpt, _norm = wide
    out = tmp_path / "m"
    assert _maximize(out, ckpt, "--channels", "all") == 2
    err = capsys.readouterr().err
    assert "maximize: 12 channels" in err and "27 files" in err and not out.exists()
    assert _maximize(out, ckpt, "--channels", "all", "--yes") == 0
    assert len(list((out / "maximize").glob("*.png"))) == 12


class _Bar:
    """A stand-in for tqdm that records its total and its updates."""

    made: ClassVar[list[_Bar]] = []

    def __init__(self, *args, total=None, **kwargs) -> None:
        self.total, self.updates = total, []
        _Bar.made.append(self)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.updates.append(n)


def test_scorecam_bar_ticks_once_per_masked_batch(monkeypatch):
    monkeypatch.setattr(scorecam, "tqdm", _Bar)
    _Bar.made.clear()
    calls = []

    def forward(x, rows):
        calls.append(x.shape[0])
        return torch.zeros(x.shape[0], 3)

    x = torch.rand(3, 3, 8, 8)
    acts = torch.rand(3, 5, 4, 4)
    channels = torch.arange(5).expand(3, 5)
    targets = torch.zeros(3, 1, dtype=torch.long)
    scorecam.masked_scores(forward, x, acts, targets, channels, batch_size=4, quiet=False)
    (bar,) = _Bar.made
    assert bar.total == len(calls) == scorecam_batches(3, 5, 4) == 4
    assert bar.updates == [1, 1, 1, 1] and sum(calls) == 15


def test_scorecam_estimate_counts_masked_batches(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XAIKIT_LIMIT_SECONDS", "0")  # any time is over: the line is printed
    ckpt = _checkpoint(tmp_path / "m3", 3)
    images = _images(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    argv = ["explain", str(images), "-m", ckpt, "-o", str(out), "--method", "scorecam", "-q"]
    assert cli.main([*argv, "--batch-size", "2"]) == 2 and not out.exists()
    # simple_cnn widths (4, 8): the CAM layer has 8 channels; image batches of 2 and 1
    batches = scorecam_batches(3, 8, scorecam.DEFAULT_BATCH_SIZE, 2)
    assert batches == 2
    assert f"score-cam: {batches} masked batches" in capsys.readouterr().err
