"""Bad input to every command: exit code 2, one line on stderr naming the file and the reason,
no traceback, and no partial output.

Commands run in-process through ``xaikit.cli.main``; two real processes (``python -m
xaikit``) check the same for a folder holding a decompression bomb, with the child's peak
memory measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_files import (
    BAD_IMAGE_CASES,
    CLASS_NAMES,
    bad_image,
    files_under,
    save_tiny,
    write_image,
    write_mode_image,
)

import xaikit
from xaikit.cli import main

REPO = Path(__file__).resolve().parents[2]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


# -- bad model files, for every command that takes --model --------------------------------


def _bad_model(folder: Path, case: str) -> tuple[Path, str]:
    """Write a bad model file; return the path to pass as --model and a reason substring."""
    folder.mkdir(parents=True, exist_ok=True)
    if case == "missing":
        return folder / "missing.safetensors", "not found"
    if case == "empty":
        path = folder / "empty.safetensors"
        path.write_bytes(b"")
        return path, "empty or truncated"
    if case == "text":
        path = folder / "notes.safetensors"
        path.write_text("a text file, not a checkpoint\n" * 3)
        return path, "not a safetensors file"
    if case == "image":
        return write_image(folder / "photo.png"), "not a safetensors file"
    if case == "truncated":
        stem = save_tiny(folder / "cut")
        weights = stem.with_name("cut.safetensors")
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return weights, "truncated"
    if case == "no-card":
        stem = save_tiny(folder / "lonely")
        stem.with_name("lonely.json").unlink()
        return stem.with_name("lonely.safetensors"), "lonely.json: model card not found"
    if case == "weights-do-not-fit-card":
        stem = save_tiny(folder / "misfit")
        card_path = stem.with_name("misfit.json")
        card = json.loads(card_path.read_text())
        card["config"]["widths"] = [4, 16]  # the weights hold 8 channels in block 2
        card_path.write_text(json.dumps(card))
        return stem.with_name("misfit.safetensors"), "do not fit the architecture"
    raise ValueError(case)  # pragma: no cover


MODEL_CASES = [
    "missing",
    "empty",
    "text",
    "image",
    "truncated",
    "no-card",
    "weights-do-not-fit-card",
]


def _command(name: str, model: str, tmp: Path) -> tuple[list[str], Path]:
    """Arguments that run command ``name`` on ``model``; and the output it would write."""
    out = tmp / "out"
    if name == "layers":
        return ["layers", "--model", model], out
    if name == "explain":
        image = write_image(tmp / "inputs" / "x.png")
        return ["explain", str(image), "--model", model, "--out", str(out), "-q"], out
    if name == "filters":
        return ["filters", "--model", model, "--mode", "weights", "--out", str(out), "-q"], out
    if name == "report":
        html = out / "report.html"
        args = ["report", "--model", model, "--data", "shapes", "--n", "2", "--no-evaluate"]
        return [*args, "--atlas-steps", "2", "--out", str(html), "-q"], out
    if name == "evaluate":
        json_out = out / "figures.json"
        args = ["evaluate", "--model", model, "--data", "shapes", "--n", "4", "--out"]
        return [*args, str(json_out), "-q", "--no-sanity"], out
    raise ValueError(name)  # pragma: no cover


COMMANDS = ["layers", "explain", "filters", "evaluate", "report"]


def test_every_command_is_covered():
    """The suite knows every command the CLI has (a new command needs its bad-input tests)."""
    from xaikit.cli import _commands

    names = {module.NAME for module in _commands()}
    # convert's bad weights files and settings: tests/cli/test_convert_cli.py; methods takes
    # no model or file (its one bad input, --family: tests/cli/test_methods_cli.py); serve's
    # bad models, uploads and requests: tests/serve/.
    assert names <= {"zoo", "train", "demo", "convert", "methods", "serve", *COMMANDS}


@pytest.mark.parametrize("case", MODEL_CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_model_file_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, command, case):
    model_path, reason = _bad_model(tmp_path / "models", case)
    args, out = _command(command, str(model_path), tmp_path)
    assert main(args) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith("xaikit: error: ")
    assert model_path.stem in line and reason in line
    assert captured.out == ""
    assert files_under(out) == []


@pytest.mark.parametrize("case", MODEL_CASES)
def test_bad_model_file_to_load_model_raises_checkpoint_error(tmp_path, case):
    model_path, reason = _bad_model(tmp_path, case)
    with pytest.raises(xaikit.CheckpointError, match=reason) as info:
        xaikit.load_model(model_path)
    assert model_path.stem in str(info.value)


DEMO_MODELS = ["shapes-multiclass", "shapes-multilabel", "recall-lstm"]


@pytest.mark.parametrize("case", ["missing", "empty", "weights-do-not-fit-card"])
def test_demo_with_bad_reference_models_exits_2_and_writes_nothing(tmp_path, capsys, case):
    models = tmp_path / "models"
    models.mkdir()
    if case != "missing":
        for name in DEMO_MODELS:
            path, _reason = _bad_model(tmp_path / "made", case)
            for suffix in (".safetensors", ".json"):
                source = path.with_suffix(suffix)
                if source.exists():
                    (models / f"{name}{suffix}").write_bytes(source.read_bytes())
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--models-dir", str(models), "--fast", "-q"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "shapes-multiclass" in line
    assert files_under(out) == []


# -- bad image files through `xaikit explain` ---------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_IMAGE_CASES))
def test_bad_image_exits_2_with_one_line_and_no_image_output(tmp_path, capsys, checkpoint, case):
    image = bad_image(tmp_path / "inputs", case)
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", str(checkpoint), "--out", str(out), "-q"]
    assert main(args) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert str(image.resolve()) in line and BAD_IMAGE_CASES[case] in line
    # Only the run's record is written, complete: no folder for the image, no temp file.
    assert files_under(out) == ["results.json", "results.jsonl"]
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == []
    assert [e["source"] for e in results["errors"]] == [str(image.resolve())]
    assert "1 bad input" in captured.out


def test_folder_of_good_and_bad_files_processes_the_good_and_lists_the_bad(
    tmp_path, capsys, checkpoint
):
    folder = tmp_path / "photos"
    good = [write_image(folder / "a.png", seed=1), write_image(folder / "sub" / "b.jpg", seed=2)]
    bad = [bad_image(folder, case) for case in BAD_IMAGE_CASES if case != "missing"]
    out = tmp_path / "out"
    args = ["explain", str(folder), "--model", str(checkpoint), "--out", str(out), "-q"]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err
    assert len(lines) == len(bad)
    for path in bad:
        assert sum(str(path.resolve()) in line for line in lines) == 1
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["source"] for r in results["images"]) == sorted(str(p.resolve()) for p in good)
    assert sorted(e["source"] for e in results["errors"]) == sorted(str(p.resolve()) for p in bad)
    for record in results["images"]:
        for entry in record["outputs"]["gradcam"]:
            heat = np.load(out / entry["map"])
            assert heat.shape == (16, 16) and np.isfinite(heat).all()
            assert heat.min() >= 0.0 and heat.max() <= 1.0
    written = files_under(out)
    assert not [name for name in written if name.endswith(".tmp")]
    assert not [name for name in written if "cut." in name or "bomb" in name or "text" in name]


def test_one_pixel_image_is_resized_by_the_loader_and_explained(tmp_path, capsys, checkpoint):
    """Documented: images of any size are resized to the card's input size (16x16 here)."""
    image = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(image)
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", str(checkpoint), "--out", str(out), "-q"]
    assert main(args) == 0
    capsys.readouterr()
    (record,) = json.loads((out / "results.json").read_text())["images"]
    assert record["original_size"] == [1, 1]
    (entry,) = record["outputs"]["gradcam"]
    assert np.load(out / entry["map"]).shape == (16, 16)
    with Image.open(out / entry["overlay"]) as overlay:
        assert overlay.size == (1, 1)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "P-transparent", "I;16", "1"])
def test_grey_alpha_palette_and_16_bit_images_are_not_bad_input(tmp_path, capsys, checkpoint, mode):
    image = write_mode_image(tmp_path / f"img_{mode.replace(';', '')}.png", mode)
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", str(checkpoint), "--out", str(out), "-q"]
    assert main(args) == 0, capsys.readouterr().err
    (record,) = json.loads((out / "results.json").read_text())["images"]
    (entry,) = record["outputs"]["gradcam"]
    heat = np.load(out / entry["map"])
    assert heat.shape == (16, 16) and np.isfinite(heat).all()
    with Image.open(out / entry["overlay"]) as overlay:
        assert overlay.size == (20, 20) and overlay.mode == "RGB"


# -- bad settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["explain", "filters", "evaluate", "report"])
def test_wrong_layer_name_lists_the_valid_names(tmp_path, capsys, command):
    torch.manual_seed(0)
    six = xaikit.create_model("simple_cnn", num_classes=6, widths=(4, 8), input_size=16)
    stem = tmp_path / "six"
    xaikit.save_model(six, stem, input_shape=[3, 16, 16])
    args, out = _command(command, str(stem), tmp_path)
    if command == "filters":
        args[args.index("weights")] = "activations"
        args += ["--data", "shapes", "--n", "2"]
    assert main([*args, "--layer", "features.blockX"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'features.blockX'" in line
    assert "features.block2" in line and "xaikit layers" in line
    assert files_under(out) == []


def test_target_out_of_range_names_the_valid_range(tmp_path, capsys, checkpoint):
    args, out = _command("explain", str(checkpoint), tmp_path)
    assert main([*args, "--target", "3"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "target 3 is out of range" in line and "0..2" in line
    assert files_under(out) == []


def test_unknown_class_name_lists_the_names(tmp_path, capsys, checkpoint):
    args, out = _command("explain", str(checkpoint), tmp_path)
    assert main([*args, "--target", "hexagon"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "hexagon" in line and all(name in line for name in CLASS_NAMES)
    assert files_under(out) == []


def test_filters_channel_out_of_range(tmp_path, capsys, checkpoint):
    out = tmp_path / "out"
    args = ["filters", "--model", str(checkpoint), "--mode", "maximize", "--out", str(out)]
    args += ["--layer", "features.block2", "--channels", "8", "--steps", "2", "-q"]
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "8" in line and "0..7" in line
    assert files_under(out) == []


@pytest.mark.parametrize(
    "extra, reason",
    [
        (["--data", "nope", "--model", "simple_cnn"], "unknown data set 'nope'"),
        (["--data", "shapes", "--model", "nope"], "unknown architecture 'nope'"),
        (["--data", "shapes", "--model", "simple_cnn", "--epochs", "0"], "at least 1"),
        (["--data", "shapes", "--model", "simple_cnn", "--data-option", "n"], "KEY=VALUE"),
        (["--data", "shapes", "--model", "simple_cnn", "--data-option", "colour=1"], "colour"),
        (["--recipe", "missing.toml"], "recipe not found"),
        (["--data", "shapes", "--model", "simple_cnn", "--resume"], "no checkpoint to resume"),
    ],
)
def test_train_bad_settings_exit_2_and_write_nothing(tmp_path, capsys, extra, reason):
    out = tmp_path / "run"
    small = ["--data-option", "n=60", "--data-option", "size=16"]
    args = ["train", *extra, *small, "--out", str(out), "-q"]
    if "--recipe" in extra:
        args[args.index("missing.toml")] = str(tmp_path / "missing.toml")
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert reason in line
    assert files_under(out) == []


def test_train_on_an_image_folder_with_a_bad_file_names_it(tmp_path, capsys):
    root = tmp_path / "data"
    for label in ("cats", "dogs"):
        for i in range(3):
            write_image(root / label / f"{i}.png", 16, 16, seed=i)
    broken = bad_image(root / "dogs", "truncated-png")
    out = tmp_path / "run"
    args = ["train", "--data", f"imagefolder:{root}", "--model", "simple_cnn", "--epochs", "1"]
    args += ["--data-option", "size=16", "--model-option", "widths=[4,8]", "--out", str(out)]
    assert main([*args, "-q"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(broken) in line and "truncated or corrupt" in line
    assert not [name for name in files_under(out) if name.endswith(".tmp")]


# -- real processes: `python -m xaikit` ------------------------------------------------------


def _run_measured(args: list[str], cwd: Path) -> tuple[int, str, str, int]:
    """Run ``python -m xaikit ARGS``; return (exit code, stdout, stderr, peak RSS in MB) of
    that one child (``os.wait4`` reports its own resource usage)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XAIKIT_QUIET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "xaikit", *args], cwd=cwd, stdout=out, stderr=err, env=env
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (
            process.returncode,
            out.read().decode(),
            err.read().decode(),
            usage.ru_maxrss // 1024,
        )


@pytest.mark.slow
def test_process_refuses_a_decompression_bomb_in_a_folder_without_decoding_it(tmp_path, checkpoint):
    """A 20000x20000 PNG header (1.2 GB if decoded) beside a good image: the good one is
    explained, the bomb refused from its header; the process never holds the pixels."""
    baseline_folder = tmp_path / "baseline"
    write_image(baseline_folder / "good.png")
    *_, baseline_mb = _run_measured(
        [
            "explain",
            str(baseline_folder),
            "--model",
            str(checkpoint),
            "--out",
            str(tmp_path / "baseline-out"),
            "-q",
        ],
        tmp_path,
    )
    folder = tmp_path / "photos"
    good = write_image(folder / "good.png")
    bomb = bad_image(folder, "bomb-20000x20000")
    out = tmp_path / "out"
    code, stdout, stderr, peak_mb = _run_measured(
        ["explain", str(folder), "--model", str(checkpoint), "--out", str(out), "-q"], tmp_path
    )
    assert code == 2, stderr
    line = _one_line(stderr)
    assert str(bomb.resolve()) in line and "refused before decoding" in line
    assert "explained 1 image(s), 1 bad input(s)" in stdout
    results = json.loads((out / "results.json").read_text())
    assert [r["source"] for r in results["images"]] == [str(good.resolve())]
    # Decoded, the bomb's pixels alone would take 1,200 MB beyond the same run without it.
    assert peak_mb - baseline_mb < 200, f"peak RSS {peak_mb} vs {baseline_mb} MB: decoded?"
