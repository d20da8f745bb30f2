"""Hostile names: file names that are not UTF-8 or are very long, class names that are
mathtext, numbers, dicts or megabytes long, and journal records of the wrong types.

Issue 13 (names): each is explained like any other input, or refused with exit code 2 and one
line; output file names are safe and bounded (:mod:`xaikit.names`), the full names stay in
``results.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_files import INPUT_SHAPE, write_image

import xaikit
from xaikit._names import JOURNAL, RESULTS
from xaikit.cli import main
from xaikit.errors import XaikitConfigError
from xaikit.explain.files import explain_files
from xaikit.names import (
    FILE_NAME_LIMIT,
    MAX_CLASS_NAME,
    check_class_names,
    display,
    file_component,
    json_safe,
    short_label,
    source_bytes,
)
from xaikit.viz.overlay import overlay_figure

NON_UTF8 = b"caf\xe9.png"
LONG = "a" * 246 + ".png"  # 250 bytes: a legal name, too long for anything appended to it


def _strict(path: Path) -> dict:
    """``path`` parsed as strict JSON: UTF-8, no NaN / Infinity."""

    def constant(name: str) -> None:
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_bytes().decode("utf-8"), parse_constant=constant)


def _names_under(folder: Path) -> list[bytes]:
    """Every file and folder name under ``folder``, as bytes."""
    return [os.fsencode(name) for _, dirs, files in os.walk(folder) for name in dirs + files]


def _explain(inputs: list, model: Path, out: Path, *extra: str) -> int:
    argv = ["explain", *map(str, inputs), "-m", str(model), "-o", str(out), "-q"]
    return main([*argv, *extra])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("xaikit: error: ")
    return line


def _card_model(folder: Path, names: list) -> Path:
    """The suite's tiny 3-class CNN saved with ``names`` as its card's class names."""
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    return xaikit.save_model(model.eval(), folder / "m", class_names=names, input_shape=INPUT_SHAPE)


def _outputs(image: dict) -> list[str]:
    return [
        entry[key]
        for entries in image["outputs"].values()
        for entry in entries
        for key in ("overlay", "figure", "map", "raw")
        if key in entry
    ]


# -- the rules ------------------------------------------------------------------------------


def test_the_name_rules():
    escaped = os.fsdecode(NON_UTF8)
    assert escaped == "caf\udce9.png"
    assert display(escaped) == "caf\\xe9.png" and display("x\ud800y") == "x\\ud800y"
    assert display("chat é.png") == "chat é.png"
    assert bytes.fromhex(source_bytes(escaped)) == NON_UTF8 and source_bytes("é.png") is None
    json.dumps(json_safe({escaped: [escaped]}), ensure_ascii=False).encode("utf-8")
    assert file_component("cat.png") == "cat.png"
    assert file_component(escaped) == "caf_.png"
    assert file_component("..") == "__" and file_component(".bashrc") == "_bashrc"
    assert file_component("a/b\\c\nd\x00") == "a_b_c_d_"
    long = file_component(LONG)
    assert (
        len(long.encode()) == FILE_NAME_LIMIT and long.startswith("aaa") and long.endswith(".png")
    )
    assert file_component("a" * 245 + "b.png") != long  # the hash keeps long names apart
    wide = file_component("é" * 300)
    assert len(wide.encode()) <= FILE_NAME_LIMIT and wide.startswith("é" * 40)
    assert check_class_names([1, 2.5, "x", "$\\foo$"]) == ["1", "2.5", "x", "$\\foo$"]
    assert check_class_names(("a",)) == ["a"] and check_class_names(None) is None
    assert short_label("é" * 5000) == "é" * 57 + "..." and short_label("a\nb") == "a b"


@pytest.mark.parametrize(
    "names, where",
    [
        (["a", {"b": 1}, "c"], "class_names[1] is a dict"),
        ([None, "b"], "class_names[0] is null"),
        (["a", True], "class_names[1] is True (a bool)"),
        (["a", ["b"]], "class_names[1] is a list"),
        (["a", float("nan")], "class_names[1] is nan"),
        ({"0": "a"}, "class_names must be a list"),
        ("abc", "class_names must be a list"),
        (["ok", "x" * (MAX_CLASS_NAME + 1)], "class_names[1] is 1,001 characters long"),
    ],
)
def test_class_names_that_are_not_names_are_refused_in_one_line(names, where):
    with pytest.raises(XaikitConfigError) as info:
        check_class_names(names)
    message = str(info.value)
    assert where in message and "\n" not in message and len(message) < 300


# -- file names -----------------------------------------------------------------------------


def test_non_utf8_and_very_long_file_names_are_explained(checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    ok = write_image(folder / "ok.png", 16, 16)
    raw = os.fsencode(folder) + b"/" + NON_UTF8
    with open(raw, "wb") as handle:
        handle.write(ok.read_bytes())
    (folder / LONG).write_bytes(ok.read_bytes())
    # The same 255-byte name twice, given directly: the second key gets "~2", still bounded.
    twins = []
    for side in ("left", "right"):
        twins.append(folder.parent / side / ("b" * 251 + ".png"))
        twins[-1].parent.mkdir()
        twins[-1].write_bytes(ok.read_bytes())
    out = tmp_path / "out"

    assert _explain([folder, *twins], f"{checkpoint}.safetensors", out) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "explained 5 image(s)" in captured.out
    results = _strict(out / RESULTS)
    assert results["counts"] == {"images": 5, "errors": 0}
    by_source = {image["source"]: image for image in results["images"]}
    escaped = display(os.fsdecode(raw))
    assert set(by_source) == {
        str(ok),
        escaped,
        str(folder / LONG),
        *map(str, twins),
    }
    assert escaped.endswith("/caf\\xe9.png")
    assert bytes.fromhex(by_source[escaped]["source_bytes"]) == raw
    assert by_source[escaped]["output_dir"] == "imgs/caf_.png"
    assert "source_bytes" not in by_source[str(ok)]
    keys = [by_source[str(t)]["output_dir"] for t in twins]
    assert keys[0] != keys[1] and keys[1].endswith("~2") and keys[1][:80] == keys[0][:80]
    assert len(keys[1].split("/")[-1].encode()) <= FILE_NAME_LIMIT
    for image in results["images"]:
        assert all(len(part.encode()) <= FILE_NAME_LIMIT for part in image["output_dir"].split("/"))
        files = _outputs(image)
        assert len(files) == 4  # overlay, figure, map, raw
        assert all(
            (out / name).is_file() and name.startswith(image["output_dir"]) for name in files
        )
    assert all(len(name) <= FILE_NAME_LIMIT for name in _names_under(out))
    for line in (out / JOURNAL).read_bytes().splitlines():
        json.loads(line.decode("utf-8"))  # the journal is UTF-8 too

    # --resume finds every image, the non-UTF-8 one included, by its exact name.
    assert _explain([folder, *twins], f"{checkpoint}.safetensors", out, "--resume") == 0
    assert "explained 0 image(s), skipped 5 already done" in capsys.readouterr().out
    assert _strict(out / RESULTS)["images"] == results["images"]


def test_a_bad_file_with_a_non_utf8_name_is_one_printable_error(checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_image(folder / "ok.png", 16, 16)
    with open(os.fsencode(folder) + b"/" + NON_UTF8, "wb") as handle:
        handle.write(b"not an image")
    assert _explain([folder], f"{checkpoint}.safetensors", tmp_path / "out") == 2
    line = _one_error_line(capsys)
    assert "caf\\xe9.png" in line
    (error,) = _strict(tmp_path / "out" / RESULTS)["errors"]
    assert error["source"].endswith("caf\\xe9.png") and "caf\\xe9.png" in error["error"]


# -- class names ----------------------------------------------------------------------------

MATH = "$\\foo$"
WIDE = "é" * 150  # 300 bytes of UTF-8


@pytest.mark.parametrize(
    "names, shown",
    [
        ([MATH, WIDE, "x" * 300], [MATH, WIDE, "x" * 300]),
        ([1, 2, 3], ["1", "2", "3"]),
    ],
)
def test_hostile_class_names_name_bounded_files_and_stay_whole_in_the_results(
    tmp_path, capsys, names, shown
):
    model = _card_model(tmp_path, names)
    write_image(tmp_path / "imgs" / "a.png", 16, 16)
    out = tmp_path / "out"
    assert (
        _explain([tmp_path / "imgs"], model, out, "--target", "all", "--method", "gradcam,saliency")
        == 0
    )
    assert "Traceback" not in capsys.readouterr().err
    results = _strict(out / RESULTS)
    assert results["run"]["class_names"] == shown
    (image,) = results["images"]
    assert [t["name"] for t in image["targets"]] == shown
    files = _outputs(image)
    assert len(files) == 2 * 3 * 4  # 2 methods x 3 classes x (overlay, figure, map, raw)
    for name in files:
        assert (out / name).stat().st_size > 0
        assert len(Path(name).name.encode()) <= FILE_NAME_LIMIT
    stems = {Path(name).name.split(".")[1] for name in files}
    assert len(stems) == 3 and all(s.startswith(("0-", "1-", "2-")) for s in stems)
    if names[0] == 1:
        assert stems == {"0-1", "1-2", "2-3"}
    figure = np.load(out / image["outputs"]["gradcam"][0]["map"])
    assert figure.shape == (16, 16) and np.isfinite(figure).all()


def test_a_class_name_that_is_a_dict_is_one_line(tmp_path, capsys):
    model = _card_model(tmp_path, ["a", {"b": 1}, "c"])
    write_image(tmp_path / "imgs" / "a.png", 16, 16)
    assert _explain([tmp_path / "imgs"], model, tmp_path / "out") == 2
    assert "class_names" in _one_error_line(capsys)
    assert not (tmp_path / "out" / RESULTS).exists()


def test_a_ten_megabyte_class_name_is_refused_in_seconds(tmp_path, capsys):
    huge = "w" * 10_000_000
    model = _card_model(tmp_path, ["a", huge, "c"])
    write_image(tmp_path / "imgs" / "a.png", 16, 16)
    start = time.perf_counter()
    assert _explain([tmp_path / "imgs"], model, tmp_path / "out") == 2
    line = _one_error_line(capsys)
    assert time.perf_counter() - start < 10
    assert "class_names[1]" in line and len(line) < 400


def test_the_api_checks_class_names_too(model, tmp_path):
    write_image(tmp_path / "imgs" / "a.png", 16, 16)
    common = {"input_shape": INPUT_SHAPE, "quiet": True, "figures": False}
    start = time.perf_counter()
    for bad, where in (
        (["a", "w" * 10_000_000, "c"], "class_names[1] is 10,000,000 characters"),
        ([{"a": 1}, "b", "c"], "class_names[0] is a dict"),
        (["a", None, "c"], "class_names[1] is null"),
    ):
        with pytest.raises(XaikitConfigError, match=where.replace("[", "\\[")):
            explain_files(model, [tmp_path / "imgs"], tmp_path / "out", class_names=bad, **common)
        with pytest.raises(XaikitConfigError, match=where.replace("[", "\\[")):
            xaikit.explain(model, torch.rand(1, *INPUT_SHAPE), class_names=bad, quiet=True)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "out").exists()
    # Numbers are names: target "2" is the class named 2.
    res = xaikit.explain(
        model,
        torch.rand(1, *INPUT_SHAPE),
        class_names=[7, 2, 5],
        target="2",
        quiet=True,
        return_result=True,
    )
    assert res.targets.tolist() == [[1]]
    summary = explain_files(
        model, [tmp_path / "imgs"], tmp_path / "out", class_names=[7, 2, 5], target="5", **common
    )
    (image,) = _strict(summary.results)["images"]
    assert image["targets"][0]["index"] == 2 and image["targets"][0]["name"] == "5"
    assert image["outputs"]["gradcam"][0]["map"].endswith("/gradcam.2-5.npy")


def test_figure_titles_are_plain_text_and_bounded():
    image, heat = np.zeros((16, 16, 3), dtype=np.uint8), np.zeros((16, 16))
    figure = overlay_figure(image, heat, title=f"{MATH} (p=0.50) — gradcam " + "z" * 5000)
    figure.canvas.draw()  # mathtext would raise a ValueError on "\foo"
    title = figure.axes[0].title
    assert title.get_text().startswith(MATH) and len(title.get_text()) <= 200
    assert title.get_parse_math() is False and title.get_usetex() is False


# -- the journal's types --------------------------------------------------------------------


def _edit_first_image(out: Path, edit) -> None:
    lines = (out / JOURNAL).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    first = next(r for r in records if r.get("kind") == "image")
    edit(first)
    (out / JOURNAL).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _entry(record: dict) -> dict:
    return record["outputs"]["gradcam"][0]


def _borrow(record: dict) -> None:
    """Point the record's raw map at the other image's (a real file of the same size)."""
    entry = _entry(record)
    other = entry["raw"].replace("img0.png", "img1.png")
    record["sizes"][other] = record["sizes"][entry["raw"]]
    entry["raw"] = other


EDITS = {
    "outputs-int": lambda r: r.update(outputs=5),
    "size-string": lambda r: r["sizes"].update(
        {_entry(r)["map"]: str(r["sizes"][_entry(r)["map"]])}
    ),
    "size-bool": lambda r: r["sizes"].update({_entry(r)["map"]: True}),
    "original-size-string": lambda r: r.update(original_size="16x16"),
    "targets-int": lambda r: r.update(targets=3),
    "index-string": lambda r: r["targets"][0].update(index=str(r["targets"][0]["index"])),
    "name-dict": lambda r: r["targets"][0].update(name={"x": 1}),
    "score-string": lambda r: r["targets"][0].update(score="high"),
    "degenerate-string": lambda r: _entry(r).update(degenerate="no"),
    "entry-target-other": lambda r: _entry(r).update(target=_entry(r)["target"] + 1),
    "no-outputs": lambda r: r.update(outputs={}),
    "output-in-another-folder": lambda r: _borrow(r),
    "output-dir-list": lambda r: r.update(output_dir=["imgs"]),
    "source-list": lambda r: r.update(source=[r["source"]]),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_a_journal_record_of_the_wrong_types_is_redone(checkpoint, tmp_path, capsys, case):
    for i in range(2):
        write_image(tmp_path / "imgs" / f"img{i}.png", 16, 16, seed=i)
    out = tmp_path / "out"
    model = f"{checkpoint}.safetensors"
    assert _explain([tmp_path / "imgs"], model, out, "--no-figure") == 0
    before = _strict(out / RESULTS)["images"]
    _edit_first_image(out, EDITS[case])
    with open(out / JOURNAL, "a", encoding="utf-8") as handle:
        handle.write("[" * 100_000 + "\n")  # a line nested too deep for json: not a record
    capsys.readouterr()
    assert _explain([tmp_path / "imgs"], model, out, "--no-figure", "--resume") == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "explained 1 image(s), skipped 1 already done" in captured.out
    after = _strict(out / RESULTS)
    assert after["counts"] == {"images": 2, "errors": 0}
    assert after["images"] == before  # the redone record is the original one again
    for image in after["images"]:
        assert all((out / name).is_file() for name in _outputs(image))


@pytest.mark.parametrize("settings", [["x"], "gradcam", None])
def test_a_journal_header_of_the_wrong_types_is_one_line(checkpoint, tmp_path, capsys, settings):
    write_image(tmp_path / "imgs" / "img0.png", 16, 16)
    out = tmp_path / "out"
    assert _explain([tmp_path / "imgs"], f"{checkpoint}.safetensors", out, "--no-figure") == 0
    lines = (out / JOURNAL).read_text().splitlines()
    header = json.loads(lines[0])
    header["settings"] = settings
    (out / JOURNAL).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    capsys.readouterr()
    assert _explain([tmp_path / "imgs"], f"{checkpoint}.safetensors", out, "--resume") == 2
    assert "is not an xaikit explain journal" in _one_error_line(capsys)
