"""Speed of ``xaikit serve``: one Grad-CAM view through a real server, and its overhead.

A real ``xaikit serve`` process (uvicorn on 127.0.0.1, a free port) is started for each
round and talked to over HTTP as the page does (``POST /api/explain``, then a long poll of
``GET /api/jobs/ID?wait=5`` until done). On the reference model ``shapes-multiclass``:

* **cold**: the first explain request after the server started (the model loads lazily,
  so this includes loading it), end to end;
* **warm**: a request for another input once the model is loaded (computed, not cached);
* **cached**: the same request again (the result cache answers);
* **throughput**: 20 distinct requests (20 data set items, each with its own target, so
  the cache never answers) sent at once from 20 threads, against calling
  :func:`xaikit.explain` directly (in this process, one call per input) for the same 20
  inputs. Server overhead = (server time - direct time) / direct time; goal <= 20 %.
  Two more figures say where the difference goes: the direct calls plus the PNG data URIs
  the server draws for each view (:mod:`xaikit.serve.views`), and the same 20 requests
  sent again, all answered by the cache (the HTTP / JSON / job floor).

Every figure is a median over ``--rounds`` rounds (a fresh server per round); the direct
calls are timed in each round before its server starts (median of 5 repeats). The server and
the direct calls run with the same number of torch threads (``--threads``, default 1).

    python benchmarks/bench_serve.py              # 3 rounds
    python benchmarks/bench_serve.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

MODEL = "shapes-multiclass"
ITEMS = 32
N_CONCURRENT = 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def explain_over_http(base: str, payload: dict) -> dict:
    """One view as the page gets it: start the job, long-poll until done; the job."""
    job = _request(base + "api/explain", payload)
    while job["status"] in ("queued", "running"):
        job = _request(f"{base}api/jobs/{job['job']}?wait=5")
    if job["status"] != "done":
        raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
    return job


class Server:
    """``xaikit serve`` in its own process on a free loopback port."""

    def __init__(self, threads: int) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        command = [sys.executable, "-m", "xaikit", "serve", "--port", str(self.port)]
        command += ["--items", str(ITEMS), "--device", "cpu"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"xaikit serve exited: {self.process.stderr.read()[-2000:]}")
            try:
                _request(self.base + "api/models")  # lists models; loads none
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def direct_inputs():
    """The 20 inputs and targets of the throughput case, as the server prepares them."""
    import torch

    from xaikit.data import load
    from xaikit.zoo.checkpoint import read_card, resolve_checkpoint

    card = read_card(resolve_checkpoint(MODEL))
    dataset = load(
        card["data"]["name"], "test", **{**card["data"]["options"], "n": ITEMS, "seed": 0}
    )
    classes = len(card["class_names"])
    return [(torch.as_tensor(dataset[i][0])[None], i % classes) for i in range(N_CONCURRENT)]


def one_round(model, inputs, threads: int, repeats: int = 5) -> dict[str, float]:
    import xaikit
    from xaikit.serve import views

    def direct_all(render: bool):
        for x, target in inputs:
            res = xaikit.explain(
                model, x, method="gradcam", target=target, return_result=True, quiet=True
            )
            if render:  # what the server adds per view: the map and input pictures
                views.pixels_uri(views.heatmap_pixels(res.maps[0, 0].numpy(), "jet"))
                views.pixels_uri(views.input_pixels(x[0], "image"))

    # direct calls first, with no server process running (the machine's cores are shared)
    xaikit.explain(model, inputs[0][0], method="gradcam", quiet=True)  # warm-up
    direct = statistics.median(_timed(lambda: direct_all(False))[0] for _ in range(repeats))
    rendered = statistics.median(_timed(lambda: direct_all(True))[0] for _ in range(repeats))

    server = Server(threads)
    try:
        base = server.base
        first = {"model": MODEL, "item": 0, "methods": ["gradcam"]}
        cold, _ = _timed(lambda: explain_over_http(base, first))
        cached, job = _timed(lambda: explain_over_http(base, first))
        assert job["message"] == "cached", job
        warm, job = _timed(lambda: explain_over_http(base, dict(first, item=1)))
        assert job["message"] != "cached", job

        # 20 distinct views at once (items 0..19 with target i % 6: none cached before)
        payloads = [
            {
                "model": MODEL,
                "item": i,
                "methods": ["gradcam"],
                "target": str(target),
                "view": f"bench-{i}",  # one view per request (a view's new job cancels its old)
            }
            for i, (_x, target) in enumerate(inputs)
        ]
        with ThreadPoolExecutor(len(payloads)) as pool:
            server_s, jobs = _timed(
                lambda: list(pool.map(lambda p: explain_over_http(base, p), payloads))
            )
        assert all(j["message"] != "cached" for j in jobs)
        # the same 20 again: all cached, so what is left is HTTP, JSON and the job runner
        with ThreadPoolExecutor(len(payloads)) as pool:
            floor_s, jobs = _timed(
                lambda: list(pool.map(lambda p: explain_over_http(base, p), payloads))
            )
        assert all(j["message"] == "cached" for j in jobs)
    finally:
        server.close()
    return {
        "cold": cold,
        "warm": warm,
        "cached": cached,
        "server": server_s,
        "direct": direct,
        "direct+png": rendered,
        "cached20": floor_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the server and of the direct calls alike (default 1: the "
        "steadiest figures on a shared machine)",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from xaikit.zoo.checkpoint import load_model

    model, _ = load_model(MODEL)
    inputs = direct_inputs()
    rounds = []
    for r in range(args.rounds):
        rounds.append(one_round(model, inputs, args.threads))
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in rounds[-1].items())
        )
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    overheads = [(r["server"] - r["direct"]) / r["direct"] for r in rounds]
    overhead = statistics.median(overheads)
    print()
    print(
        f"xaikit serve, {MODEL}, Grad-CAM, CPU ({torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} cores), median of {args.rounds} rounds"
    )
    print(f"  cold  (first request after start, model load included): {med['cold'] * 1000:8.1f} ms")
    print(f"  warm  (model loaded, new input, not cached):            {med['warm'] * 1000:8.1f} ms")
    print(
        f"  cached (the same request again):                        {med['cached'] * 1000:8.1f} ms"
    )
    print(
        f"  {N_CONCURRENT} concurrent distinct requests through the server: "
        f"{med['server'] * 1000:8.1f} ms ({N_CONCURRENT / med['server']:.1f} views/s)"
    )
    print(
        f"  {N_CONCURRENT} direct xaikit.explain calls, same inputs:        "
        f"{med['direct'] * 1000:8.1f} ms ({N_CONCURRENT / med['direct']:.1f} views/s)"
    )
    print(
        f"  {N_CONCURRENT} direct calls + the PNG data URIs the server draws: "
        f"{med['direct+png'] * 1000:8.1f} ms"
    )
    print(
        f"  the same {N_CONCURRENT} again, all cached (HTTP + JSON floor):      "
        f"{med['cached20'] * 1000:8.1f} ms"
    )
    verdict = "meets" if overhead <= 0.20 else "misses"
    print(
        f"  server overhead (server - direct) / direct: {overhead * 100:.1f} % "
        f"({verdict} the goal <= 20 %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
