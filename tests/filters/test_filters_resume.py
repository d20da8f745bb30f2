"""An interrupted ``xaikit filters --mode maximize`` keeps its finished channel batches, and
``--resume`` redoes only the rest (and any journal record that does not check out)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

import xaikit
from xaikit import cli
from xaikit.filters.maximize import JOURNAL
from xaikit.zoo.checkpoint import save_model

maximize_module = importlib.import_module("xaikit.filters.maximize")
REAL_MAXIMIZE = maximize_module.maximize


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=12, widths=(4, 6))
    folder = tmp_path_factory.mktemp("model")
    return str(save_model(model.eval(), folder / "m", input_shape=[3, 12, 12]))


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> Path:
    """An uninterrupted run over channels 0-5 in batches of 2."""
    out = tmp_path_factory.mktemp("ref") / "out"
    assert _run(out, ckpt) == 0
    return out


def _run(out: Path, ckpt: str, *extra: str) -> int:
    argv = ["filters", "-m", ckpt, "--mode", "maximize", "--layer", "features.block2"]
    argv += ["--channels", "0-5", "--batch-size", "2", "--steps", "4", "--seed", "3"]
    return cli.main([*argv, "--out", str(out), "-q", *extra])


def _spy(monkeypatch, stop_at: list[int] | None = None) -> list[list[int]]:
    """Record the channel batches optimized (the 1-step timing probe left out); raise
    KeyboardInterrupt at the batch ``stop_at``."""
    real = REAL_MAXIMIZE
    calls: list[list[int]] = []

    def spy(model, layer, channels, **kwargs):
        if kwargs.get("steps") != 1:
            if list(channels) == stop_at:
                raise KeyboardInterrupt
            calls.append(list(channels))
        return real(model, layer, channels, **kwargs)

    monkeypatch.setattr(maximize_module, "maximize", spy)
    return calls


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_interrupted_run_keeps_finished_batches_and_resume_does_the_rest(
    ckpt, reference, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    calls = _spy(monkeypatch, stop_at=[4, 5])
    assert _run(out, ckpt) == 130  # interrupted after k = 2 batches
    assert calls == [[0, 1], [2, 3]]
    kept = sorted(p.name for p in (out / "maximize").iterdir())
    assert kept == [f"channel_{c:04d}.{ext}" for c in range(4) for ext in ("npy", "png")]
    assert not (out / "index.json").exists()

    calls = _spy(monkeypatch)
    assert _run(out, ckpt, "--resume") == 0
    assert calls == [[4, 5]]
    assert _tree(out) == _tree(reference)


def test_records_outside_the_folder_or_of_the_wrong_size_are_redone(
    ckpt, reference, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    assert _run(out, ckpt) == 0
    journal = out / JOURNAL
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for record in lines[1:]:
        if record["unit"] == 1:  # points outside the folder (a file that exists there)
            outside = tmp_path / "evil.png"
            outside.write_bytes(b"x" * 10)
            record["files"] = {"../evil.png": 10}
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines))
    png = out / "maximize" / "channel_0004.png"
    png.write_bytes(png.read_bytes()[:-5])  # truncated: size mismatch

    calls = _spy(monkeypatch)
    assert _run(out, ckpt, "--resume") == 0
    assert calls == [[1, 4]]
    tree = _tree(out)
    assert {k: v for k, v in tree.items() if k != JOURNAL} == {
        k: v for k, v in _tree(reference).items() if k != JOURNAL
    }


def test_resume_with_other_settings_is_refused(ckpt, reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(out, ckpt) == 0
    assert _run(out, ckpt, "--resume", "--seed", "4") == 2
    assert "other settings" in capsys.readouterr().err


def test_a_journal_whose_settings_line_is_torn_starts_over(ckpt, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _run(out, ckpt) == 0
    lines = (out / JOURNAL).read_text().splitlines()
    (out / JOURNAL).write_text('{"header": {"mo' + "\n" + "\n".join(lines[1:]) + "\n")
    calls = _spy(monkeypatch)
    # other settings would be refused if the header could be read; unreadable, it vouches for
    # nothing: every channel is rendered again and the journal starts with this run's settings
    assert _run(out, ckpt, "--resume", "--seed", "4") == 0
    assert calls == [[0, 1], [2, 3], [4, 5]]
    head = json.loads((out / JOURNAL).read_text().splitlines()[0])
    assert head["header"]["seed"] == 4


def test_resume_with_nothing_left_renders_nothing(ckpt, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _run(out, ckpt) == 0
    calls = _spy(monkeypatch)
    assert _run(out, ckpt, "--resume") == 0
    assert calls == [] and _tree(out) == _tree(reference)


exemplars_module = importlib.import_module("xaikit.filters.exemplars")
REAL_MERGE = exemplars_module._merge


def _exemplars(model, data, folder, *, resume=False):
    return exemplars_module.exemplars(
        model, "features.block2", data, 3, batch_size=8, state_dir=folder, resume=resume
    )


def _merges(monkeypatch, stop_at: int | None = None) -> list[int]:
    """Count data batches merged; raise KeyboardInterrupt at merge number ``stop_at``."""
    calls: list[int] = []

    def merge(best, new, k):
        if stop_at is not None and len(calls) + 1 == stop_at:
            raise KeyboardInterrupt
        calls.append(new[0].shape[1])
        return REAL_MERGE(best, new, k)

    monkeypatch.setattr(exemplars_module, "_merge", merge)
    return calls


@pytest.fixture
def model_and_data():
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=12, widths=(4, 6))
    return model.eval(), torch.rand(36, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_interrupted_exemplars_pass_resumes_where_it_stopped(model_and_data, tmp_path, monkeypatch):
    model, data = model_and_data
    whole = _exemplars(model, data, None)
    folder = tmp_path / "ex"
    _merges(monkeypatch, stop_at=3)  # batches 1 and 2 (16 inputs) done
    with pytest.raises(KeyboardInterrupt):
        _exemplars(model, data, folder)
    record = json.loads((folder / exemplars_module.STATE_RECORD).read_text())
    assert record["offset"] == 16
    calls = _merges(monkeypatch)
    resumed = _exemplars(model, data, folder, resume=True)
    assert calls == [8, 8, 4]  # only the rest of the data
    assert torch.equal(resumed.values, whole.values)
    assert torch.equal(resumed.indices, whole.indices) and torch.equal(resumed.crops, whole.crops)
    assert not (folder / exemplars_module.STATE).exists()  # removed once complete


def test_exemplars_state_of_the_wrong_size_or_settings_starts_over(
    model_and_data, tmp_path, monkeypatch
):
    model, data = model_and_data
    folder = tmp_path / "ex"
    _merges(monkeypatch, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        _exemplars(model, data, folder)
    state = folder / exemplars_module.STATE
    state.write_bytes(state.read_bytes() + b"x")
    calls = _merges(monkeypatch)
    _exemplars(model, data, folder, resume=True)
    assert calls == [8, 8, 8, 8, 4]  # the whole pass again


def test_interrupted_atlas_resumes_its_maximization(ckpt, tmp_path, monkeypatch):
    from xaikit.cli import filters as filters_command
    from xaikit.data import TensorDataset

    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.rand(12, 3, 12, 12, generator=gen),
        torch.zeros(12, dtype=torch.long),
        name="tiny",
        split="test",
        classes=["a", "b", "c"],
        task="multiclass",
        input_kind="image",
    )
    monkeypatch.setattr(filters_command, "load", lambda name, split="train", **kw: data)
    argv = ["filters", "-m", ckpt, "--mode", "atlas", "--layer", "features.block2", "-d", "x"]
    argv += ["--channels", "0-3", "--batch-size", "2", "--steps", "3", "--k", "2", "-q"]
    assert cli.main([*argv, "--out", str(tmp_path / "ref")]) == 0
    out = tmp_path / "out"
    _spy(monkeypatch, stop_at=[2, 3])
    assert cli.main([*argv, "--out", str(out)]) == 130
    calls = _spy(monkeypatch)
    assert cli.main([*argv, "--out", str(out), "--resume"]) == 0
    assert calls == [[2, 3]]
    assert _tree(out) == _tree(tmp_path / "ref")
