"""``--weights`` / ``--pretrained`` / ``--seed`` on the model commands, and ``xaikit convert``.

The headline: a ``torch.save``'d torchvision state dict explains the same through
``--weights FILE`` as in memory, and again after ``xaikit convert`` as an ordinary checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import xaikit
from xaikit.cli import main
from xaikit.explain.api import explain
from xaikit.explain.files import RESULTS, load_for_model

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SHAPE = (3, 64, 64)


@pytest.fixture(scope="module")
def r18(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A 10-class ResNet-18 saved with ``torch.save(model.state_dict())``, and the model."""
    torch.manual_seed(11)
    model = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "img.png"
    pixels = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


class _Payload:
    """Unpickling this runs code: it creates ``marker`` (tests/zoo/test_weights_files.py has
    the same payload in more forms)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _maps(out: Path) -> dict[str, np.ndarray]:
    results = json.loads((out / RESULTS).read_text(encoding="utf-8"))
    (record,) = results["images"]
    (entry,) = record["outputs"]["gradcam"]
    return {
        "map": np.load(out / entry["map"]),
        "raw": np.load(out / entry["raw"]),
        "index": record["targets"][0]["index"],
        "run": results["run"],
    }


def _explain(image: Path, out: Path, *model_args: str) -> dict:
    argv = ["explain", str(image), *model_args, "--out", str(out), "--no-figure", "-q"]
    assert main([*argv, "--device", "cpu"]) == 0
    return _maps(out)


def test_explain_with_weights_then_convert_gives_the_in_memory_maps(r18, image, tmp_path, capsys):
    path, model = r18
    x = load_for_model(image, SHAPE, IMAGENET)[0][None]
    reference = explain(model, x, method="gradcam", return_result=True)
    top = int(model(x).argmax())

    direct = _explain(
        image,
        tmp_path / "o1",
        *("--model", "torchvision:resnet18", "--weights", str(path), "--input-shape", "3,64,64"),
    )
    assert direct["index"] == top
    np.testing.assert_allclose(direct["map"], reference.maps[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(direct["raw"], reference.raw[0, 0].numpy(), atol=1e-5)
    assert direct["run"]["model"]["weights"] == f"file:{path}"
    assert "random weights" not in capsys.readouterr().err

    convert = ["convert", str(path), "--model", "torchvision:resnet18", "--out"]
    assert main([*convert, str(tmp_path / "conv"), "--input-shape", "3,64,64"]) == 0
    assert "use it with --model" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]
    card = json.loads((tmp_path / "conv" / "model.json").read_text(encoding="utf-8"))
    assert card["architecture"] == "torchvision:resnet18" and card["num_classes"] == 10
    assert card["input_shape"] == [3, 64, 64] and card["normalization"] == IMAGENET
    assert card["converted_from"]["file"] == str(path.resolve())

    converted = _explain(image, tmp_path / "o2", "--model", str(tmp_path / "conv"))
    assert converted["index"] == top
    np.testing.assert_array_equal(converted["map"], direct["map"])
    np.testing.assert_array_equal(converted["raw"], direct["raw"])


def test_convert_writes_class_names_and_normalization(tmp_path, capsys):
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), in_channels=1)
    torch.save({"state_dict": model.state_dict(), "epoch": 9}, tmp_path / "w.ckpt")
    (tmp_path / "names.txt").write_text("cat\ndog\n\nbird\n")
    argv = ["convert", str(tmp_path / "w.ckpt"), "--model", "simple_cnn", "--out"]
    argv += [str(tmp_path / "c"), "--model-option", "widths=[4,8]", "--model-option"]
    argv += ["in_channels=1", "--class-names", str(tmp_path / "names.txt")]
    assert main([*argv, "--mean", "0.5", "--std", "0.25", "--input-shape", "1,16,16"]) == 0
    loaded, card = xaikit.load_model(tmp_path / "c")
    assert card["class_names"] == ["cat", "dog", "bird"]
    assert card["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert card["input_shape"] == [1, 16, 16]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert main(["layers", "--model", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().err == ""  # a converted checkpoint is not random


def test_convert_preset_imagenet_names(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "w.pth")
    argv = ["convert", str(tmp_path / "w.pth"), "-m", "torchvision:resnet18", "-o"]
    assert main([*argv, str(tmp_path / "c"), "--preset", "imagenet"]) == 0
    card = json.loads((tmp_path / "c" / "model.json").read_text(encoding="utf-8"))
    assert len(card["class_names"]) == 1000 and card["class_names"][0] == "tench"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--preset", "imagenet"], "1000 class names for a model with 10 classes"),
        (["--mean", "0.5,0.5,0.5"], "--mean and --std go together"),
        (["--normalization", "imagenet", "--std", "1"], "not both"),
        (["--mean", "a,b", "--std", "1,1"], "--mean takes numbers"),
        (["--mean", "0.5,0.5", "--std", "1,1"], "2 channel values"),
        (["--model-option", "num_classes=5"], "of another shape"),
        (["--class-names", "/nonexistent/names.txt"], "cannot read the class names"),
    ],
)
def test_convert_errors_are_one_line_and_write_nothing(r18, tmp_path, capsys, extra, needle):
    path, _model = r18
    out = tmp_path / "c"
    argv = ["convert", str(path), "--model", "torchvision:resnet18", "--out", str(out)]
    assert main([*argv, *extra]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert needle in line and "Traceback" not in captured.err
    assert not out.exists()


def test_convert_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["convert", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for needle in ("WEIGHTS", "--model", "--out", "--preset", "--class-names", "weights_only"):
        assert needle in text


def test_random_weights_are_announced_once_with_the_seed(capsys):
    assert main(["layers", "--model", "torchvision:resnet18", "--input-shape", "3,32,32"]) == 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "xaikit: note: torchvision:resnet18 has random weights (seed 0); "
        "pass --pretrained or --weights FILE"
    )
    assert main(["layers", "--model", "simple_cnn", "--seed", "3"]) == 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "simple_cnn has random weights (seed 3)" in line


@pytest.mark.parametrize("command", ["layers", "explain", "filters", "evaluate", "report"])
def test_every_model_command_takes_the_model_and_weights_options(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for flag in ("--weights", "--pretrained", "--model-option", "--seed"):
        assert flag in text, (command, flag)


def test_a_commands_own_seed_seeds_the_random_weights(tmp_path, capsys):
    args = ["filters", "--model", "simple_cnn", "--mode", "weights", "-q"]
    assert main([*args, "--out", str(tmp_path / "a"), "--seed", "5"]) == 0
    assert "(seed 5)" in capsys.readouterr().err


def test_layers_with_weights_infers_num_classes(tmp_path, capsys):
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=4, widths=(4, 8))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    argv = ["layers", "--model", "simple_cnn", "--weights", str(tmp_path / "w.pt")]
    assert main([*argv, "--model-option", "widths=(4,8)"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "1x4" in captured.out  # the 4-class head


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "hostile", "mixed"])
def test_convert_refuses_bad_weights_files_in_one_line(r18, tmp_path, capsys, case):
    path, _model = r18
    bad = tmp_path / f"{case}.pth"
    marker = tmp_path / "marker"
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "text":
        bad.write_text("not weights\n")
    elif case == "truncated":
        bad.write_bytes(path.read_bytes()[:1000])
    elif case == "hostile":
        torch.save({"state_dict": {"w": _Payload(marker)}}, bad)
    elif case == "mixed":
        torch.save({"fc.weight": torch.zeros(10, 512), "note": "hello"}, bad)
    out = tmp_path / "c"
    assert main(["convert", str(bad), "--model", "torchvision:resnet18", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("xaikit: error: ") and bad.name in line
    assert "Traceback" not in captured.err
    assert not out.exists() and not marker.exists()
