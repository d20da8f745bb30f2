"""Shared pieces of the ``xaikit serve`` tests: an app on the small reference models, a
client that talks to it as the browser would (Host 127.0.0.1:PORT), PNG files, job polling."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient

from xaikit.serve import create_app

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"


def png_of(pixels: np.ndarray) -> bytes:
    """uint8 ``(H, W, 3)`` pixels as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def shapes_png(index: int = 0, seed: int = 3) -> bytes:
    """A test image of the shapes data set (what the reference models were trained on)."""
    from xaikit.data import load

    item = load("shapes", "test", n=index + 1, seed=seed)[index][0]
    return png_of((item.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def wait(client: TestClient, started: dict, timeout: float = 60.0) -> dict:
    """Poll a job until it finished; its last status."""
    assert "job" in started, started
    deadline = time.monotonic() + timeout
    job = started
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
        job = client.get(f"/api/jobs/{started['job']}", params={"wait": 1}).json()
    return job


def run_job(client: TestClient, path: str, payload: dict) -> dict:
    """POST a job and wait for it: the finished job (asserted done)."""
    response = client.post(path, json=payload)
    assert response.status_code == 200, response.text
    job = wait(client, response.json())
    assert job["status"] == "done", job
    return job


def make_client(**options) -> TestClient:
    options.setdefault("port", PORT)
    options.setdefault("items", 16)
    return TestClient(create_app(**options), base_url=BASE)


@pytest.fixture(scope="module")
def client():
    with make_client(models=[]) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server_url():
    """A real uvicorn server of the app (no models given) on a free loopback port, in a
    thread: its URL. For the browser tests."""
    uvicorn = pytest.importorskip("uvicorn")
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
