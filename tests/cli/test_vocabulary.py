"""One vocabulary across commands: flags, defaults, method names, devices, error wording."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit import cli
from xaikit.cli import filters as filters_command
from xaikit.cli._common import cli_wording
from xaikit.cli.evaluate import _indices
from xaikit.cli.explain import parse_target
from xaikit.errors import XaikitConfigError
from xaikit.explain.engine import check_methods
from xaikit.explain.temporal import TEMPORAL_METHODS, explain_sequence
from xaikit.viz.report import _sample

DEVICE_COMMANDS = {"train", "explain", "filters", "evaluate", "report", "demo", "serve"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A random 3-class 16 px CNN checkpoint without class names."""
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    path = tmp_path_factory.mktemp("model") / "tiny"
    xaikit.save_model(model.eval(), path, input_shape=[3, 16, 16])
    return f"{path}.safetensors"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "a.png"
    pixels = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(path)
    return str(path)


# ------------------------------------------------------------------------------- flags


def test_every_device_flag_defaults_to_auto_beside_a_seed_and_data_has_data_option():
    parsers = _subparsers()
    with_device = {name for name, p in parsers.items() if "--device" in _options(p)}
    assert with_device == DEVICE_COMMANDS
    for name, parser in parsers.items():
        options = _options(parser)
        if "--device" in options:
            assert options["--device"].default == "auto", name
            assert "default: auto" in options["--device"].help, name
            assert "--seed" in options, name
        if "--data" in options:
            assert "--data-option" in options, name
            assert "--data-option" in parser.format_help(), name


def test_report_takes_method_and_keeps_methods_hidden():
    report = _subparsers()["report"]
    text = report.format_help()
    assert "--method M1,M2" in text and "--methods" not in text
    for flag in ("--method", "--methods"):
        args = report.parse_args(["--model", "m", "--out", "r.html", flag, "gradcam,saliency"])
        assert args.method == "gradcam,saliency"


def test_size_flag_in_commands_that_read_data_for_a_model():
    for name in ("filters", "evaluate", "report", "explain", "train"):
        assert "--size" in _options(_subparsers()[name]), name


def test_explain_size_feeds_the_model_at_that_side(tiny, image, tmp_path):
    out = tmp_path / "out"
    argv = ["explain", image, "--model", tiny, "--size", "24", "--out", str(out), "-q"]
    assert cli.main(argv) == 0
    maps = [p for p in out.rglob("gradcam.*.npy") if ".raw." not in p.name]
    assert len(maps) == 1 and np.load(maps[0]).shape == (24, 24)  # the card says 16


def test_train_size_is_the_data_option_size():
    from xaikit.cli.train import recipe_from_args

    parser = _subparsers()["train"]
    base = ["--data", "shapes", "--model", "simple_cnn", "--out", "r"]
    assert "size" not in recipe_from_args(parser.parse_args(base)).data_options
    recipe = recipe_from_args(parser.parse_args([*base, "--size", "20"]))
    assert recipe.data_options["size"] == 20
    with pytest.raises(XaikitConfigError, match="--size must be a positive integer"):
        recipe_from_args(parser.parse_args([*base, "--size", "0"]))


# ----------------------------------------------------------------------------- devices


def _device_argv(command: str, device: str, tmp: Path, model: str) -> list[str]:
    return {
        "train": ["train", "--data", "shapes", "--model", "simple_cnn", "--out", str(tmp)],
        "explain": ["explain", str(tmp / "x.png"), "--model", model, "--out", str(tmp)],
        "filters": ["filters", "--model", model, "--mode", "weights", "--out", str(tmp)],
        "evaluate": ["evaluate", "--model", model, "--data", "shapes"],
        "report": ["report", "--model", model, "--out", str(tmp / "r.html")],
        "demo": ["demo", "--out", str(tmp)],
        "serve": ["serve", "--model", model, "--no-reference"],  # refused before it listens
    }[command] + ["--device", device]


@pytest.mark.parametrize("device", ["mps", "cuda"])
@pytest.mark.parametrize("command", sorted(DEVICE_COMMANDS))
def test_unavailable_device_is_one_line_exit_2(command, device, tmp_path, tiny, capsys):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = cli.main(_device_argv(command, device, tmp_path, tiny))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("xaikit: error: ") and f"'{device}'" in err[0]
    assert "not available" in err[0]


# ------------------------------------------------------------------------------ methods


def test_gradxinput_on_an_image_model_is_inputxgrad(tiny):
    model, _ = xaikit.load_model(tiny)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert check_methods(["gradxinput", "inputxgrad"]) == ["inputxgrad"]
    alias = xaikit.explain(model, x, "gradxinput", target=1)
    canonical = xaikit.explain(model, x, "inputxgrad", target=1)
    torch.testing.assert_close(alias, canonical, rtol=0, atol=0)


def test_inputxgrad_on_an_lstm_is_gradxinput():
    torch.manual_seed(4)
    model = xaikit.create_model("lstm", num_classes=4, in_channels=3, hidden_size=8).eval()
    x = torch.randn(3, 10, 3, generator=torch.Generator().manual_seed(2))
    assert "inputxgrad" in TEMPORAL_METHODS and "gradxinput" in TEMPORAL_METHODS
    assert list(TEMPORAL_METHODS) == ["inputxgrad", "ig", "occlusion"]  # one name
    alias = explain_sequence(model, x, "inputxgrad", target=1, normalize=None)
    canonical = explain_sequence(model, x, "gradxinput", target=1, normalize=None)
    torch.testing.assert_close(alias, canonical, rtol=0, atol=0)


def test_explain_cli_accepts_the_alias_with_one_note(tiny, image, tmp_path, capsys):
    argv = ["explain", image, "--model", tiny, "--target", "0", "--no-figure", "-q"]
    assert cli.main([*argv, "--method", "gradxinput", "--out", str(tmp_path / "a")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert notes == ["xaikit: note: 'gradxinput' is another name of 'inputxgrad'"]
    assert cli.main([*argv, "--method", "inputxgrad", "--out", str(tmp_path / "b")]) == 0
    alias = np.load(tmp_path / "a" / "a.png" / "inputxgrad.0.raw.npy")
    canonical = np.load(tmp_path / "b" / "a.png" / "inputxgrad.0.raw.npy")
    np.testing.assert_array_equal(alias, canonical)


# ------------------------------------------------------------------------------ errors


def test_target_keyword_with_indices_says_they_cannot_be_combined(tiny, image, tmp_path, capsys):
    with pytest.raises(XaikitConfigError, match="cannot be combined"):
        parse_target("predicted,3")
    argv = ["explain", image, "--model", tiny, "--target", "predicted,3", "--out", str(tmp_path)]
    code = cli.main([*argv, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "cannot be combined" in err[0] and "is not one of" not in err[0]


def test_errors_speak_in_flags(tiny, image, tmp_path, capsys):
    code = cli.main(["explain", image, "--model", tiny, "--target", "cat", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--target 3" in err and "class_names=[" not in err
    assert "--data-option download=True" in cli_wording("pass download=True to download them")
    assert cli_wording("names no data set; pass data= (--data D)").endswith("pass --data D")


def test_evaluate_warning_is_one_line_without_python_noise(tmp_path):
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=6, widths=(4, 8), input_size=16)
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)  # every CAM is constant: an ExplainWarning
    xaikit.save_model(model.eval(), tmp_path / "zero", input_shape=[3, 16, 16])
    argv = ["--model", str(tmp_path / "zero.safetensors"), "--data", "shapes", "--n", "4"]
    argv += ["--no-sanity", "--baselines", "none", "--steps", "2", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "xaikit", "evaluate", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("xaikit: warning: ")]) == 1, lines
    assert len(lines) == 1, lines
    assert "sys.exit" not in done.stderr and "ExplainWarning" not in done.stderr


# ------------------------------------------------------------------- sizes and sampling


def test_filters_feeds_a_folder_at_the_cards_size(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for name in ("cat", "rocket"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(10):
            pixels = (rng.random((20, 30, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=2, widths=(4, 8), input_size=48)
    xaikit.save_model(model.eval(), tmp_path / "m48", input_shape=[3, 48, 48])
    seen = []
    real_load = filters_command.load

    def load(name, split="train", **options):
        dataset = real_load(name, split, **options)
        seen.append(tuple(dataset[0][0].shape))
        return dataset

    monkeypatch.setattr(filters_command, "load", load)
    out = tmp_path / "out"
    argv = ["filters", "--model", str(tmp_path / "m48.safetensors"), "--mode", "activations"]
    argv += ["--data", f"imagefolder:{tmp_path / 'imgs'}", "--n", "1", "--out", str(out), "-q"]
    assert cli.main(argv) == 0
    assert seen == [(3, 48, 48)]
    assert json.loads((out / "index.json").read_text())["size"] == 48
    argv[argv.index(str(out))] = str(tmp_path / "out32")
    assert cli.main([*argv, "--size", "32"]) == 0
    assert seen[-1] == (3, 32, 32)


class _Sorted(torch.utils.data.Dataset):
    """A fixed data set sorted by class, like an image folder: 20 of class 0, then 4 of 1."""

    targets = torch.tensor([0] * 20 + [1] * 4)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return torch.zeros(1), self.targets[i]


def test_evaluate_and_report_sample_fixed_data_class_balanced():
    data = _Sorted()
    for chosen in (_indices(data, 8, 0, generated=False), _sample(data, 8, 0, generated=False)):
        assert sorted(data.targets[chosen].tolist()) == [0] * 4 + [1] * 4
    assert _indices(data, 8, 0, generated=False) == _indices(data, 8, 0, generated=False)
    assert _indices(data, 8, 0, generated=True) == list(range(8))
    assert data.targets[_sample(data, 24, 0, generated=False)[:8]].sum() == 4
