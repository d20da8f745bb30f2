"""Output folders: one run per ``--out`` (a lock), a ``--resume`` that checks the journal,
``--out`` paths that cannot be written refused up front, and inputs kept apart from outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from reliability_files import write_image

from xaikit._names import JOURNAL, RESULTS
from xaikit.cli import main
from xaikit.errors import XaikitConfigError
from xaikit.explain.files import collect_images
from xaikit.io import LOCK_NAME, check_out, lock_out

ROOT = Path(__file__).resolve().parents[2]


def _images(folder: Path, n: int) -> Path:
    for i in range(n):
        write_image(folder / f"img{i:02d}.png", 16, 16, seed=i)
    return folder


def _explain(inputs: list[Path], checkpoint: Path, out: Path, *extra: str) -> int:
    argv = ["explain", *map(str, inputs), "-m", f"{checkpoint}.safetensors", "-o", str(out)]
    return main([*argv, "--no-figure", "-q", *extra])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    return line


# -- the lock -------------------------------------------------------------------------------

_SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    import xaikit.explain.files as files
    from xaikit.cli import main

    read = files._read_for_model

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return read(*args, **kwargs)

    files._read_for_model = slow
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_second_run_on_the_same_out_exits_2_naming_the_holder(checkpoint, tmp_path, capsys):
    images, out = _images(tmp_path / "imgs", 6), tmp_path / "out"
    argv = ["explain", str(images), "-m", f"{checkpoint}.safetensors", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, *argv, "--no-figure", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        lock = out / LOCK_NAME
        while not (lock.is_file() and lock.read_text()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        assert _explain([images], checkpoint, out) == 2
        line = _one_error_line(capsys)
        assert f"pid {first.pid}" in line and "explain" in line and "in use" in line
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err.decode()
    results = json.loads((out / RESULTS).read_text())
    assert results["counts"] == {"images": 6, "errors": 0}
    assert not (out / LOCK_NAME).exists()


def test_the_lock_of_a_dead_process_is_taken_over(checkpoint, tmp_path):
    images, out = _images(tmp_path / "imgs", 1), tmp_path / "out"
    out.mkdir()
    dead = {"pid": 2**22 + 12345, "host": "here", "command": "explain"}
    (out / LOCK_NAME).write_text(json.dumps(dead))  # left behind by a killed run
    assert _explain([images], checkpoint, out) == 0


def test_lock_out_refuses_while_held_and_leaves_no_trace(tmp_path):
    out = tmp_path / "new"
    with lock_out(out, "train"):
        info = json.loads((out / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "train"
        code = f"from xaikit.io import lock_out\nwith lock_out({str(out)!r}, 'x'): pass"
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1 and f"pid {os.getpid()}" in done.stderr
    assert not out.exists()  # created for the run, left empty: removed


# -- --resume checks the journal ----------------------------------------------------------


def _edit_journal(out: Path, edit) -> None:
    lines = [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]
    for record in lines:
        if record.get("kind") == "image":
            edit(record)
    (out / JOURNAL).write_text("".join(json.dumps(r) + "\n" for r in lines))


def _first_output(record: dict) -> dict:
    return next(iter(record["outputs"].values()))[0]


@pytest.mark.parametrize(
    "case", ["absolute", "dotdot", "wrong_size", "no_sizes", "malformed", "symlink"]
)
def test_resume_redoes_records_it_cannot_verify(checkpoint, tmp_path, capsys, case):
    images, out = _images(tmp_path / "imgs", 2), tmp_path / "out"
    assert _explain([images], checkpoint, out) == 0
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not yours")

    def edit(record: dict) -> None:
        entry = _first_output(record)
        if case == "absolute":
            record["sizes"]["/etc/passwd"] = os.path.getsize("/etc/passwd")
            entry["overlay"] = "/etc/passwd"
        elif case == "dotdot":
            name = "../secret.png"
            entry["overlay"] = name
            record["sizes"][name] = outside.stat().st_size
        elif case == "wrong_size":
            record["sizes"][entry["overlay"]] += 1
        elif case == "no_sizes":
            del record["sizes"]
        elif case == "malformed":
            record["outputs"] = ["x"]
        elif case == "symlink":
            link = out / record["output_dir"] / "escape.png"
            link.symlink_to(outside)
            name = f"{record['output_dir']}/escape.png"
            entry["overlay"] = name
            record["sizes"][name] = outside.stat().st_size

    _edit_journal(out, edit)
    capsys.readouterr()
    assert _explain([images], checkpoint, out, "--resume") == 0
    summary = capsys.readouterr().out
    assert "explained 2 image(s)" in summary and "skipped" not in summary
    text = (out / RESULTS).read_text()
    assert "/etc/passwd" not in text and "secret.png" not in text and "escape.png" not in text
    for image in json.loads(text)["images"]:
        assert (out / _first_output(image)["overlay"]).is_file()
        assert "sizes" not in image  # journal bookkeeping stays in the journal


def test_resume_still_skips_verified_records(checkpoint, tmp_path, capsys):
    images, out = _images(tmp_path / "imgs", 2), tmp_path / "out"
    assert _explain([images], checkpoint, out) == 0
    capsys.readouterr()
    assert _explain([images], checkpoint, out, "--resume") == 0
    assert "explained 0 image(s), skipped 2 already done" in capsys.readouterr().out


def test_a_journal_that_is_a_folder_is_refused(checkpoint, tmp_path, capsys):
    images, out = _images(tmp_path / "imgs", 1), tmp_path / "out"
    (out / JOURNAL).mkdir(parents=True)
    assert _explain([images], checkpoint, out, "--resume") == 2
    assert "not a regular file" in _one_error_line(capsys)


# -- --out that cannot be written -----------------------------------------------------------


def _argv(command: str, out: str, checkpoint: Path) -> list[str]:
    model = f"{checkpoint}.safetensors"
    return {
        "explain": ["explain", str(checkpoint.parent), "-m", model, "-o", out],
        "filters": ["filters", "-m", model, "--mode", "weights", "-o", out],
        "evaluate": ["evaluate", "-m", model, "--data", "shapes", "--out", out],
        "report": ["report", "-m", model, "--out", out],
        "train": ["train", "--data", "shapes", "--model", "simple_cnn", "--out", out],
        "convert": ["convert", model, "-m", "simple_cnn", "-o", out],
        "demo": ["demo", "--fast", "-o", out],
    }[command]


def _bad_out(tmp_path: Path, case: str, command: str) -> str:
    afile = tmp_path / "afile"
    afile.write_text("x")
    name = {"evaluate": "r.json", "report": "r.html"}.get(command, "o")
    if case == "is_a_file":
        if command in ("evaluate", "report"):
            folder = tmp_path / name
            folder.mkdir()
            return str(folder)  # a folder where a file is wanted
        return str(afile)
    if case == "under_a_file":
        return str(afile / "deeper" / name)
    if case == "cannot_create":
        return f"/proc/xaikit-no-such-folder/{name}"
    assert case == "read_only"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return str(locked / "sub" / name)


@pytest.mark.parametrize("case", ["is_a_file", "under_a_file", "cannot_create", "read_only"])
@pytest.mark.parametrize(
    "command", ["explain", "filters", "evaluate", "report", "train", "convert", "demo"]
)
def test_an_unusable_out_exits_2_with_one_line_before_any_work(
    checkpoint, tmp_path, capsys, monkeypatch, command, case
):
    import importlib

    import xaikit.train.recipe as recipe

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(recipe, "train_recipe", no_work)  # counts epochs: none may run
    cli_module = importlib.import_module(f"xaikit.cli.{command}")
    for loader in ("load_cli_model", "load_model"):
        monkeypatch.setattr(cli_module, loader, no_work, raising=False)
    out = _bad_out(tmp_path, case, command)
    assert main(_argv(command, out, checkpoint)) == 2
    line = _one_error_line(capsys)
    assert "--out" in line


def test_check_out_accepts_new_and_existing_folders_and_creates_nothing(tmp_path):
    assert check_out(tmp_path) == tmp_path
    assert check_out(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert check_out(tmp_path / "a" / "r.json", file=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(XaikitConfigError, match="is a file"):
        check_out(tmp_path / "f" / "g")


# -- inputs and outputs apart -------------------------------------------------------------


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_out_equal_to_or_inside_an_input_folder_is_refused(checkpoint, tmp_path, capsys, where):
    images = _images(tmp_path / "imgs", 2)
    out = images if where == "equal" else images / "explained"
    assert _explain([images], checkpoint, out) == 2
    line = _one_error_line(capsys)
    assert "--out" in line and ("is the input" if where == "equal" else "lies inside") in line
    assert sorted(p.name for p in images.iterdir()) == ["img00.png", "img01.png"]


def test_an_input_named_like_the_runs_own_files_is_renamed(checkpoint, tmp_path, capsys):
    """An image called ``results.json`` (or a folder called ``results.jsonl``) gets its
    outputs in ``out/results.json~2/``: the run's own files keep their names."""
    src = write_image(tmp_path / "x.png", 16, 16, seed=3)
    named = tmp_path / "in" / RESULTS
    named.parent.mkdir()
    named.write_bytes(src.read_bytes())  # a PNG named results.json
    folder = _images(tmp_path / JOURNAL, 1)
    keys = [s.key for s in collect_images([named, folder])]
    assert keys == [f"{RESULTS}~2", f"{JOURNAL}~2/img00.png"]
    out = tmp_path / "out"
    code = _explain([named, folder], checkpoint, out)
    results = json.loads((out / RESULTS).read_text())  # still the run's results file
    assert (out / JOURNAL).is_file()
    assert code == 0 and [image["output_dir"] for image in results["images"]] == keys
    assert (out / f"{RESULTS}~2").is_dir()
    assert "Traceback" not in capsys.readouterr().err
