"""``xaikit serve``'s API: the values it returns are those of the library's own calls."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import make_client, run_job, shapes_png, wait
from PIL import Image

import xaikit
from xaikit.data import load
from xaikit.explain.temporal import explain_sequence
from xaikit.filters import activations, exemplars, lstm_states, maximize
from xaikit.serve.cache import LRUCache
from xaikit.serve.jobs import CANCELLED, DONE, JobRunner
from xaikit.zoo.checkpoint import load_model, read_card, resolve_checkpoint


def _download(client, key, method, k, kind):
    response = client.get(
        "/api/download", params={"key": key, "kind": kind, "method": method, "k": k}
    )
    assert response.status_code == 200, response.text
    return response


def _npy(client, key, method, k, kind="npy"):
    return np.load(io.BytesIO(_download(client, key, method, k, kind).content))


def _item(model_name, index, n=16):
    """The item the server shows: the model card's data set, test split, seed 0."""
    card = read_card(resolve_checkpoint(model_name))
    options = {**card["data"]["options"], "n": n, "seed": 0}
    return load(card["data"]["name"], "test", **options)[index]


def test_models_and_card(client):
    listed = client.get("/api/models").json()
    ids = [m["id"] for m in listed["models"]]
    assert {"shapes-multiclass", "shapes-multilabel", "recall-lstm"} <= set(ids)
    assert "gradcam" in [m["name"] for m in listed["methods"]]
    assert listed["temporal_methods"] == ["inputxgrad", "ig", "occlusion"]
    card = client.get("/api/card", params={"model": "shapes-multiclass"}).json()
    disk = read_card(resolve_checkpoint("shapes-multiclass"))
    assert card["class_names"] == disk["class_names"]
    assert card["task"] == "multiclass" and card["kind"] == "image"
    assert card["metrics"]["test_accuracy"] == disk["metrics"]["test_accuracy"]
    assert card["default_layer"] == "features.block4"
    rows = {row["name"]: row for row in card["layers"]}
    assert rows["features.block2"]["shape"] == [1, 32, 16, 16]
    assert rows["features.block4"]["default"] and rows["head.fc"]["layout"] is None
    assert card["data"] == {"name": "shapes", "items": 16, "error": None}


def test_two_methods_on_an_upload_match_explain(client, tmp_path):
    data = shapes_png()
    uploaded = client.post("/api/upload", files={"file": ("a.png", data, "image/png")}).json()
    assert uploaded["width"] == 64 and uploaded["height"] == 64
    payload = {
        "model": "shapes-multiclass",
        "upload": uploaded["image"],
        "methods": ["gradcam", "saliency"],
    }
    job = run_job(client, "/api/explain", payload)
    result = job["result"]
    assert [m["method"] for m in result["methods"]] == ["gradcam", "saliency"]

    model, card = load_model("shapes-multiclass")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    x = xaikit.data.load_image(path, channels=3, size=(64, 64))[None]
    direct = xaikit.explain(model, x, method=["gradcam", "saliency"], return_result=True)
    logits = model(x).detach()
    for block in result["methods"]:
        expected = direct[block["method"]]
        served = _npy(client, result["key"], block["method"], 0)
        np.testing.assert_allclose(served, expected.maps[0, 0].numpy(), atol=1e-6)
        raw = _npy(client, result["key"], block["method"], 0, "raw")
        np.testing.assert_allclose(raw, expected.raw[0, 0].numpy(), atol=1e-5)
        entry = block["maps"][0]
        assert entry["target"] == int(logits.argmax())
        assert entry["name"] == card["class_names"][entry["target"]]
        assert entry["score"] == pytest.approx(float(logits.max()), abs=1e-4)
        assert entry["probability"] == pytest.approx(float(logits.softmax(1).max()), abs=1e-5)
        assert entry["src"].startswith("data:image/png;base64,")
    assert result["methods"][0]["layer"] == "features.block4"

    # downloads: the figure decodes as a PNG, the JSON holds the request
    figure = Image.open(io.BytesIO(_download(client, result["key"], "gradcam", 0, "png").content))
    figure.load()
    assert figure.format == "PNG" and figure.width >= 256
    saved = _download(client, result["key"], "gradcam", 0, "json").json()
    assert saved["request"]["methods"] == ["gradcam", "saliency"]
    assert saved["request"]["upload"] == uploaded["image"]
    assert "src" not in saved["result"]["methods"][0]["maps"][0]

    # the same request again: a cache hit, no new job run
    before = client.get("/api/stats").json()
    again = client.post("/api/explain", json=payload).json()
    after = client.get("/api/stats").json()
    assert again["status"] == DONE and again["message"] == "cached"
    assert again["result"]["key"] == result["key"]
    assert after["cache"]["hits"] == before["cache"]["hits"] + 1
    assert after["jobs"]["started"] == before["jobs"]["started"]
    assert after["model_loads"]["shapes-multiclass"] == 1  # loaded once


def test_multilabel_positive_labels_one_map_each(client):
    model, card = load_model("shapes-multilabel")
    index = 2
    x = _item("shapes-multilabel", index)[0][None]
    probs = model(x).detach().sigmoid()[0]
    positive = [int(i) for i in (probs >= 0.5).nonzero().flatten()]
    assert len(positive) >= 2  # the test needs an image with several shapes
    job = run_job(
        client,
        "/api/explain",
        {"model": "shapes-multilabel", "item": index, "methods": ["gradcam"], "target": "positive"},
    )
    maps = job["result"]["methods"][0]["maps"]
    assert [m["target"] for m in maps] == positive
    assert [m["name"] for m in maps] == [card["class_names"][i] for i in positive]
    expected = xaikit.explain(model, x, target="positive")
    for k, entry in enumerate(maps):
        assert entry["probability"] == pytest.approx(float(probs[entry["target"]]), abs=1e-5)
        served = _npy(client, job["result"]["key"], "gradcam", k)
        np.testing.assert_allclose(served, expected[0, k].numpy(), atol=1e-6)


def test_top_k_and_class_by_name(client):
    model, card = load_model("shapes-multiclass")
    x = _item("shapes-multiclass", 1)[0][None]
    logits = model(x).detach()[0]
    job = run_job(
        client,
        "/api/explain",
        {"model": "shapes-multiclass", "item": 1, "methods": ["gradcam"], "target": "top:3"},
    )
    assert [m["target"] for m in job["result"]["methods"][0]["maps"]] == logits.topk(
        3
    ).indices.tolist()
    job = run_job(
        client,
        "/api/explain",
        {"model": "shapes-multiclass", "item": 1, "methods": ["gradcam"], "target": "star"},
    )
    entry = job["result"]["methods"][0]["maps"][0]
    assert entry["target"] == card["class_names"].index("star")
    assert entry["score"] == pytest.approx(float(logits[entry["target"]]), abs=1e-4)


def test_recurrent_temporal_map_and_gates(client):
    model, _ = load_model("recall-lstm")
    x = _item("recall-lstm", 0)[0][None]
    job = run_job(
        client,
        "/api/explain",
        {"model": "recall-lstm", "item": 0, "methods": ["inputxgrad", "occlusion"]},
    )
    result = job["result"]
    assert result["kind"] == "sequence"
    predicted = int(model(x).detach().argmax())
    for block in result["methods"]:
        assert block["maps"][0]["target"] == predicted
        served = _npy(client, result["key"], block["method"], 0)
        expected = explain_sequence(model, x, block["method"], torch.tensor([[predicted]]))
        assert served.shape == (100,)
        np.testing.assert_allclose(served, expected[0, 0].detach().numpy(), atol=1e-5)
    states = lstm_states(model, x)
    assert result["states"]["summary"]["forget_gate"] == pytest.approx(
        states.summary["forget_gate"], abs=1e-4
    )
    assert result["states"]["src"].startswith("data:image/png;base64,")


def test_filters_grid_maximize_and_exemplars(client):
    model, _ = load_model("shapes-multiclass")
    x = _item("shapes-multiclass", 0)[0][None]
    job = run_job(
        client,
        "/api/filters",
        {"model": "shapes-multiclass", "item": 0, "layer": "features.block1"},
    )
    result = job["result"]
    assert result["kernels"]["shape"] == [16, 3, 3, 3]
    means = activations(model, x, "features.block1").channel_means("features.block1")
    channels = result["channels"]
    assert len(channels) == 16 == result["total_channels"]
    assert channels[0]["index"] == int(means.argmax())
    for c in channels:
        assert c["mean"] == pytest.approx(float(means[c["index"]]), rel=1e-5, abs=1e-6)

    found = run_job(
        client,
        "/api/maximize",
        {"model": "shapes-multiclass", "layer": "features.block1", "channel": 3, "steps": 4},
    )["result"]
    direct = maximize(model, "features.block1", [3], steps=4, quiet=True)
    assert found["score"] == pytest.approx(float(direct.score[0]), rel=1e-4)
    assert found["src"].startswith("data:image/png;base64,")

    best = run_job(
        client,
        "/api/exemplars",
        {"model": "shapes-multiclass", "layer": "features.block1", "channel": 3, "k": 4},
    )["result"]
    card = read_card(resolve_checkpoint("shapes-multiclass"))
    dataset = load("shapes", "test", **{**card["data"]["options"], "n": 16, "seed": 0})
    expected = exemplars(model, "features.block1", dataset, 4, channels=[3], quiet=True)
    assert [i["index"] for i in best["items"]] == expected.indices[0].tolist()


def test_gallery_predictions(client):
    body = client.get("/api/gallery", params={"model": "shapes-multiclass"}).json()
    items = body["items"]
    assert len(items) == 16
    model, _ = load_model("shapes-multiclass")
    x, y, _mask = _item("shapes-multiclass", 5)
    logits = model(x[None]).detach()
    row = items[5]
    assert row["label"] == [int(y)]
    assert row["predicted"] == [int(logits.argmax())]
    assert row["confidence"] == pytest.approx(float(logits.softmax(1).max()), abs=1e-5)
    loss = float(torch.nn.functional.cross_entropy(logits, y.reshape(1)))
    assert row["loss"] == pytest.approx(loss, rel=1e-4)
    assert all(r["correct"] == (r["label"] == r["predicted"]) for r in items)


def test_a_new_request_for_the_same_view_cancels_the_old():
    with make_client(models=[], shipped=True) as client:
        runner = client.app.state.runner
        release = threading.Event()
        blocker = runner.submit("blocker", "test", lambda ctx: release.wait(30))
        payload = {
            "model": "shapes-multiclass",
            "item": 0,
            "methods": ["gradcam"],
            "view": "tab:explain",
        }
        first = client.post("/api/explain", json=payload).json()
        second = client.post("/api/explain", json={**payload, "methods": ["saliency"]}).json()
        third = client.post("/api/explain", json={**payload, "item": 1}).json()
        cancelled = client.post(f"/api/jobs/{third['job']}/cancel").json()
        release.set()
        assert blocker.wait(30)
        assert wait(client, first)["status"] == CANCELLED
        assert wait(client, second)["status"] == CANCELLED  # superseded by the third
        assert cancelled["status"] == CANCELLED
        assert client.get("/api/stats").json()["jobs"]["cancelled"] == 3


def test_a_running_job_stops_at_its_next_check():
    runner = JobRunner()
    entered, steps = threading.Event(), []

    def work(ctx):
        entered.set()
        for i in range(1000):
            ctx.progress(i / 1000, f"chunk {i}")
            steps.append(i)
            threading.Event().wait(0.005)
        return "finished"

    job = runner.submit("view", "test", work)
    assert entered.wait(10)
    runner.cancel(job.id)
    assert job.wait(10)
    assert job.status == CANCELLED and job.result is None and len(steps) < 1000
    runner.close()


def test_the_job_table_stays_bounded_however_many_views_a_client_names():
    runner = JobRunner(max_jobs=8)
    release, entered = threading.Event(), threading.Event()

    def slow(ctx):
        entered.set()
        release.wait(30)
        return "slow"

    running = runner.submit("long view", "test", slow)
    assert entered.wait(10)
    finished = [runner.finished(f"view {i}", "test", i) for i in range(500)]
    # the running job stays, and does not keep the finished ones after it from going
    assert runner.get(running.id) is running
    assert len(runner._jobs) == 8 and len(runner._current) == 8
    assert [runner.get(job.id) for job in finished[-7:]] == finished[-7:]
    assert runner.get(finished[0].id) is None
    release.set()
    assert running.wait(10) and running.result == "slow"
    runner.finished("view 499", "test", "again")  # a view seen again: still one name
    assert len(runner._current) <= 8 and len(runner._jobs) == 8
    runner.close()


def test_a_cached_job_is_kept_when_every_older_job_is_still_running():
    runner = JobRunner(max_jobs=2)
    release = threading.Event()
    slow = [runner.submit(f"slow {i}", "test", lambda ctx: release.wait(30)) for i in range(2)]
    cached = runner.finished("cached view", "test", 42)
    assert runner.get(cached.id) is cached  # its client polls it next
    assert runner._current["cached view"] == cached.id
    release.set()
    assert all(job.wait(10) for job in slow)
    runner.close()


def test_the_cache_is_bounded_in_count_and_bytes():
    cache = LRUCache(max_items=2, max_bytes=100)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3, 10)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    cache.put("d", 4, 95)  # over the byte bound with anything else: the rest goes
    assert len(cache) == 1 and cache.nbytes == 95
    assert not cache.put("huge", 5, 101) and "huge" not in cache
    assert cache.stats()["evictions"] == 3

    with make_client(models=[], cache_items=1) as client:
        one = run_job(
            client,
            "/api/explain",
            {"model": "shapes-multiclass", "item": 0, "methods": ["gradcam"]},
        )["result"]["key"]
        run_job(
            client,
            "/api/explain",
            {"model": "shapes-multiclass", "item": 1, "methods": ["gradcam"]},
        )
        stats = client.get("/api/stats").json()["cache"]
        assert stats["items"] == 1 and stats["evictions"] == 1
        gone = client.get(
            "/api/download", params={"key": one, "kind": "npy", "method": "gradcam", "k": 0}
        )
        assert gone.status_code == 404 and "no longer cached" in gone.json()["error"]


def test_bad_settings_are_one_line_errors(client):
    bad = client.post(
        "/api/explain", json={"model": "shapes-multiclass", "item": 0, "methods": ["nope"]}
    )
    assert bad.status_code == 400 and "unknown method 'nope'" in bad.json()["error"]
    bad = client.post(
        "/api/explain", json={"model": "shapes-multiclass", "item": 99, "methods": ["gradcam"]}
    )
    assert bad.status_code == 400 and "out of range" in bad.json()["error"]
    job = client.post(
        "/api/explain",
        json={"model": "shapes-multiclass", "item": 0, "methods": ["gradcam"], "layer": "nope"},
    ).json()
    failed = wait(client, job)
    assert failed["status"] == "error" and "nope" in failed["error"]
    assert "\n" not in failed["error"]


# -- the command line -------------------------------------------------------------------


def _parse(*argv):
    import argparse

    from xaikit.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_without_the_serve_extra(monkeypatch, capsys):
    import importlib.util

    from xaikit.cli import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert serve.run(_parse()) == 2
    err = capsys.readouterr().err
    assert err == "xaikit serve needs the serve extra: pip install 'xaikit[serve]'\n"


def test_cli_builds_the_app_it_parsed(monkeypatch, capsys):
    import uvicorn
    from fastapi.testclient import TestClient

    from xaikit.cli import serve

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    args = _parse(
        "--model",
        "shapes-multiclass",
        "--no-reference",
        "--host",
        "0.0.0.0",
        "--port",
        "9100",
        "--allowed-host",
        "box.lan",
        "--device",
        "cpu",
    )
    assert serve.run(args) == 0
    out = capsys.readouterr().out
    token = re.search(r"access token (\S+)", out).group(1)
    assert f"http://127.0.0.1:9100/?token={token}" in out
    assert served["host"] == "0.0.0.0" and served["port"] == 9100
    client = TestClient(served["app"], base_url="http://box.lan:9100")
    assert client.get("/api/models").status_code == 401
    listed = client.get("/api/models", headers={"X-Xaikit-Token": token}).json()
    assert [m["id"] for m in listed["models"]] == ["shapes-multiclass"]

    served.clear()
    assert serve.run(_parse("--port", "9101")) == 0  # loopback: no token
    assert "token" not in capsys.readouterr().out
    loopback = TestClient(served["app"], base_url="http://127.0.0.1:9101")
    assert loopback.get("/api/models").status_code == 200


def test_cli_help_imports_nothing_heavy():
    code = (
        "import argparse, sys\n"
        "from xaikit.cli import serve\n"
        "p = argparse.ArgumentParser(); serve.add_arguments(p); p.format_help()\n"
        "heavy = {'torch', 'numpy', 'fastapi', 'uvicorn', 'PIL', 'matplotlib'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_refuses_a_busy_port_and_a_bad_model(monkeypatch):
    import socket

    import uvicorn

    from xaikit.cli import serve
    from xaikit.errors import XaikitError

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(XaikitError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve.run(_parse("--port", str(port)))
    with pytest.raises(XaikitError):
        serve.run(_parse("--model", "no-such-model-anywhere", "--port", "9102"))


def test_cancelling_a_maximization_mid_run_leaves_the_model_intact(client):
    started = client.post(
        "/api/maximize",
        json={"model": "shapes-multiclass", "layer": "features.block1", "channel": 2, "steps": 500},
    ).json()
    job = started
    while job["progress"] < 0.01 and job["status"] in ("queued", "running"):
        job = client.get(f"/api/jobs/{started['job']}").json()
    client.post(f"/api/jobs/{started['job']}/cancel")
    job = wait(client, started)
    assert job["status"] == CANCELLED and 0 < job["progress"] < 0.5
    model = client.app.state.registry.model("shapes-multiclass").model
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    direct, _ = load_model("shapes-multiclass")
    flags = [p.requires_grad for p in model.parameters()]
    assert flags == [p.requires_grad for p in direct.parameters()]
    x = _item("shapes-multiclass", 0)[0][None]
    np.testing.assert_allclose(model(x).detach(), direct(x).detach(), atol=1e-6)


def test_a_data_set_that_does_not_fit_the_model_is_said_so():
    with make_client(models=[], data="shapes", items=4) as client:
        card = client.get("/api/card", params={"model": "recall-lstm"}).json()
        assert card["data"]["items"] == 0
        assert "shape [3, 64, 64]" in card["data"]["error"] and "[100, 5]" in card["data"]["error"]
        response = client.post(
            "/api/explain", json={"model": "recall-lstm", "item": 0, "methods": ["inputxgrad"]}
        )
        assert response.status_code == 400 and "[100, 5]" in response.json()["error"]
        assert client.get("/api/card", params={"model": "shapes-multiclass"}).json()["data"] == {
            "name": "shapes",
            "items": 4,
            "error": None,
        }


def test_stochastic_methods_are_seeded_so_a_permalink_gives_the_same_map(client, tmp_path):
    data = shapes_png()
    uploaded = client.post("/api/upload", files={"file": ("a.png", data, "image/png")}).json()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    x = xaikit.data.load_image(path, channels=3, size=(64, 64))[None]
    model, _card = load_model("shapes-multiclass")
    served = {}
    for seed in (None, 7):
        payload = {"model": "shapes-multiclass", "upload": uploaded["image"]}
        payload |= {"methods": ["smoothgrad"], **({} if seed is None else {"seed": seed})}
        result = run_job(client, "/api/explain", payload)["result"]
        served[seed] = _npy(client, result["key"], "smoothgrad", 0, "raw")
        direct = xaikit.explain(model, x, method="smoothgrad", seed=seed or 0, return_result=True)
        np.testing.assert_allclose(served[seed], direct.raw[0, 0].numpy(), atol=1e-6)
    assert not np.allclose(served[None], served[7])  # the seed is used, not ignored
    bad = client.post(
        "/api/explain",
        json={"model": "shapes-multiclass", "upload": uploaded["image"], "seed": "x"},
    )
    assert bad.status_code == 400 and "seed must be an int" in bad.json()["error"]


def test_a_download_named_in_any_script_is_an_ascii_file_name(client):
    payload = {"model": "shapes-multiclass", "item": 0, "methods": ["gradcam"]}
    result = run_job(client, "/api/explain", payload)["result"]
    response = client.get(
        "/api/download", params={"key": result["key"], "kind": "json", "method": "日本", "k": 0}
    )
    assert response.status_code == 200, response.text  # was a 500: a non-latin-1 header
    disposition = response.headers["content-disposition"]
    assert disposition.isascii() and "shapes-multiclass-__-0" in disposition
