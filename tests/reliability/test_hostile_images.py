"""Hostile image files: only the documented formats are decoded (by content, whatever the name),
every decoder failure is a :class:`~xaikit.DataError` for that file, and large images cost
bounded memory.

Security report round 2: S1 (a ``.png`` holding PostScript made PIL run Ghostscript), B1 (DDS /
SPIDER files escaped ``DataError`` and ended folder runs), S4 (a 157 KB 7000 x 7000 PNG cost
7.5 GB: overlays were drawn in float64 at the original size).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image, ImageDraw, PngImagePlugin
from reliability_files import noise, truncated, write_image, write_mode_image

from xaikit.data.images import (
    IMAGE_FORMATS,
    _to_array,
    convert_channels,
    load_image,
    read_image,
    read_image_with_preview,
    resize_image,
)
from xaikit.errors import DataError
from xaikit.viz.overlay import MAX_OVERLAY_SIDE, display_pixels

REPO = Path(__file__).resolve().parents[2]
#: The smallest EPS file PIL recognises; loading it would run ``gs`` on it.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
ALLOWED = ", ".join(IMAGE_FORMATS)


def _env() -> dict[str, str]:
    """The environment of a child ``python -m xaikit``: this checkout first, one thread."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@pytest.fixture
def eps_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every use of PIL's EPS plugin (opening a file, or running Ghostscript), recorded.

    The replacements record and raise, so a regression shows in the list even if the raised
    error were turned into a DataError on its way out.
    """
    calls: list[str] = []

    def opened(self: object) -> None:
        calls.append("EpsImageFile._open")
        raise RuntimeError("the EPS plugin was invoked")

    def ghostscript(*args: object, **kwargs: object) -> None:
        calls.append("Ghostscript")
        raise RuntimeError("Ghostscript was invoked")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", opened)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    return calls


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg", "photo.tif", "photo.eps"])
def test_postscript_never_reaches_the_eps_plugin_whatever_its_name(tmp_path, eps_calls, name):
    path = tmp_path / name
    path.write_bytes(EPS)
    for reader in (load_image, read_image):
        with pytest.raises(DataError) as info:
            reader(path)
        message = str(info.value)
        assert str(path) in message and ALLOWED in message
    assert eps_calls == []
    # The patch does catch the plugin: PIL's unrestricted open would have used it.
    with pytest.raises(RuntimeError, match="EPS plugin"):
        Image.open(path)
    assert eps_calls == ["EpsImageFile._open"]


@pytest.mark.parametrize("fmt", ["TGA", "SGI", "PCX", "PPM", "SPIDER", "DDS", "ICO", "QOI"])
def test_formats_outside_the_documented_ones_are_refused_by_content(tmp_path, fmt):
    picture = Image.fromarray(noise(8, 8, 3))
    buffer = io.BytesIO()
    (picture.convert("F") if fmt == "SPIDER" else picture).save(buffer, format=fmt)
    path = tmp_path / "holiday.png"  # the extension passes list_images; the content decides
    path.write_bytes(buffer.getvalue())
    with Image.open(path) as unrestricted:
        assert unrestricted.format == fmt  # PIL alone would decode it
    with pytest.raises(DataError, match="none of the allowed formats") as info:
        load_image(path)
    assert str(path) in str(info.value) and ALLOWED in str(info.value)


def test_allowed_formats_are_told_by_content_not_name(tmp_path):
    jpeg = write_image(tmp_path / "real.jpg")
    misnamed = tmp_path / "misnamed.png"
    misnamed.write_bytes(jpeg.read_bytes())
    torch.testing.assert_close(load_image(misnamed), load_image(jpeg), rtol=0, atol=0)
    # A multi-picture JPEG (cameras, phones) opens as "MPO" through PIL's JPEG opener.
    first = Image.fromarray(noise(12, 10, 3, seed=1))
    first.save(tmp_path / "stereo.jpg", format="MPO", save_all=True, append_images=[first])
    assert load_image(tmp_path / "stereo.jpg").shape == (3, 12, 10)


@pytest.mark.parametrize(
    "error",
    [
        ZeroDivisionError("division by zero"),
        NotImplementedError("Unimplemented pixel format"),  # DDS (report B1)
        AttributeError("'SpiderImageFile' object has no attribute 'stkoffset'"),  # SPIDER
        struct.error("unpack requires a buffer of 4 bytes"),
        RecursionError("maximum recursion depth exceeded"),
        MemoryError(),
        Image.DecompressionBombError("too many pixels"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_decoder_error_becomes_a_data_error_for_that_file(tmp_path, monkeypatch, error):
    path = write_image(tmp_path / "a.png")

    def fail(self: object) -> None:
        raise error

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", fail)
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value)


# -- strip-wise decoding gives the same values ------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "P-transparent", "I;16", "1"])
def test_strip_wise_decoding_equals_decoding_the_whole_image(tmp_path, mode):
    # 600 rows: more than one strip (256 rows), so the crops and their palette / info count.
    path = write_mode_image(tmp_path / "tall.png", mode, size=600)
    with Image.open(path) as img:
        img.load()
        whole = torch.from_numpy(np.ascontiguousarray(_to_array(img).transpose(2, 0, 1)))
    raw = read_image(path)
    assert raw.original_size == (600, 600)
    torch.testing.assert_close(raw.image, whole, rtol=0, atol=0)
    for channels, size in [(3, (64, 48)), (1, (17, 300)), (None, (900, 20))]:
        expected = whole if channels is None else convert_channels(whole, channels)
        expected = resize_image(expected, size)
        got = read_image(path, channels=channels, size=size).image
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_preview_is_bounded_and_the_model_input_unchanged(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(noise(300, 2500, 3, seed=2)).save(path)
    read = read_image_with_preview(path, channels=1, size=(32, 32), preview_side=MAX_OVERLAY_SIDE)
    assert read.original_size == (300, 2500)
    assert tuple(read.preview.shape) == (3, 246, MAX_OVERLAY_SIDE)  # aspect kept
    torch.testing.assert_close(read.image, read_image(path, channels=1, size=32).image)
    assert display_pixels(read.preview).dtype == torch.uint8
    small = read_image_with_preview(write_image(tmp_path / "small.png"), size=8)
    torch.testing.assert_close(small.preview, read_image(tmp_path / "small.png").image)


# -- the command line -----------------------------------------------------------------------


def test_a_folder_with_disguised_postscript_and_a_truncated_png_goes_on(tmp_path):
    folder = tmp_path / "imgs"
    for i in range(3):
        write_image(folder / f"good{i}.png", 40, 40, seed=i)
    (folder / "photo.png").write_bytes(EPS)
    truncated(folder / "cut.png", "PNG")
    # A fake Ghostscript first on PATH: if anything ran `gs`, the marker would appear.
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f'#!/bin/sh\necho "$@" > {marker}\nexit 1\n')
    (bin_dir / "gs").chmod(0o755)
    env = {**_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "xaikit", "explain", str(folder), "--model", "shapes-multiclass"]
    done = subprocess.run(
        [*argv, "--out", str(out), "-q"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr  # the CLI's code for bad input files
    assert "Traceback" not in done.stderr
    assert not marker.exists()
    results = json.loads((out / "results.json").read_text())
    assert [r["output_dir"] for r in results["images"]] == [f"imgs/good{i}.png" for i in range(3)]
    errors = {Path(e["source"]).name: e["error"] for e in results["errors"]}
    assert sorted(errors) == ["cut.png", "photo.png"]
    assert ALLOWED in errors["photo.png"] and "truncated or corrupt" in errors["cut.png"]
    assert results["counts"] == {"images": 3, "errors": 2}


#: Runs ``xaikit explain`` as its own child and prints that child's peak RSS in KiB, so no
#: other subprocess of the test session counts towards the figure.
_PEAK = textwrap.dedent(
    """
    import resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_7000_pixel_png_is_explained_with_bounded_memory(tmp_path):
    picture = Image.new("RGB", (7000, 7000), (128, 128, 128))
    ImageDraw.Draw(picture).ellipse((1500, 1500, 5500, 5500), fill=(230, 40, 40))
    path = tmp_path / "big.png"
    picture.save(path)
    del picture
    assert path.stat().st_size < 1_000_000  # a tiny file: the danger is the decoded size
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xaikit", "explain", str(path), "-m", "shapes-multiclass"]
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *command, "--out", str(out), "-q"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    code, peak_kib = (int(v) for v in done.stdout.split())
    assert code == 0, done.stderr
    # Before the fix: 7.5 GB (float64 overlays at 7000 x 7000). After: ~1.2 GB, of which
    # ~0.65 GB is importing torch and matplotlib.
    assert peak_kib < 1.5 * 1024**2, f"peak RSS {peak_kib / 1024:.0f} MiB"
    (record,) = json.loads((out / "results.json").read_text())["images"]
    assert record["original_size"] == [7000, 7000]
    (entry,) = record["outputs"]["gradcam"]
    with Image.open(out / entry["overlay"]) as overlay_png:
        assert overlay_png.size == (MAX_OVERLAY_SIDE, MAX_OVERLAY_SIDE)
    with Image.open(out / entry["figure"]) as figure_png:
        assert max(figure_png.size) < 1000
