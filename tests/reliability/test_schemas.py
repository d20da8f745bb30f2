"""Every file xaikit reads is checked against a schema: one line naming the field, never a
traceback, a hang on a FIFO or /dev/zero, or a RecursionError on a 200,000-deep document."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import xaikit
from xaikit.cli import main
from xaikit.errors import CheckpointError, DataError, XaikitConfigError
from xaikit.io import json_too_deep, read_document
from xaikit.schema import Bool, Int, List, Number, Str, Table, check, too_deep
from xaikit.train import Trainer
from xaikit.train.history import read_history
from xaikit.train.state import load_training_state, state_digest


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _copy(stem: Path, folder: Path) -> Path:
    """A private copy of the session checkpoint (weights and card) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(stem.with_name(stem.name + suffix), folder / f"m{suffix}")
    return folder / "m"


# -- the schema module -----------------------------------------------------------------------


def test_ints_are_ints_and_numbers_are_finite():
    spec = Table({"n": Int(low=1), "x": Number(low=0, low_open=True), "on": Bool()})
    assert check({"n": 3, "x": 0.5, "on": True}, spec, where="f") == {"n": 3, "x": 0.5, "on": True}
    refused = {
        ("n", True): "f: n must be a positive int, got True",
        ("n", 2.5): "f: n must be a positive int, got 2.5",
        ("n", 2.0): "f: n must be a positive int, got 2.0",
        ("n", 0): "f: n must be a positive int, got 0",
        ("x", float("nan")): "f: x must be a positive number, got nan",
        ("x", float("inf")): "f: x must be a positive number, got inf",
        ("x", False): "f: x must be a positive number, got False",
        ("x", "1"): "f: x must be a positive number, got '1'",
        ("on", 1): "f: on must be true or false, got 1",
    }
    for (key, value), message in refused.items():
        with pytest.raises(XaikitConfigError) as caught:
            check({key: value}, spec, where="f")
        assert _one_line(caught.value) == message


def test_field_names_follow_the_file_format():
    spec = Table({"train": Table({"options": Table({"betas": List(Number(0, 1), length=2)})})})
    document = {"train": {"options": {"betas": [0.9, "x"]}}}
    with pytest.raises(XaikitConfigError, match=r"^r\.toml: \[train\.options\] betas\[1\] must"):
        check(document, spec, where="r.toml", style="toml")
    with pytest.raises(CheckpointError, match=r"^c\.json: train\.options\.betas\[1\] must"):
        check(document, spec, where="c.json", error=CheckpointError)
    with pytest.raises(XaikitConfigError, match=r"\[train\] opts is not a known field"):
        check({"train": {"opts": 1}}, spec, where="r.toml", style="toml")
    with pytest.raises(XaikitConfigError, match=r"^f: name is missing \(it must be a non-empty"):
        check({}, Table({"name": Str()}, required=("name",)), where="f")


def test_long_values_are_cut_in_the_message():
    with pytest.raises(XaikitConfigError) as caught:
        check({"s": ["x" * 10_000] * 10_000}, Table({"s": Str()}), where="f")
    assert len(_one_line(caught.value)) < 200


def test_depth_is_measured_without_recursion():
    deep: Any = []
    for _ in range(200_000):
        deep = [deep]
    assert too_deep(deep, 64) and not too_deep([[1], {"a": [2]}], 3)
    assert too_deep([[1], {"a": [2]}], 2)
    assert json_too_deep("[" * 200_000, 64)
    # Brackets inside strings do not count.
    assert not json_too_deep(json.dumps({"a": "[[[[[[" * 100, "b": [[1]]}), 3)


# -- the reader -------------------------------------------------------------------------------


def test_200k_deep_and_oversized_and_undecodable_documents_are_one_line(tmp_path, monkeypatch):
    cases = {
        "deep.json": ("[" * 200_000 + "]" * 200_000, "nests deeper than 64 levels"),
        "big.json": ('{"pad": "' + "x" * (17 * 2**20) + '"}', "more than the limit of 16,777,216"),
        "bad.json": ('{"a": 1,,}', "is not valid JSON"),
        "long-int.json": ("1" * 5000, "is not valid JSON"),
        "deep.toml": ("a = " + "[" * 200_000, "nests deeper than 64 levels"),
        "bad.toml": ("a = = 1", "is not valid TOML"),
    }
    for name, (text, reason) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError) as caught:
            read_document(tmp_path / name, what="document")
        line = _one_line(caught.value)
        assert line.startswith(f"{tmp_path / name}: the document") and reason in line, line
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 0xe9 at offset 7\)"):
        read_document(tmp_path / "latin1.json")
    monkeypatch.setenv("XAIKIT_MAX_DOCUMENT_BYTES", "10")
    (tmp_path / "small.json").write_text('{"a": 12345678}')
    with pytest.raises(DataError, match="15 bytes, more than the limit of 10"):
        read_document(tmp_path / "small.json")
    monkeypatch.setenv("XAIKIT_MAX_DOCUMENT_BYTES", "lots")
    with pytest.raises(XaikitConfigError, match="XAIKIT_MAX_DOCUMENT_BYTES must be a positive"):
        read_document(tmp_path / "small.json")


def _special(path: Path, kind: str) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)


def _within_a_second(call, unblock: Path) -> BaseException | None:
    """Run ``call`` in a thread; return what it raised. A call that blocks (a FIFO opened
    without O_NONBLOCK) is released by opening the FIFO for writing, and the test fails."""
    result: dict[str, Any] = {}

    def target() -> None:
        start = time.perf_counter()
        try:
            call()
        except BaseException as err:  # handed to the test
            result["error"] = err
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5)
        pytest.fail(f"reading {unblock} blocked")
    assert result["seconds"] < 1.0, result
    return result.get("error")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("target", ["card", "weights", "weights-file"])
def test_fifo_or_dev_zero_is_refused_at_once(tmp_path, checkpoint, kind, target):
    stem = _copy(checkpoint, tmp_path / "model")
    if target == "card":
        path = stem.with_name("m.json")
        _special(path, kind)
        err = _within_a_second(lambda: xaikit.load_model(stem), path)
        what = "model card"
    elif target == "weights":
        path = stem.with_name("m.safetensors")
        _special(path, kind)
        err = _within_a_second(lambda: xaikit.load_model(stem), path)
        what = "weights file"
    else:  # load_model(..., weights=FILE): read_weights_file
        path = tmp_path / "w.pth"
        _special(path, kind)
        err = _within_a_second(lambda: xaikit.load_model(stem, weights=path), path)
        what = "weights file"
    assert isinstance(err, CheckpointError), repr(err)
    expected = "a FIFO (named pipe)" if kind == "fifo" else "a character device"
    assert _one_line(err) == f"{path}: the {what} is not a regular file but {expected}"


def test_a_folder_as_weights_file_is_refused(tmp_path, checkpoint):
    stem = _copy(checkpoint, tmp_path / "model")
    (tmp_path / "w.pth").mkdir()
    with pytest.raises(CheckpointError, match="w.pth: the weights file is not a regular file but"):
        xaikit.load_model(stem, weights=tmp_path / "w.pth")


# -- model cards ------------------------------------------------------------------------------


CARD_CASES = {
    "config-list": ({"config": [1, 2]}, "config must be an object (dict), got [1, 2]"),
    "input-shape-str-item": ({"input_shape": ["a"]}, "input_shape must be an array of 2 to 4"),
    "input-shape-item": ({"input_shape": [3, "a", 16]}, "input_shape[1] must be a positive int"),
    "input-shape-bool": ({"input_shape": [3, True, 16]}, "input_shape[1] must be a positive int"),
    "input-shape-string": ({"input_shape": "3x16x16"}, "input_shape must be an array of 2 to 4"),
    "class-names-string": ({"class_names": "abc"}, "class_names must be a list of class names"),
    "class-names-item": ({"class_names": ["a", 1.5, "c"]}, "class_names[1] must be a string"),
    "architecture": ({"architecture": 5}, "architecture must be a non-empty string, got 5"),
    "num-classes": ({"num_classes": -1}, "num_classes must be an int in [1, 1000000] or null"),
    "normalization": ({"normalization": {"mean": [0], "std": [0]}}, "normalization.std[0] must"),
    "normalization-pair": (
        {"normalization": {"mean": [0, 1], "std": [1]}},
        "normalization must have as many std values as mean values",
    ),
    "weights-sha": ({"weights_sha256": 12}, "weights_sha256 must be a non-empty string"),
    "metrics": ({"metrics": "good"}, "metrics must be an object (dict) or null, got 'good'"),
}


@pytest.mark.parametrize("case", list(CARD_CASES))
def test_a_card_of_wrong_types_is_one_line_naming_the_field(tmp_path, checkpoint, case):
    change, reason = CARD_CASES[case]
    stem = _copy(checkpoint, tmp_path / "model")
    card_path = stem.with_name("m.json")
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, **change}))
    with pytest.raises(CheckpointError) as caught:
        xaikit.load_model(stem)
    line = _one_line(caught.value)
    assert line.startswith(f"{card_path}: model card: ") and reason in line, line


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[" * 200_000, "the model card nests deeper than 64 levels"),
        ('{"pad": "' + "x" * 20_000_000 + '"}', "the model card is 20,000,011 bytes, more than"),
        ("\xff\xfe{}", "the model card is not UTF-8 text"),
        ('{"format": "xaikit-model-card", "architecture": ', "the model card is not valid JSON"),
    ],
    ids=["200k-deep", "20MB", "not-utf8", "truncated"],
)
def test_a_hostile_card_is_one_line(tmp_path, checkpoint, text, reason):
    stem = _copy(checkpoint, tmp_path / "model")
    card_path = stem.with_name("m.json")
    card_path.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(CheckpointError) as caught:
        xaikit.load_model(stem)
    assert _one_line(caught.value).startswith(f"{card_path}: {reason}")


def test_a_hostile_card_through_the_command_line_exits_2(tmp_path, checkpoint, capsys):
    stem = _copy(checkpoint, tmp_path / "model")
    stem.with_name("m.json").write_text("[" * 200_000)
    assert main(["layers", "--model", str(stem)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nests deeper than 64 levels" in err[0]


# -- history ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "records, reason",
    [
        (
            [{"epoch": 1, "train_loss": "abc"}],
            "[0].train_loss must be a finite number or null, got 'abc'",
        ),
        (
            [{"epoch": 1}, {"train_loss": 0.5}],
            "[1].epoch is missing (it must be an int in [1, 100000])",
        ),
        ([{"epoch": 0}], "[0].epoch must be an int in [1, 100000], got 0"),
        ({"epoch": 1}, "the document must be a list of per-epoch records, got {'epoch': 1}"),
        ([[1, 2]], "[0] must be an object (dict), got [1, 2]"),
    ],
)
def test_a_bad_history_is_one_line_naming_the_field(tmp_path, records, reason):
    path = tmp_path / "history.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as caught:
        read_history(path)
    assert _one_line(caught.value) == f"{path}: {reason}"


def test_a_good_history_reads_back(tmp_path):
    path = tmp_path / "history.json"
    path.write_text(json.dumps([{"epoch": 1, "train_loss": 0.5, "val_loss": None}]))
    assert read_history(path).column("train_loss") == [0.5]


# -- training states --------------------------------------------------------------------------


def _tiny_run(folder: Path, epochs: int = 1) -> Trainer:
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 3, (32,), generator=g)
    trainer = Trainer(
        model, "sgd", 0.01, batch_size=16, checkpoint_dir=folder, quiet=True, device="cpu"
    )
    trainer.fit((x, y), epochs=epochs)
    return trainer


def _resume(folder: Path, epochs: int) -> Trainer:
    """The run of :func:`_tiny_run`, resumed from ``folder`` up to ``epochs``."""
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 3, (32,), generator=g)
    trainer = Trainer(
        model, "sgd", 0.01, batch_size=16, checkpoint_dir=folder, quiet=True, device="cpu"
    )
    trainer.fit((x, y), epochs=epochs, resume=folder)
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder with a 2-epoch ``last`` checkpoint of a tiny CNN (shared, copy before edits)."""
    folder = tmp_path_factory.mktemp("state")
    _tiny_run(folder, epochs=2)
    return folder


def _edited(trained: Path, tmp_path: Path, edit, *, rehash: bool = False) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    path = folder / "last.train.json"
    document = json.loads(path.read_text())
    edit(document)
    if rehash:  # as a careful hand editor would, so the field checks are reached
        document["state_sha256"] = state_digest(document["state"])
    path.write_text(json.dumps(document))
    return folder


def test_an_intact_state_resumes_and_carries_its_digest(trained, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    document = json.loads((folder / "last.train.json").read_text())
    assert document["state_sha256"] == state_digest(document["state"])
    assert load_training_state(folder / "last")["epoch"] == 2
    assert _resume(folder, 3).epoch == 3


STATE_EDITS = {
    "epoch-1e9": (lambda d: d["state"].update(epoch=1e9), "state.epoch must be an int in [0, "),
    "epoch-3": (lambda d: d["state"].update(epoch=3), "was changed after it was saved"),
    "history-value": (
        lambda d: d["state"]["history"][0].update(train_loss=0.0),
        "was changed after it was saved",
    ),
    "no-digest": (lambda d: d.pop("state_sha256"), "has no state_sha256"),
}


@pytest.mark.parametrize("case", list(STATE_EDITS))
def test_a_hand_edited_state_is_refused_on_resume(trained, tmp_path, case):
    edit, reason = STATE_EDITS[case]
    folder = _edited(trained, tmp_path, edit)
    with pytest.raises(CheckpointError) as caught:
        _resume(folder, 4)
    line = _one_line(caught.value)
    assert line.startswith(f"{folder / 'last.train.json'}: ") and reason in line, line


REHASHED_EDITS = {
    "epoch-1e9": (
        lambda d: d["state"].update(epoch=1e9),
        "state.epoch must be an int in [0, 1000000000], got 1000000000.0",
    ),
    "epoch-string": (lambda d: d["state"].update(epoch="2"), "state.epoch must be an int"),
    "epoch-vs-history": (
        lambda d: d["state"].update(epoch=1),
        "epoch 1 does not match the history of 2 epochs",
    ),
    "epoch-past-plan": (
        lambda d: d["state"].update(epoch=3, history=[*d["state"]["history"], {"epoch": 3}]),
        "epoch 3 is past the 2 epochs the run was planned for",
    ),
    "monitor": (
        lambda d: d["state"]["monitor"].update(bad_epochs=-1),
        "state.monitor.bad_epochs must be an int >= 0, got -1",
    ),
    "history-string": (
        lambda d: d["state"].update(history="none"),
        "state.history must be an array",
    ),
    "model-digest": (lambda d: d.update(model_sha256="ab"), "model_sha256 must be 64 hex"),
}


@pytest.mark.parametrize("case", list(REHASHED_EDITS))
def test_a_state_with_a_recomputed_digest_is_still_checked_field_by_field(trained, tmp_path, case):
    edit, reason = REHASHED_EDITS[case]
    folder = _edited(trained, tmp_path, edit, rehash=True)
    with pytest.raises(CheckpointError) as caught:
        _resume(folder, 4)
    line = _one_line(caught.value)
    assert reason in line, line


def test_resume_asking_for_fewer_epochs_than_done_is_refused(trained, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    with pytest.raises(XaikitConfigError, match="it has 2 epochs done, more than the 1 this run"):
        _resume(folder, 1)


def test_cli_resume_refuses_a_hand_edited_state(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "shapes", "--model", "simple_cnn", "--data-option", "n=40"]
    args += ["--data-option", "size=16", "--model-option", "widths=[4,8]", "--out", str(out)]
    assert main([*args, "--epochs", "1", "-q"]) == 0
    path = out / "last.train.json"
    document = json.loads(path.read_text())
    document["state"]["epoch"] = 1e9  # as JSON: 1000000000.0
    path.write_text(json.dumps(document))
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--resume", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "state.epoch must be an int in [0, 1000000000], got 1000000000.0" in err[0]
    )
