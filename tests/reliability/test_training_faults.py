"""Faults in training lose nothing: SIGKILL or Ctrl-C mid-epoch, a crash between checkpoint
files, a loss that becomes nan or inf.

``xaikit train`` runs in a real process where a signal must arrive from outside; a resumed
run must end with the same weights, bit for bit, as one that was never interrupted (CPU,
one thread in every process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import xaikit
from xaikit.cli import main
from xaikit.train import state as train_state

REPO = Path(__file__).resolve().parents[2]
TRAIN = [
    "train",
    "--data",
    "shapes",
    "--model",
    "simple_cnn",
    "--data-option",
    "n=1500",
    "--data-option",
    "size=16",
    "--model-option",
    "widths=[4,8]",
    "--model-option",
    "dropout=0.3",
    "--optimizer",
    "adamw",
    "--scheduler",
    "cosine",
    "--batch-size",
    "32",
    "--seed",
    "5",
    "--epochs",
    "4",
    "-q",
]


def _train(out: Path, *extra: str) -> int:
    return main([*TRAIN, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The run that was never interrupted."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _train(out) == 0
    return out


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), f"{key} differs between {a} and {b}"


def _assert_same_run(run: Path, reference: Path) -> None:
    for name in ("model.safetensors", "last.safetensors", "best.safetensors"):
        _assert_same_weights(run / name, reference / name)
    strip = ("seconds",)
    history = json.loads((run / "history.json").read_text())
    expected = json.loads((reference / "history.json").read_text())
    assert [{k: v for k, v in r.items() if k not in strip} for r in history] == [
        {k: v for k, v in r.items() if k not in strip} for r in expected
    ]


def _assert_every_file_reads(folder: Path) -> None:
    """No checkpoint file is half-written: every .safetensors loads, every .json parses, and
    the ``last`` checkpoint is one consistent set."""
    for path in folder.glob("*.safetensors"):
        load_file(str(path))
    for path in folder.glob("*.json"):
        json.loads(path.read_text())
    if (folder / "last.safetensors").exists():
        xaikit.load_model(folder / "last")
        train_state.load_training_state(folder / "last")


def _epoch(folder: Path) -> int:
    """The epoch the ``last`` training state records (0 when none is readable yet)."""
    try:
        document = json.loads((folder / "last.train.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(document["state"]["epoch"])


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "XAIKIT_QUIET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "xaikit", *TRAIN, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=out.parent,
    )


def _wait_for_epoch(process: subprocess.Popen, out: Path, epoch: int, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while _epoch(out) < epoch:
        assert process.poll() is None, f"training ended early: {process.communicate()}"
        assert time.monotonic() < deadline, "training did not reach the epoch in time"
        time.sleep(0.01)
    time.sleep(0.15)  # into the next epoch's batches (an epoch takes about half a second)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_with_the_same_weights(tmp_path, reference):
    out = tmp_path / "run"
    process = _start(out)
    _wait_for_epoch(process, out, 1)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists(), "the run finished before the kill"
    assert 1 <= _epoch(out) < 4
    _assert_every_file_reads(out)

    assert _train(out, "--resume") == 0
    _assert_same_run(out, reference)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_exits_130_and_resume_ends_with_the_same_weights(
    tmp_path, reference
):
    out = tmp_path / "run"
    process = _start(out)
    _wait_for_epoch(process, out, 1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    message = stdout + stderr
    assert "interrupted" in message and "--resume" in message and str(out) in message
    assert 1 <= _epoch(out) < 4
    _assert_every_file_reads(out)
    _model, card = xaikit.load_model(out / "last")
    assert card["epoch"] == _epoch(out)

    assert _train(out, "--resume") == 0
    _assert_same_run(out, reference)


class Crash(BaseException):
    """Stands for the process dying at this point (nothing after it runs)."""


def _crash_on_call(monkeypatch, module, name: str, call: int) -> None:
    original = getattr(module, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Crash(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)


@pytest.mark.parametrize(
    "where",
    [
        "after the weights, before the model card",
        "after the model files, before the training state",
        "after the training tensors, before their JSON",
        "while the files are moved into place",
    ],
)
def test_a_crash_between_the_files_of_a_checkpoint_loses_nothing(
    tmp_path, monkeypatch, reference, where
):
    """The files of ``last`` are written one after another: a crash between two of them in
    epoch 2 must leave a checkpoint that resumes (from epoch 1 or 2) to the same weights."""
    import xaikit.train.trainer as trainer_module
    import xaikit.zoo.checkpoint as checkpoint_module

    if where == "after the weights, before the model card":
        # save_model writes best (epoch 1, 2 when improving) then last: the fourth card write
        # is epoch 2's (best improved at epoch 1; the count is checked below).
        _crash_on_call(monkeypatch, checkpoint_module, "atomic_write_json", 4)
    elif where == "after the model files, before the training state":
        _crash_on_call(monkeypatch, trainer_module, "save_training_state", 2)
    elif where == "after the training tensors, before their JSON":
        _crash_on_call(monkeypatch, train_state, "atomic_write_json", 2)
    else:
        # Epoch 1 commits six files (best and last); crash after two of epoch 2's moves.
        replace, moves = os.replace, []

        def moving(src, dst):
            if Path(src).parent.name == train_state.STAGING != Path(dst).parent.name:
                moves.append(src)
                if len(moves) == 8:
                    raise Crash("os.replace")
            return replace(src, dst)

        monkeypatch.setattr(os, "replace", moving)
    out = tmp_path / "run"
    with pytest.raises(Crash):
        _train(out)
    monkeypatch.undo()
    assert _epoch(out) in (1, 2)
    if where == "while the files are moved into place":  # the crash did cut a commit short
        assert (train_state.staging_dir(out) / "last.train.json").is_file()
    assert _train(out, "--resume") == 0
    _assert_same_run(out, reference)


def _diverging_recipe(tmp_path: Path) -> Path:
    """SGD whose step schedule multiplies the rate by 1e30 after epoch 1: epoch 2 diverges."""
    recipe = tmp_path / "diverge.toml"
    recipe.write_text(
        """
[data]
name = "shapes"
options = { n = 200, size = 16 }
[model]
arch = "simple_cnn"
options = { widths = [4, 8] }
[train]
epochs = 3
options = { optimizer = "sgd", lr = 0.01, scheduler = "step", step_size = 1, gamma = 1e30 }
"""
    )
    return recipe


def test_a_loss_that_becomes_nan_or_inf_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    recipe = _diverging_recipe(tmp_path)
    one_epoch = tmp_path / "one-epoch"
    assert main(["train", "--recipe", str(recipe), "--epochs", "1", "--out", str(one_epoch)]) == 0
    capsys.readouterr()

    out = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--out", str(out), "-q"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err
    assert "nan" in line.lower() or "inf" in line.lower()
    assert "epoch 2" in line and "last good checkpoint" in line and "learning rate" in line
    _assert_every_file_reads(out)
    assert _epoch(out) == 1
    _assert_same_weights(out / "last.safetensors", one_epoch / "last.safetensors")
    assert not (out / "model.safetensors").exists()


def test_a_loss_that_is_nan_from_the_first_step_writes_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "shapes", "--model", "simple_cnn", "--epochs", "2", "--lr", "1e30"]
    args += ["--optimizer", "sgd", "--data-option", "n=200", "--data-option", "size=16"]
    assert main([*args, "--model-option", "widths=[4,8]", "--out", str(out), "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "nan" in line.lower() or "inf" in line.lower()
    assert "no checkpoint was written" in line and "epoch 1" in line
    assert not list(out.glob("*.safetensors"))
