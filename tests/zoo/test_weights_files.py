"""Weights files: safetensors or PyTorch state dicts, unwrapped, loaded strictly, never a
pickle that runs code (a planted ``__reduce__`` payload would create a marker file)."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import xaikit
from xaikit.cli import main
from xaikit.errors import CheckpointError
from xaikit.zoo.state_dicts import read_weights_file, unwrap_state_dict

REPO = Path(__file__).resolve().parents[2]
OPTIONS = {"widths": [4, 8], "input_size": 16}


def _tiny(seed: int = 3, num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return xaikit.create_model("simple_cnn", num_classes=num_classes, **OPTIONS).eval()


def _assert_same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


class Payload:
    """Unpickling this runs code: it creates the file ``marker`` (as in the reliability
    suite's hostile files)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _hostile(marker: Path, form: str) -> bytes:
    payload = {"state_dict": {"w": Payload(marker)}, "weight": torch.zeros(2)}
    if form.startswith("pickle"):
        return pickle.dumps(payload, protocol=int(form[len("pickle") :]))
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=form == "torch-zip")
    return buffer.getvalue()


FORMS = ["pickle2", "pickle4", "torch-zip", "torch-legacy"]
NAMES = ["w.pth", "w.pt", "w.bin", "w.ckpt", "w.safetensors", "w"]


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """The control: without the weights-only unpickler the marker would appear."""
    marker = tmp_path / "marker"
    pickle.loads(_hostile(marker, "pickle4"))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("plain.pth", lambda s: s),
        ("nested.pt", lambda s: {"state_dict": s, "epoch": 3, "optimizer": {"lr": 0.1}}),
        ("trainer.bin", lambda s: {"model_state_dict": s, "step": 10}),
        ("ema.ckpt", lambda s: {"ema": {f"module.{k}": v for k, v in s.items()}}),
        ("ddp.pth", lambda s: {"model": {f"module.{k}": v for k, v in s.items()}}),
        ("lightning.ckpt", lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}}),
    ],
)
def test_state_dict_wrappings_are_taken_off(tmp_path, name, wrap):
    state = _tiny().state_dict()
    torch.save(wrap(state), tmp_path / name)
    model, card = xaikit.load_model("simple_cnn", weights=tmp_path / name, options=OPTIONS)
    _assert_same(model, state)
    assert card["num_classes"] == 3  # read off the file's classifier
    assert card["weights"] == f"file:{tmp_path / name}"
    assert card["source"]["path"] == str((tmp_path / name).resolve())


@pytest.mark.parametrize("name", ["w.safetensors", "named-like-torch.pth"])
def test_safetensors_are_recognized_by_content(tmp_path, name):
    state = _tiny().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / name))
    read = read_weights_file(tmp_path / name)
    assert read.format == "safetensors"
    model, _card = xaikit.load_model("simple_cnn", weights=tmp_path / name, options=OPTIONS)
    _assert_same(model, state)


def test_the_card_records_the_files_sha256(tmp_path):
    import hashlib

    torch.save(_tiny().state_dict(), tmp_path / "w.pth")
    _model, card = xaikit.load_model("simple_cnn", weights=tmp_path / "w.pth", options=OPTIONS)
    assert card["weights_sha256"] == hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()


def test_an_old_file_without_num_batches_tracked_loads(tmp_path):
    state = {k: v for k, v in _tiny().state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    model, _card = xaikit.load_model("simple_cnn", weights=tmp_path / "old.pth", options=OPTIONS)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)


def test_non_tensor_values_are_refused(tmp_path):
    state = dict(_tiny().state_dict())
    state["epoch"] = 3
    torch.save(state, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"not a state dict: 1 of \d+ entries.*'epoch': int"):
        xaikit.load_model("simple_cnn", weights=tmp_path / "mixed.pth", options=OPTIONS)
    with pytest.raises(CheckpointError, match="holds a list"):
        unwrap_state_dict([torch.zeros(1)], "x")
    with pytest.raises(CheckpointError, match="empty"):
        unwrap_state_dict({}, "x")


def test_missing_and_unexpected_keys_are_listed_with_counts(tmp_path):
    state = dict(_tiny().state_dict())
    gone = sorted(k for k in state if k.startswith("features.block1"))
    for key in gone:
        del state[key]
    state["extra.weight"] = torch.zeros(2)
    state["extra.bias"] = torch.zeros(2)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(CheckpointError) as err:
        xaikit.load_model("simple_cnn", weights=tmp_path / "w.pth", options=OPTIONS)
    message = str(err.value)
    assert "\n" not in message
    # BatchNorm's num_batches_tracked is not counted as missing: the loader fills it.
    real = [k for k in gone if not k.endswith("num_batches_tracked")]
    assert f"{len(real)} missing: features.block1." in message
    assert "2 unexpected: extra." in message


def test_a_shape_mismatch_names_both_shapes(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"of another shape: .*\(file 3x8, model 5x8\)"):
        xaikit.load_model(
            "simple_cnn", weights=tmp_path / "w.pth", options={**OPTIONS, "num_classes": 5}
        )


def test_a_file_replaces_a_checkpoints_weights_and_keeps_its_card(tmp_path):
    xaikit.save_model(_tiny(seed=1), tmp_path / "ckpt", class_names=["a", "b", "c"])
    other = _tiny(seed=2).state_dict()
    torch.save({"state_dict": other}, tmp_path / "other.pth")
    model, card = xaikit.load_model(tmp_path / "ckpt", weights=tmp_path / "other.pth")
    _assert_same(model, other)
    assert card["class_names"] == ["a", "b", "c"]
    assert card["weights"] == f"file:{tmp_path / 'other.pth'}"
    assert card["source"]["path"] == str((tmp_path / "other.pth").resolve())


def test_damaged_and_missing_files_are_one_line_errors(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("hello, not weights")
    buffer = io.BytesIO()
    torch.save(_tiny().state_dict(), buffer)
    (tmp_path / "cut.pth").write_bytes(buffer.getvalue()[:200])
    for name, needle in [
        ("empty.pth", "empty"),
        ("text.pth", "not a safetensors file nor a PyTorch state dict"),
        ("cut.pth", "truncated"),
        ("absent.pth", "not found"),
    ]:
        with pytest.raises(CheckpointError, match=needle) as err:
            read_weights_file(tmp_path / name)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", FORMS)
def test_a_hostile_pickle_is_refused_and_never_runs(tmp_path, form, name):
    marker = tmp_path / "marker"
    path = tmp_path / name
    path.write_bytes(_hostile(marker, form))
    with pytest.raises(CheckpointError, match="refused|not a safetensors") as err:
        xaikit.load_model("simple_cnn", weights=path, options=OPTIONS)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError):
        xaikit.load_model("torchvision:resnet18", weights=path)
    assert not marker.exists()


def test_a_hostile_pickle_names_what_it_would_import(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "w.pth").write_bytes(_hostile(marker, "torch-zip"))
    with pytest.raises(CheckpointError, match=r"refused: it would import (builtins\.)?exec;"):
        read_weights_file(tmp_path / "w.pth")
    assert not marker.exists()


def test_a_hostile_override_of_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "marker"
    xaikit.save_model(_tiny(), tmp_path / "ckpt")
    (tmp_path / "w.bin").write_bytes(_hostile(marker, "torch-legacy"))
    with pytest.raises(CheckpointError, match="refused"):
        xaikit.load_model(tmp_path / "ckpt", weights=tmp_path / "w.bin")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["layers", "filters"])
def test_cli_weights_refuses_a_hostile_pickle_in_one_line(tmp_path, capsys, command):
    marker = tmp_path / "marker"
    (tmp_path / "w.pt").write_bytes(_hostile(marker, "torch-zip"))
    argv = [command, "--model", "simple_cnn", "--weights", str(tmp_path / "w.pt")]
    if command == "filters":
        argv += ["--mode", "weights", "--out", str(tmp_path / "out"), "-q"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("xaikit: error: ") and "w.pt" in line and "refused" in line
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_no_pickle_is_read_any_weaker_way_in_the_package():
    """Every torch.load in xaikit passes weights_only=True; nothing weaker is written."""
    weaker = re.compile(r"weights_only\s*=\s*False")
    calls = re.compile(r"torch\.load\(([^)]*)\)")
    for path in sorted((REPO / "xaikit").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not weaker.search(text), path
        for args in calls.findall(text):
            if args.strip() and args.strip() not in ("...",):
                assert "weights_only=True" in args, (path, args)
