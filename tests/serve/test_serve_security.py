"""``xaikit serve`` is safe by default: Host check, token, fixed models, no files, limits."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from conftest import PORT, make_client, png_of

from xaikit.serve.security import allowed_hosts, check_token, host_allowed, token_required
from xaikit.zoo.checkpoint import resolve_checkpoint

TOKEN = "t0k3n-for-tests"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (and holds almost nothing)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 16)
    body += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return b"\x89PNG\r\n\x1a\n" + body


def test_a_foreign_host_header_is_refused(client):
    assert client.get("/api/models").status_code == 200
    for host in ("evil.example", f"evil.example:{PORT}", "127.0.0.1:9999", "localhost.evil:8765"):
        response = client.get("/api/models", headers={"Host": host})
        assert response.status_code == 400, host
        assert "Host" in response.json()["error"]
    assert client.get("/api/models", headers={"Host": f"localhost:{PORT}"}).status_code == 200
    assert host_allowed(f"[::1]:{PORT}", allowed_hosts("127.0.0.1", PORT))


def test_the_token_is_required_off_loopback():
    assert not token_required("127.0.0.1") and not token_required("localhost")
    assert token_required("0.0.0.0") and token_required("192.168.1.5")
    assert check_token(None, "x") == 401 and check_token("y", "x") == 403
    assert check_token("x", "x") is None and check_token(None, None) is None
    with make_client(models=[], token=TOKEN, host="0.0.0.0") as client:
        assert client.get("/api/models").status_code == 401
        assert client.get("/").status_code == 401
        assert client.get("/static/app.js").status_code == 401
        assert client.get("/api/models", headers={"X-Xaikit-Token": "wrong"}).status_code == 403
        assert client.get("/api/models", params={"token": TOKEN[:-1]}).status_code == 403
        assert client.get("/api/models", headers={"X-Xaikit-Token": TOKEN}).status_code == 200
        page = client.get("/", params={"token": TOKEN})
        assert page.status_code == 200
        assert f"/static/app.js?token={TOKEN}" in page.text  # the page's own files pass too
        assert client.get("/static/app.js", params={"token": TOKEN}).status_code == 200


def test_only_listed_models(client):
    for model in (
        "nope",
        "../../etc/passwd",
        str(resolve_checkpoint("shapes-multiclass")),
        "simple_cnn",
        "torchvision:resnet18",
    ):
        response = client.get("/api/card", params={"model": model})
        assert response.status_code == 404, model
        explain = client.post("/api/explain", json={"model": model, "item": 0})
        assert explain.status_code == 404, model
    with make_client(models=["shapes-multiclass"], shipped=False) as only:
        ids = [m["id"] for m in only.get("/api/models").json()["models"]]
        assert ids == ["shapes-multiclass"]
        assert only.get("/api/card", params={"model": "recall-lstm"}).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/app.js/../../../pyproject.toml",
        "/static/",
        "/static/.",
        "/static/cache.py",
        "/etc/passwd",
        "/api/jobs/..%2f..%2fetc%2fpasswd",
        "/api/download?key=../../etc/passwd&kind=npy",
    ],
)
def test_no_file_outside_the_static_folder(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.status_code)
    assert "root:" not in response.text and "[project]" not in response.text


def test_the_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "fetch(" in script.text and "http://" not in script.text
    assert "https://" not in script.text and "https://" not in page.text  # no CDN


def test_an_oversized_upload_is_413():
    with make_client(models=[], max_upload_bytes=2000) as client:
        data = png_of(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        assert len(data) > 2000
        response = client.post("/api/upload", files={"file": ("big.png", data, "image/png")})
        assert response.status_code == 413
        assert "larger than the limit of 2,000 bytes" in response.json()["error"]


def test_too_many_pixels_and_non_images_are_400(client):
    bomb = _png_header_only(8_000, 8_000)
    response = client.post("/api/upload", files={"file": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "refused before decoding" in error and "8000x8000" in error
    assert "xaikit-serve-" not in error and error.startswith("the upload is refused")
    for data in (b"hello, this is not an image\n" * 10, b"%!PS-Adobe-3.0 EPSF-3.0\n"):
        response = client.post("/api/upload", files={"file": ("photo.png", data, "image/png")})
        assert response.status_code == 400
        error = response.json()["error"]
        assert "\n" not in error and "not an image file" in error
    response = client.post("/api/upload", data={"other": "x"}, files={"x": ("a", b"b")})
    assert response.status_code == 400 and "'file'" in response.json()["error"]


def test_other_sites_cannot_start_work(client):
    payload = {"model": "shapes-multiclass", "item": 0, "methods": ["gradcam"]}
    for origin in ("http://evil.example", "http://evil.example:8765", "null", "file://"):
        response = client.post("/api/explain", json=payload, headers={"Origin": origin})
        assert response.status_code == 403, origin
        assert "cross-origin" in response.json()["error"]
    same = client.post("/api/explain", json=payload, headers={"Origin": f"http://127.0.0.1:{PORT}"})
    assert same.status_code == 200
    # a cross-site form can post text/plain without asking: not accepted as JSON
    plain = client.post(
        "/api/explain", content=json.dumps(payload), headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 415


def test_an_oversized_json_body_is_413_before_it_is_read(client):
    from xaikit.serve.app import MAX_JSON_BYTES

    big = b'{"model": "' + b"x" * (MAX_JSON_BYTES + 10) + b'"}'
    response = client.post(
        "/api/explain", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "too large" in response.json()["error"]
