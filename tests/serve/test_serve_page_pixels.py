"""The page's pixels in a real browser: the maps it draws are ``xaikit.explain``'s maps in the
documented colour mapping, a permalink reloads the same view, and a screenshot of the page.

uvicorn serves the app on a free loopback port in a thread; an image is uploaded through the
API (``POST /api/upload``) and headless Chromium loads permalinks whose hash selects that
upload (``#model=..&upload=SHA&methods=..&target=..&cls=..``, the format ``app.js`` reads
and writes). The map ``<img>`` data URIs of the dumped DOM are decoded and compared with
:func:`xaikit.viz.colormaps.apply_colormap` of ``xaikit.explain(...).maps`` on the same
input (what ``views.heatmap_pixels`` is documented to draw). Skipped only when no Chromium
is installed.

``XAIKIT_WRITE_SCREENSHOT=1`` also copies the page's screenshot to ``docs/images/serve.png``
(quantized to a palette PNG).
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import shapes_png
from PIL import Image
from test_serve_browser import _browser, _dump

import xaikit
from xaikit.viz.colormaps import apply_colormap
from xaikit.zoo.checkpoint import load_model

uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

MODEL = "shapes-multiclass"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "serve.png"
WIDTH, HEIGHT = 1280, 900


@pytest.fixture(scope="module")
def browser():
    found = _browser()
    if found is None:
        pytest.skip("no Chromium on this machine (chromium, google-chrome); the page is untested")
    return found


@pytest.fixture(scope="module")
def uploaded(server_url, tmp_path_factory):
    """An image of the shapes test set, uploaded through the API: (sha, path of the file)."""
    data = shapes_png(index=1, seed=5)
    path = tmp_path_factory.mktemp("upload") / "a.png"
    path.write_bytes(data)
    response = httpx.post(
        server_url + "api/upload", files={"file": ("a.png", data, "image/png")}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["width"] == 64 and body["height"] == 64
    return body["image"], path


@pytest.fixture(scope="module")
def direct(uploaded):
    """``xaikit.explain`` on the uploaded image, outside the server."""
    model, card = load_model(MODEL)
    x = xaikit.data.load_image(uploaded[1], channels=3, size=(64, 64))[None]
    logits = model(x).detach()[0]
    predicted = int(logits.argmax())
    other = int(logits.argsort(descending=True)[1])  # a class that is not the prediction

    def expected(methods: list[str], target) -> list[np.ndarray]:
        results = xaikit.explain(model, x, method=methods, target=target, return_result=True)
        return [
            apply_colormap(results[m].maps[0, 0].detach().float().numpy(), "jet") for m in methods
        ]

    return {
        "class_names": card["class_names"],
        "predicted": predicted,
        "other": other,
        "expected": expected,
    }


def _pngs(pattern: str, dom: str) -> list[np.ndarray]:
    found = re.findall(pattern, dom)
    pictures = []
    for uri in found:
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert image.format == "PNG"
        pictures.append(np.asarray(image.convert("RGB")))
    return pictures


def _heat_maps(dom: str) -> list[np.ndarray]:
    return _pngs(r'<img class="heat" src="(data:image/png;base64,[^"]+)"', dom)


def _page(browser: str, url: str, profile: Path) -> str:
    dom = _dump(browser, url, profile)
    body = re.search(r"<body([^>]*)>", dom)
    assert body and 'data-state="done"' in body.group(1), dom[:3000]
    return dom


def _assert_pixels_equal(served: np.ndarray, expected: np.ndarray) -> None:
    assert served.shape == expected.shape
    diff = np.abs(served.astype(np.int16) - expected.astype(np.int16))
    assert int(diff.max()) <= 1, f"max abs pixel difference {int(diff.max())}"


def test_the_page_draws_explain_maps_in_the_documented_colours(
    browser, server_url, uploaded, direct, tmp_path
):
    sha, path = uploaded
    base = f"{server_url}#model={MODEL}&upload={sha}"

    # one method, the predicted class
    dom = _page(browser, base + "&methods=gradcam", tmp_path / "p1")
    heat = _heat_maps(dom)
    assert len(heat) == 1
    _assert_pixels_equal(heat[0], direct["expected"](["gradcam"], "predicted")[0])
    names = direct["class_names"]
    assert re.findall(r'<span class="target">([^<]+)</span>', dom) == [names[direct["predicted"]]]
    # the input drawn under the map is the uploaded image itself
    (shown,) = _pngs(r'<img class="base" src="(data:image/png;base64,[^"]+)"', dom)
    np.testing.assert_array_equal(shown, np.asarray(Image.open(path).convert("RGB")))

    # two methods
    both = base + "&methods=gradcam,saliency"
    dom = _page(browser, both, tmp_path / "p2")
    heat = _heat_maps(dom)
    assert len(heat) == 2
    for served, expected in zip(
        heat, direct["expected"](["gradcam", "saliency"], "predicted"), strict=True
    ):
        _assert_pixels_equal(served, expected)

    # the same permalink again (a fresh browser profile): the same view, the same pictures
    again = _heat_maps(_page(browser, both, tmp_path / "p3"))
    assert len(again) == 2
    for first, second in zip(heat, again, strict=True):
        np.testing.assert_array_equal(first, second)

    # another target: a class by name (target=class&cls=NAME), and by index
    other = direct["other"]
    expected = direct["expected"](["gradcam", "saliency"], other)
    for cls in (names[other], str(other)):
        dom = _page(browser, both + f"&target=class&cls={cls}", tmp_path / f"p-{cls}")
        assert re.findall(r'<span class="target">([^<]+)</span>', dom) == [names[other]] * 2
        heat = _heat_maps(dom)
        assert len(heat) == 2
        for served, want in zip(heat, expected, strict=True):
            _assert_pixels_equal(served, want)
    # the class map differs from the predicted one (the target reached the server)
    assert not np.array_equal(expected[0], direct["expected"](["gradcam"], "predicted")[0])


def test_a_non_image_upload_is_refused_with_one_line(server_url):
    # The line the page shows for it is this API error: picking the file in the page's own
    # file input is test_serve_browser.py::test_a_non_image_upload_shows_one_clear_message...
    response = httpx.post(
        server_url + "api/upload",
        files={
            "file": ("notes.png", b"these are not the pixels you are looking for", "text/plain")
        },
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("the upload is not an image file that can be read")
    assert "\n" not in error and "xaikit-serve-" not in error


def test_a_screenshot_of_the_page(browser, server_url, tmp_path):
    shot = tmp_path / "serve.png"
    url = server_url + f"#model={MODEL}&item=3&methods=gradcam,gradcam%2B%2B,saliency"
    command = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=15000",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = Image.open(shot)
    assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 16  # not a blank page
    if os.environ.get("XAIKIT_WRITE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        palette = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, kmeans=3, dither=Image.Dither.NONE
        )
        palette.save(DOCS_SCREENSHOT, format="PNG", optimize=True)
