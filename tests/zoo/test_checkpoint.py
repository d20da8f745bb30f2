"""Checkpoints round-trip exactly, and anything damaged or unsafe is refused without running it."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import xaikit
from xaikit.errors import CheckpointError
from xaikit.zoo.checkpoint import load_weights, read_card


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm buffers non-default values so the round trip checks them too."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, *_example_shape(model)))
    return model.eval()


def _example_shape(model):
    return (3, 16, 16) if model.spec["name"] != "lstm" else (7, 2)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("simple_cnn", {"task": "multilabel", "num_classes": 4, "widths": (4, 8)}),
        ("resnet_small", {"num_classes": 3, "blocks_per_stage": 1, "widths": (4, 8)}),
        ("lstm", {"num_classes": 2, "task": "binary", "in_channels": 2, "hidden_size": 6}),
    ],
)
def test_save_then_load_gives_bit_identical_outputs(tmp_path, name, kwargs):
    model = _trained_like(xaikit.create_model(name, **kwargs))
    path = xaikit.save_model(
        model,
        tmp_path / "run" / "model",
        class_names=["a", "b", "c", "d"][: kwargs["num_classes"]],
        normalization={"mean": [0.5], "std": [0.25]},
        seed=7,
        metrics={"test_accuracy": 0.9},
    )
    assert path.name == "model.safetensors"
    loaded, card = xaikit.load_model(tmp_path / "run" / "model.safetensors")
    x = torch.randn(5, *_example_shape(model))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert card["architecture"] == name
    assert card["task"] == kwargs.get("task", "multiclass")
    assert card["seed"] == 7 and card["metrics"] == {"test_accuracy": 0.9}
    assert card["xaikit_version"] == xaikit.__version__
    assert not loaded.training


def test_load_accepts_stem_folder_and_card_paths(tmp_path):
    model = xaikit.create_model("simple_cnn", widths=(4, 8))
    xaikit.save_model(model, tmp_path / "best")
    for path in (tmp_path / "best", tmp_path / "best.json", tmp_path):
        loaded, _ = xaikit.load_model(path)
        assert torch.equal(loaded.head.fc.weight, model.head.fc.weight)


def test_writes_leave_no_temporary_files(tmp_path):
    xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_renamed_safetensors_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    good = xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    good.write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    with pytest.raises(CheckpointError, match="never unpickles"):
        xaikit.load_model(tmp_path / "m")
    assert not marker.exists()


def test_torch_save_zip_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.safetensors"
    torch.save({"x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="pickle or torch.save"):
        load_weights(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_refused(tmp_path):
    path = xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"m\.safetensors"):
        xaikit.load_model(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="empty or truncated"):
        xaikit.load_model(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or truncated"):
        xaikit.load_model(path)


def test_weights_that_do_not_match_the_card_hash_are_refused(tmp_path):
    path = xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    other = xaikit.create_model("simple_cnn", widths=(4, 8))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="SHA-256"):
        xaikit.load_model(path)


def test_wrong_tensor_shape_is_refused_with_the_parameter_named(tmp_path):
    path = xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    state = load_weights(path)
    state["head.fc.weight"] = torch.zeros(10, 99)
    save_file(state, str(path))
    card = read_card(path)
    card.pop("weights_sha256")
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="head.fc.weight"):
        xaikit.load_model(path)


def test_card_for_another_architecture_is_refused(tmp_path):
    path = xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    card = read_card(path)
    card["config"]["widths"] = [4, 8, 16]
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        xaikit.load_model(path)


@pytest.mark.parametrize("content", ["", "{not json", '{"format": "other"}', "[1, 2]"])
def test_broken_cards_are_refused(tmp_path, content):
    path = xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(CheckpointError, match=r"m\.json"):
        xaikit.load_model(path)


def test_missing_names_and_paths_say_what_exists(tmp_path):
    with pytest.raises(CheckpointError, match="no reference model or checkpoint named 'nope'"):
        xaikit.load_model("nope")
    with pytest.raises(CheckpointError, match="not found"):
        xaikit.load_model(tmp_path / "absent.safetensors")


def test_model_without_spec_cannot_be_saved(tmp_path):
    with pytest.raises(CheckpointError, match="create_model"):
        xaikit.save_model(torch.nn.Linear(2, 2), tmp_path / "m")


def test_torchvision_name_loads_random_weights_with_imagenet_card():
    model, card = xaikit.load_model("torchvision:resnet18")
    assert card["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert card["input_shape"] == [3, 224, 224]
    assert not model.training
