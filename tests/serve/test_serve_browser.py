"""The page in a real browser: a permalink opens with its maps, scores and downloads drawn.

uvicorn serves the app on a free loopback port in a thread; headless Chromium loads the
permalink with ``--dump-dom`` (the DOM after the page's scripts ran, the server's jobs
included: fetches hold the virtual clock). Skipped only when no Chromium is installed.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
import torch

from xaikit.data import load
from xaikit.serve import create_app
from xaikit.zoo.checkpoint import load_model, read_card, resolve_checkpoint

uvicorn = pytest.importorskip("uvicorn")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server_url():
    port = _free_port()
    app = create_app(models=[], host="127.0.0.1", port=port, items=8)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def _dump(browser: str, url: str, profile) -> str:
    command = [
        browser,
        "--headless=new",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_permalink_renders_two_methods_with_scores(server_url, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on this machine (chromium, google-chrome); the page is untested")
    url = server_url + "#model=shapes-multiclass&item=3&methods=gradcam,saliency&opacity=0.7"
    dom = _dump(browser, url, tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom)
    assert body and 'data-state="done"' in body.group(1), dom[:3000]

    heat = re.findall(r'<img class="heat" src="(data:image/png;base64,[^"]+)"[^>]*>', dom)
    assert len(heat) == 2  # one map per method, predicted class
    assert all(
        'style="opacity: 0.7;"' in tag for tag in re.findall(r'<img class="heat"[^>]*>', dom)
    )
    headings = re.findall(r"<h3>([^<]+)</h3>", dom)
    assert headings[:2] == ["gradcam @ features.block4", "saliency"]

    model, _ = load_model("shapes-multiclass")
    card = read_card(resolve_checkpoint("shapes-multiclass"))
    x = load("shapes", "test", **{**card["data"]["options"], "n": 8, "seed": 0})[3][0]
    with torch.no_grad():
        logits = model(x[None])[0]
    predicted = int(logits.argmax())
    targets = re.findall(r'<span class="target">([^<]+)</span>', dom)
    assert targets == [card["class_names"][predicted]] * 2
    scores = re.findall(r'<span class="score"> score ([-0-9.e]+) · p=([0-9.e-]+)</span>', dom)
    assert len(scores) == 2
    for score, probability in scores:
        assert float(score) == pytest.approx(float(logits[predicted]), rel=5e-3)
        assert float(probability) == pytest.approx(float(logits.softmax(0)[predicted]), abs=5e-3)
    downloads = re.findall(r'<a href="(/api/download\?[^"]+)"', dom)
    assert any("kind=npy" in d for d in downloads) and any("kind=png" in d for d in downloads)
    # the gallery lists the data set items, the chosen one marked
    assert len(re.findall(r'<figure class="thumb', dom)) == 8
    assert re.search(r'<figure class="thumb[^"]*chosen"[^>]*data-index="3"', dom)
