"""Strict JSON and ordinary file permissions.

Security report round 2: B9 (a float TIFF with NaN pixels put ``NaN`` into ``results.json``,
which no strict parser accepts) and S7 (``xaikit.io`` read the umask by setting it to 0 from
the writer threads; a race left files 0666 and could leave the process umask at 0).
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from reliability_files import INPUT_SHAPE, write_image

import xaikit
from xaikit.cli import main
from xaikit.data.images import load_image, read_image
from xaikit.explain.files import JOURNAL, RESULTS, explain_files
from xaikit.io import atomic_write_bytes, atomic_write_json, dumps_json, finite_json

REPO = Path(__file__).resolve().parents[2]


def strict(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``, like a browser."""

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def nan_tiff(path: Path) -> Path:
    """A 32 x 32 float (mode F) TIFF: NaN on the left, +inf / -inf in two rows, 0.5 elsewhere."""
    values = np.full((32, 32), 0.5, dtype=np.float32)
    values[:, :16] = np.nan
    values[0, 16:], values[1, 16:] = np.inf, -np.inf
    Image.fromarray(values, mode="F").save(path)
    return path


# -- JSON -----------------------------------------------------------------------------------


def test_the_json_writer_writes_null_for_non_finite_floats_and_says_where(tmp_path):
    obj = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": np.float64("nan")}, "e": 2}
    path = tmp_path / "x.json"
    where = atomic_write_json(path, obj)
    assert where == ["$.a", "$.b[0]", "$.b[1]", "$.c.d"]
    assert strict(path.read_text()) == {"a": None, "b": [None, None, 1.5], "c": {"d": None}, "e": 2}
    assert strict(dumps_json(obj)) == strict(path.read_text())
    assert finite_json({"ok": [1.0, "NaN"]}) == ({"ok": [1.0, "NaN"]}, [])


def test_float_images_with_nan_load_finite(tmp_path):
    path = nan_tiff(tmp_path / "n.tif")
    for image in (read_image(path).image, load_image(path, channels=3, size=16)):
        assert torch.isfinite(image).all()
        assert image.min() >= 0 and image.max() <= 1
    image = read_image(path).image[0]
    assert torch.all(image[2:, :16] == 0) and image[0, 20] == 1 and image[1, 20] == 0


def test_a_nan_tiff_through_explain_gives_strict_json(tmp_path, capsys):
    path = nan_tiff(tmp_path / "n.tif")
    out = tmp_path / "out"
    args = ["explain", str(path), "--model", "shapes-multiclass", "--out", str(out), "-q"]
    assert main(args) == 0, capsys.readouterr().err
    results = strict((out / RESULTS).read_text())
    (record,) = results["images"]
    assert all(math.isfinite(t["score"]) for t in record["targets"])
    for line in (out / JOURNAL).read_text().splitlines():
        strict(line)


class _NanScores(torch.nn.Module):
    """A classifier whose every score is NaN (e.g. a checkpoint with NaN weights)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * float("nan")


def test_nan_scores_are_written_as_null_in_results_and_explanation_json(tmp_path, model):
    folder = tmp_path / "imgs"
    write_image(folder / "a.png", 16, 16)
    summary = explain_files(
        _NanScores(model), [folder], tmp_path / "out", input_shape=INPUT_SHAPE, quiet=True
    )
    assert summary.explained == 1
    results = strict(summary.results.read_text())
    (target,) = results["images"][0]["targets"]
    assert target["score"] is None and target["probability"] is None
    for line in (tmp_path / "out" / JOURNAL).read_text().splitlines():
        strict(line)
    res = xaikit.explain.explain(model, torch.rand(1, 3, 16, 16), return_result=True)
    res.options["eps"] = math.nan
    res.save(tmp_path / "saved")
    assert strict((tmp_path / "saved" / "explanation.json").read_text())["options"]["eps"] is None


# -- permissions ----------------------------------------------------------------------------


def _modes(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_no_umask_call_while_explaining_and_files_follow_the_umask(tmp_path, model, monkeypatch):
    real_umask = os.umask

    def refuse(mask: int) -> int:
        raise AssertionError("xaikit called os.umask")

    folder = tmp_path / "imgs"
    for i in range(6):
        write_image(folder / f"{i}.png", 16, 16, seed=i)
    previous = real_umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", refuse)
        out = tmp_path / "out"
        summary = explain_files(
            model,
            [folder],
            out,
            method=["gradcam", "saliency"],
            input_shape=INPUT_SHAPE,
            batch_size=2,
            workers=4,
            quiet=True,
        )
        xaikit.save_model(model, out / "ckpt" / "m", input_shape=INPUT_SHAPE)
        atomic_write_json(out / "x.json", {"a": 1})
        monkeypatch.undo()
    finally:
        real_umask(previous)
    assert summary.explained == 6
    modes = _modes(out)
    assert len(modes) > 40
    assert set(modes.values()) == {0o640}, modes


#: Run in a child whose umask is 0o077: ``xaikit explain``'s pipeline with 4 writer threads,
#: then 4 threads of atomic writes under a 1 us thread switch interval (the report's race).
_CHILD = textwrap.dedent(
    """
    import os, sys, threading
    os.umask(0o077)
    sys.setswitchinterval(1e-6)
    import xaikit
    from xaikit.explain.files import explain_files
    from xaikit.io import atomic_write_bytes

    model, card = xaikit.load_model(sys.argv[1])
    summary = explain_files(
        model, [sys.argv[2]], sys.argv[3], method=["gradcam", "saliency"],
        input_shape=card["input_shape"], class_names=card.get("class_names"),
        batch_size=2, workers=4, quiet=True,
    )
    assert summary.explained == 8, summary

    def write(k):
        for i in range(300):
            atomic_write_bytes(os.path.join(sys.argv[3], "stress", f"{k}-{i}"), b"x")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(oct(os.umask(0o077)))  # the process umask is still the one it started with
    """
)


def test_files_written_by_writer_threads_under_umask_077_are_0600(tmp_path, checkpoint):
    folder = tmp_path / "imgs"
    for i in range(8):
        write_image(folder / f"{i}.png", 16, 16, seed=i)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(checkpoint), str(folder), str(out)],
        cwd=tmp_path,
        env={**env, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0o77"
    modes = _modes(out)
    assert len(modes) > 1200
    assert set(modes.values()) == {0o600}, {k: oct(v) for k, v in modes.items() if v != 0o600}
    dirs = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_dir()}
    assert dirs == {0o700}


def test_an_ordinary_umask_gives_ordinary_modes(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary left behind
