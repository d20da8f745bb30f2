"""The command line: help, version, zoo, layers and exit codes."""

import subprocess
import sys

import pytest

import xaikit
from xaikit.cli import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("zoo", "layers"):
        assert command in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"xaikit {xaikit.__version__}"


def test_unknown_command_exits_2_with_one_line(capsys):
    assert main(["nonsense"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "invalid choice: 'nonsense'" in lines[0]
    assert captured.out == ""


def test_zoo_prints_every_architecture_with_parameter_count(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in xaikit.list_models():
        assert name in out
    model = xaikit.create_model("simple_cnn", num_classes=10)
    assert f"{sum(p.numel() for p in model.parameters()):,}" in out


def test_layers_marks_the_default_target_layer(capsys):
    assert main(["layers", "--model", "simple_cnn", "--input-shape", "3,32,32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = [line for line in lines if "<- default" in line]
    assert len(marked) == 1
    assert marked[0].split()[0] == "features.block3"
    assert "1x128x8x8" in marked[0]


def test_layers_for_a_checkpoint_uses_its_card(tmp_path, capsys):
    model = xaikit.create_model("vgg_small", num_classes=3, in_channels=1, widths=(4, 8))
    xaikit.save_model(model, tmp_path / "m", input_shape=[1, 16, 16])
    assert main(["layers", "--model", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "features.stage2" in out and "1x8x8x8" in out


def test_bad_model_exits_2_without_traceback(tmp_path, capsys):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_text("not a checkpoint")
    assert main(["layers", "--model", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert "bogus.safetensors" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "xaikit", "nonsense"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
