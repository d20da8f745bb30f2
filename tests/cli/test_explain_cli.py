"""``xaikit explain``: files and folders -> overlays, maps and results.json, streamed, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit.cli import main
from xaikit.cli.explain import parse_target
from xaikit.data.images import load_image, read_image
from xaikit.explain.api import explain
from xaikit.explain.files import JOURNAL, RESULTS, collect_images, explain_files
from xaikit.viz import overlay

NAMES = ["circle", "square", "triangle"]
NORM = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


def _save(model: torch.nn.Module, path: Path, **card) -> str:
    xaikit.save_model(model, path, input_shape=[3, 16, 16], normalization=NORM, **card)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[torch.nn.Module, str]:
    """A 3-class tiny CNN checkpoint (with class names and normalization) and its path."""
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    path = _save(model.eval(), tmp_path_factory.mktemp("model") / "m", class_names=NAMES)
    return model, path


def _image(path: Path, height: int, width: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _folder(root: Path) -> Path:
    """imgs/ with three good images (PNG, JPEG, one in a subfolder) and one bad file."""
    folder = root / "imgs"
    _image(folder / "a.png", 30, 40, 1)
    _image(folder / "b.jpg", 24, 24, 2)
    _image(folder / "sub" / "c.png", 20, 36, 3)
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    return folder


def _results(out: Path) -> dict:
    return json.loads((out / RESULTS).read_text(encoding="utf-8"))


def _input(path: Path) -> torch.Tensor:
    return load_image(path, channels=3, size=(16, 16), normalization=NORM)[None]


def test_one_image_overlay_at_original_size_maps_and_results(tiny, tmp_path, capsys):
    model, ckpt = tiny
    img = _image(tmp_path / "photo.png", 30, 40, 7)
    out = tmp_path / "out"
    assert main(["explain", str(img), "--model", ckpt, "--out", str(out), "-q"]) == 0
    assert capsys.readouterr().err == ""

    x = _input(img)
    with torch.no_grad():
        logits = model(x)[0]
    probs = logits.softmax(-1)
    top = int(logits.argmax())
    stem = out / "photo.png" / f"gradcam.{top}-{NAMES[top]}"

    heat = np.load(f"{stem}.npy")
    assert heat.shape == (16, 16) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    reference = explain(model, x, method="gradcam", return_result=True)
    np.testing.assert_allclose(heat, reference.maps[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.load(f"{stem}.raw.npy"), reference.raw[0, 0].numpy(), atol=1e-5)

    with Image.open(f"{stem}.png") as png:
        assert png.size == (40, 30)  # PIL: (width, height) of the original file
        assert png.mode == "RGB"
        pixels = np.asarray(png)
    np.testing.assert_array_equal(pixels, overlay(read_image(img).image, heat))
    with Image.open(f"{stem}.figure.png") as figure:
        assert figure.width > 256 and figure.height > 192  # titled, with a colour bar

    results = _results(out)
    (record,) = results["images"]
    assert results["errors"] == []
    assert record["source"] == str(img.resolve())
    assert record["original_size"] == [30, 40]
    (target,) = record["targets"]
    assert target["index"] == top and target["name"] == NAMES[top]
    assert target["probability"] == pytest.approx(float(probs[top]), abs=1e-5)
    assert target["score"] == pytest.approx(float(logits[top]), abs=1e-5)
    (entry,) = record["outputs"]["gradcam"]
    assert entry["degenerate"] is False
    assert entry["overlay"] == f"photo.png/gradcam.{top}-{NAMES[top]}.png"
    assert all((out / entry[k]).is_file() for k in ("overlay", "figure", "map", "raw"))
    run = results["run"]
    assert run["methods"] == ["gradcam"] and run["layers"] == {"gradcam": "features.block2"}
    assert run["model"]["architecture"] == "simple_cnn" and run["score"] == "logit"
    assert run["xaikit_version"] == xaikit.__version__
    assert results["counts"] == {"images": 1, "errors": 0}


def test_folder_with_a_bad_file_processes_the_good_ones_and_exits_2(tiny, tmp_path, capsys):
    _model, ckpt = tiny
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    argv = ["explain", str(folder), "-m", ckpt, "-o", str(out), "--batch-size", "2", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0] and "not an image" in err[0]

    results = _results(out)
    keys = [r["output_dir"] for r in results["images"]]
    assert keys == ["imgs/a.png", "imgs/b.jpg", "imgs/sub/c.png"]
    (error,) = results["errors"]
    assert error["source"] == str((folder / "broken.png").resolve())
    assert "not an image" in error["error"]
    assert not (out / "imgs" / "broken.png").exists()
    for record in results["images"]:
        (entry,) = record["outputs"]["gradcam"]
        with Image.open(out / entry["overlay"]) as png:
            assert png.size == tuple(reversed(record["original_size"]))
    # the journal holds the run line and one line per input
    lines = (out / JOURNAL).read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines].count("image") == 3
    assert len(lines) == 5


def test_resume_skips_done_images_and_survives_a_cut_journal(tiny, tmp_path, capsys):
    _model, ckpt = tiny
    folder = _folder(tmp_path)
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    argv = ["explain", str(folder), "-m", ckpt, "-o", str(out), "--batch-size", "2", "-q"]
    assert main(argv) == 0
    files = sorted(p for p in (out / "imgs").rglob("*") if p.is_file())
    assert len(files) == 3 * 4
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    # A kill while c.png's line was being written: half a line, no results.json.
    journal = out / JOURNAL
    text = journal.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    assert "c.png" in last
    journal.write_text(text[: len(text) - len(last) // 2 - 1])
    (out / RESULTS).unlink()
    capsys.readouterr()

    assert main([*argv, "--resume"]) == 0
    assert "skipped 2 already done" in capsys.readouterr().out
    for path, mtime in mtimes.items():
        redone = "c.png" in path.as_posix()
        assert (path.stat().st_mtime_ns != mtime) == redone, path
    results = _results(out)
    assert [r["output_dir"] for r in results["images"]] == [
        "imgs/a.png",
        "imgs/b.jpg",
        "imgs/sub/c.png",
    ]
    assert results["run"]["resumed"] is True

    # An output file gone missing: that image is done again, the others are skipped.
    victim = out / "imgs" / "a.png"
    next(victim.glob("*.raw.npy")).unlink()
    assert main([*argv, "--resume"]) == 0
    assert "explained 1 image(s), skipped 2" in capsys.readouterr().out
    assert len(list(victim.glob("*.raw.npy"))) == 1

    # Resuming with other settings would mix outputs: refused before any work.
    assert main([*argv, "--resume", "--method", "layercam"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_several_methods_write_files_per_method(tiny, tmp_path):
    model, ckpt = tiny
    img = _image(tmp_path / "x.png", 16, 16, 4)
    out = tmp_path / "out"
    argv = ["explain", str(img), "-m", ckpt, "-o", str(out), "--method", "gradcam,saliency"]
    assert main([*argv, "--no-figure", "-q"]) == 0
    record = _results(out)["images"][0]
    assert list(record["outputs"]) == ["gradcam", "saliency"]
    top = record["targets"][0]["index"]
    for method in ("gradcam", "saliency"):
        reference = explain(model, _input(img), method=method, return_result=True)
        stem = out / "x.png" / f"{method}.{top}-{NAMES[top]}"
        np.testing.assert_allclose(np.load(f"{stem}.npy"), reference.maps[0, 0], atol=1e-5)
        assert Path(f"{stem}.png").is_file() and not Path(f"{stem}.figure.png").exists()
    assert _results(out)["run"]["layers"] == {"gradcam": "features.block2", "saliency": None}


def test_positive_on_a_multilabel_model_gives_one_overlay_per_predicted_label(tmp_path):
    torch.manual_seed(1)
    model = xaikit.create_model(
        "simple_cnn", num_classes=3, task="multilabel", widths=(4, 8), input_size=16
    ).eval()
    with torch.no_grad():  # labels 0 and 2 on, 1 off, whatever the image
        model.head.fc.bias.copy_(torch.tensor([6.0, -6.0, 6.0]))
    ckpt = _save(model, tmp_path / "ml", class_names=NAMES)
    img = _image(tmp_path / "two.png", 20, 30, 5)
    out = tmp_path / "out"
    assert main(["explain", str(img), "-m", ckpt, "-o", str(out), "-t", "positive", "-q"]) == 0

    with torch.no_grad():
        logits = model(_input(img))
    expected = model.head.predict(logits)[0].nonzero().flatten().tolist()
    assert expected == [0, 2]
    record = _results(out)["images"][0]
    assert [t["index"] for t in record["targets"]] == expected
    assert [t["name"] for t in record["targets"]] == ["circle", "triangle"]
    probs = logits.sigmoid()[0]
    for t in record["targets"]:
        assert t["probability"] == pytest.approx(float(probs[t["index"]]), abs=1e-5)
    overlays = sorted(p.name for p in (out / "two.png").glob("*.png") if ".figure" not in p.name)
    assert overlays == ["gradcam.0-circle.png", "gradcam.2-triangle.png"]


@pytest.mark.parametrize(
    ("target", "files"),
    [
        ("triangle", ["gradcam.2-triangle.npy"]),
        ("0,square", ["gradcam.0-circle.npy", "gradcam.1-square.npy"]),
        ("all", ["gradcam.0-circle.npy", "gradcam.1-square.npy", "gradcam.2-triangle.npy"]),
    ],
)
def test_target_forms(tiny, tmp_path, target, files):
    _model, ckpt = tiny
    img = _image(tmp_path / "t.png", 16, 16, 6)
    out = tmp_path / "out"
    argv = ["explain", str(img), "-m", ckpt, "-o", str(out), "-t", target, "--no-figure", "-q"]
    assert main(argv) == 0
    assert sorted(p.name for p in (out / "t.png").glob("*.npy") if ".raw" not in p.name) == files


def test_parse_target():
    assert parse_target("predicted") == "predicted"
    assert parse_target(" 3 ") == 3
    assert parse_target("1,cat, 4") == [1, "cat", 4]
    assert parse_target("cat") == "cat"


def test_torchvision_model_with_an_input_shape_override(tmp_path):
    img = _image(tmp_path / "tv.jpg", 50, 70, 8)
    out = tmp_path / "out"
    argv = ["explain", str(img), "-m", "torchvision:resnet18", "-o", str(out)]
    assert main([*argv, "--input-shape", "3,64,64", "--device", "cpu", "-q"]) == 0
    results = _results(out)
    record = results["images"][0]
    (target,) = record["targets"]
    assert 0 <= target["index"] < 1000 and target["name"] is None
    (entry,) = record["outputs"]["gradcam"]
    assert entry["overlay"] == f"tv.jpg/gradcam.{target['index']}.png"
    assert np.load(out / entry["map"]).shape == (64, 64)
    assert np.load(out / entry["raw"]).shape == (2, 2)  # layer4 of ResNet-18 at 64 px
    with Image.open(out / entry["overlay"]) as png:
        assert png.size == (70, 50)
    assert results["run"]["layers"] == {"gradcam": "layer4"}
    assert results["run"]["normalization"]["mean"] == [0.485, 0.456, 0.406]


def test_wrong_layer_exits_2_listing_layer_names_and_writes_nothing(tiny, tmp_path, capsys):
    _model, ckpt = tiny
    img = _image(tmp_path / "x.png", 16, 16, 9)
    out = tmp_path / "out"
    assert main(["explain", str(img), "-m", ckpt, "-o", str(out), "--layer", "nope"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "'nope'" in line and "features.block2" in line
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_target_out_of_range_exits_2(tiny, tmp_path, capsys):
    _model, ckpt = tiny
    img = _image(tmp_path / "x.png", 16, 16, 10)
    out = tmp_path / "out"
    assert main(["explain", str(img), "-m", ckpt, "-o", str(out), "--target", "7"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "out of range" in line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_a_single_bad_file_exits_2_with_one_line_and_no_outputs(tiny, tmp_path, capsys, kind):
    _model, ckpt = tiny
    img = tmp_path / "bad.png"
    if kind == "corrupt":
        good = _image(tmp_path / "good.png", 20, 20, 11).read_bytes()
        img.write_bytes(good[: len(good) // 2])  # truncated
    out = tmp_path / "out"
    assert main(["explain", str(img), "-m", ckpt, "-o", str(out), "-q"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert str(img.resolve()) in line
    assert ("does not exist" if kind == "missing" else "truncated or corrupt") in line
    assert "Traceback" not in captured.err
    assert not (out / "bad.png").exists()
    assert len(_results(out)["errors"]) == 1


def test_collect_images_keys_are_unique_and_skip_the_output_folder(tmp_path):
    one, two = tmp_path / "a" / "imgs", tmp_path / "b" / "imgs"
    _image(one / "x.png", 4, 4, 0)
    _image(two / "x.png", 4, 4, 0)
    _image(one / "out" / "old.png", 4, 4, 0)
    (tmp_path / "empty").mkdir()
    sources = collect_images([one, two, one / "x.png", tmp_path / "empty"], exclude=one / "out")
    assert [s.key for s in sources] == ["imgs/x.png", "imgs/x.png~2", "empty"]
    assert sources[-1].problem is not None and "no image files" in sources[-1].problem


def test_help_explains_targets_and_layout(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--resume", "--batch-size", "positive", "results.json", ".raw.npy", "exit codes"):
        assert word in text


def test_an_interrupt_keeps_finished_images_and_resume_completes(tiny, tmp_path):
    model, _ckpt = tiny
    folder = tmp_path / "imgs"
    for i, name in enumerate(["a.png", "b.png", "d.png"]):
        _image(folder / name, 12, 18, 20 + i)
    (folder / "c.png").write_bytes(b"")  # the bad file after the first batch of two
    out = tmp_path / "out"
    options = dict(input_shape=[3, 16, 16], normalization=NORM, class_names=NAMES, batch_size=2)

    def interrupt(source: str, reason: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_files(model, [folder], out, on_error=interrupt, quiet=True, **options)
    lines = [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]
    done = sorted(Path(r["source"]).name for r in lines if r["kind"] == "image")
    assert done == ["a.png", "b.png"]  # the batch before the interrupt is recorded
    assert not (out / RESULTS).exists()
    assert not list(out.rglob("*.tmp"))

    summary = explain_files(model, [folder], out, resume=True, workers=0, quiet=True, **options)
    assert (summary.skipped, summary.explained, len(summary.errors)) == (2, 1, 1)
    results = _results(out)
    assert [r["output_dir"] for r in results["images"]] == [
        "imgs/a.png",
        "imgs/b.png",
        "imgs/d.png",
    ]
    assert [Path(e["source"]).name for e in results["errors"]] == ["c.png"]
