"""The page in a real browser: a permalink opens with its maps, scores and downloads drawn.

uvicorn serves the app on a free loopback port in a thread; headless Chromium loads the
permalink with ``--dump-dom`` (the DOM after the page's scripts ran, the server's jobs
included: fetches hold the virtual clock). Skipped only when no Chromium is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest
import torch

from xaikit.data import load
from xaikit.zoo.checkpoint import load_model, read_card, resolve_checkpoint

uvicorn = pytest.importorskip("uvicorn")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    return None


#: headless Chromium without a GPU, a sandbox or any network of its own
HEADLESS = (
    "--headless=new",
    "--disable-gpu",
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _dump(browser: str, url: str, profile) -> str:
    command = [
        browser,
        *HEADLESS,
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


class _DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: commands in on fd 3, answers out on fd 4, each a JSON
    message ended by a NUL byte), to do what ``--dump-dom`` cannot: pick a file in the
    page's file input, then read the DOM the page made of it. Standard library only."""

    def __init__(self, browser: str, profile) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        command = [
            browser,
            *HEADLESS,
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # the shell puts the pipes on fds 3 and 4, where Chromium reads and writes them
        shell = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self.process = subprocess.Popen(
            ["bash", "-c", shell, "chromium", *command],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.session = None

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "no answer from Chromium over the DevTools pipe"
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                assert chunk, "Chromium closed the DevTools pipe"
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, timeout: float = 30.0, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode("utf-8") + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, answer["error"]
                return answer.get("result", {})

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def until(self, expression: str, timeout: float = 60.0):
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.05)

    def close(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_a_non_image_upload_shows_one_clear_message_and_no_map(server_url, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on this machine (chromium, google-chrome); the page is untested")
    fake = tmp_path / "photo.png"
    fake.write_text("these are my holiday notes, not a photo\n" * 20)
    chrome = _DevTools(browser, tmp_path / "profile")
    try:
        # a view with maps first: the refused upload must not leave them standing
        chrome.open(server_url + "#model=shapes-multiclass&item=3&methods=gradcam")
        chrome.until("document.body.dataset.state === 'done'")
        assert chrome.evaluate("document.querySelectorAll('img.heat').length") == 1

        # pick the file in the page's own file input, as a user does
        chrome.send("DOM.enable")
        chrome.send("DOM.getDocument")
        node = chrome.send("Runtime.evaluate", expression="document.getElementById('upload')")[
            "result"
        ]["objectId"]
        chrome.send("DOM.setFileInputFiles", files=[str(fake)], objectId=node)
        chrome.until("document.body.dataset.state === 'error'")
        dom = chrome.evaluate("document.documentElement.outerHTML")
        text = chrome.evaluate("document.body.innerText")
    finally:
        chrome.close()

    expected = "the upload is not an image file that can be read"
    # exactly one message on the page, in the status line, one line naming the reason
    shown = re.findall(r'<([a-z]+)[^>]*class="bad[^"]*"[^>]*>([^<]*)<', dom)
    assert len(shown) == 1, shown
    tag, message = shown[0]
    assert tag == "span"
    assert re.search(r'<span id="status"[^>]*class="bad"', dom), dom[:2000]
    assert message.startswith(expected), message
    assert "\n" not in message and "xaikit-serve-" not in message and "Traceback" not in message
    assert text.count(expected) == 1
    # and no map: neither the old one nor one of the refused file
    assert '<img class="heat"' not in dom and 'class="heat"' not in dom
    assert 'data-state="error"' in dom
