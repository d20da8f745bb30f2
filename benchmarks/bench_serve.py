"""Speed of ``xaikit serve``: one Grad-CAM view through a real server, and its overhead.

A real ``xaikit serve`` process (uvicorn on 127.0.0.1, a free port) is started for each
round and talked to over HTTP as the page does (``POST /api/explain`` with ``"wait"``, so a
quick view is answered by that one request, else a long poll of ``GET /api/jobs/ID?wait=5``
until done). On the reference model ``shapes-multiclass`` by default, or any model the
server takes (``--model torchvision:resnet18 --data shapes``: random weights, 224 px):

* **cold**: the first explain request after the server started (the model loads lazily,
  so this includes loading it), end to end;
* **warm**: a request for another input once the model is loaded (computed, not cached);
* **cached**: the same request again (the result cache answers);
* **throughput**: 20 distinct requests (20 data set items, each with its own target, so
  the cache never answers) sent at once from 20 threads. The server's worker coalesces
  queued requests of the same settings into one batched :func:`xaikit.explain` call. Two
  honest baselines, in this process, for the same 20 inputs and targets:

  (a) 20 sequential :func:`xaikit.explain` calls on single images (what a user would do);
  (b) one batched :func:`xaikit.explain` of the 20 images (their targets as a list).

  Overhead = server time / explain time - 1, against each; the goal is <= 20 %. Two more
  figures say where the difference goes: the sequential calls plus the PNG data URIs the
  server draws for each view (:mod:`xaikit.serve.views`), and the same 20 requests sent
  again, all answered by the cache (the HTTP / JSON / job floor). The bench also reports
  how many of the 20 requests the worker computed in coalesced calls.

Every figure is a median over ``--rounds`` rounds (a fresh server per round); within a
round each throughput figure is the median of ``--repeats`` repeats (5). Both baselines are
timed right before each server repeat (the server idles meanwhile); an overhead is the
median, over all repeats of all rounds, of that repeat's server time / baseline time - 1.
The server and the direct calls run with the same number of torch threads (``--threads``,
default 1).

    python benchmarks/bench_serve.py              # 3 rounds, 5 repeats each
    python benchmarks/bench_serve.py --rounds 5 --repeats 9
    python benchmarks/bench_serve.py --model torchvision:resnet18 --data shapes

The overhead is a fixed cost per view (HTTP, JSON, the job, three PNGs), so its share of
the explain time depends on the model: on the 1.5 ms reference model the HTTP floor alone
is most of it; on a model that takes tens of milliseconds per image it is a few percent.
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
    """One view as the page gets it: start the job (``"wait"``: the answer is held until
    it is done, 5 s at most), long-poll until done if it is not; the job."""
    job = _request(base + "api/explain", {"wait": 5, **payload})
    while job["status"] in ("queued", "running"):
        job = _request(f"{base}api/jobs/{job['job']}?wait=5")
    if job["status"] != "done":
        raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
    return job


class Server:
    """``xaikit serve`` in its own process on a free loopback port."""

    def __init__(self, threads: int, model: str, data: str | None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        command = [sys.executable, "-m", "xaikit", "serve", "--port", str(self.port)]
        command += ["--items", str(ITEMS), "--device", "cpu", "--model", model]
        command += ["--data", data] if data else []
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


def direct_inputs(model: str, data: str | None):
    """The model and the 20 inputs and targets of the throughput case, prepared by the
    server's own :class:`~xaikit.serve.models.Registry` (the same weights, seed and pixels)."""
    from xaikit.serve.models import Registry

    registry = Registry([model], data=data, items=ITEMS, shipped=False)
    loaded = registry.model(model)
    classes = len(loaded.class_names or ()) or 1
    inputs = [(registry.prepare(loaded, {"item": i}).x, i % classes) for i in range(N_CONCURRENT)]
    return loaded.model, inputs


def one_round(
    model, inputs, threads: int, spec: str, data: str | None, repeats: int = 5
) -> dict[str, float]:
    """One round: the direct calls (median of ``repeats``), then a fresh server: cold, cached
    and warm requests, and the 20 concurrent requests (median of ``repeats``)."""
    import xaikit
    from xaikit.serve import views

    def direct_all(render: bool):
        for x, target in inputs:
            res = xaikit.explain(
                model, x, method="gradcam", target=target, return_result=True, quiet=True
            )
            if render:  # what the server adds per view: the map and input pictures
                views.heatmap_uri(res.maps[0, 0].numpy(), "jet")
                views.pixels_uri(views.input_pixels(x[0], "image"), level=0)

    import torch

    xaikit.explain(model, inputs[0][0], method="gradcam", quiet=True)  # warm-up

    stacked = torch.cat([x for x, _target in inputs])
    targets = [target for _x, target in inputs]

    def direct_batched():
        xaikit.explain(model, stacked, method="gradcam", target=targets, quiet=True)

    rendered = statistics.median(_timed(lambda: direct_all(True))[0] for _ in range(repeats))

    server = Server(threads, spec, data)
    try:
        base = server.base
        first = {"model": spec, "item": 0, "methods": ["gradcam"]}
        cold, _ = _timed(lambda: explain_over_http(base, first))
        cached, job = _timed(lambda: explain_over_http(base, first))
        assert job["message"] == "cached", job
        warm, job = _timed(lambda: explain_over_http(base, dict(first, item=1)))
        assert job["message"] != "cached", job

        # 20 distinct views at once (items 0..19 with target i % 6: none cached before)
        # 20 distinct views at once, ``repeats`` times: items 0..19 with target i % 6 and a
        # seed per repeat (Grad-CAM ignores it, but it is part of the view's key: nothing
        # is cached, every repeat computes its 20 views)
        server_times, merged, directs, batcheds = [], [], [], []
        for rep in range(repeats):
            # the baselines right before each server repeat (the server idles meanwhile), so
            # a load change on the shared machine hits both sides of a ratio alike
            directs.append(_timed(lambda: direct_all(False))[0])
            batcheds.append(_timed(direct_batched)[0])
            payloads = [
                {
                    "model": spec,
                    "item": i,
                    "methods": ["gradcam"],
                    "target": str(target),
                    "seed": 1 + rep,
                    "view": f"bench-{i}",  # one view per request (a new job cancels the old)
                }
                for i, (_x, target) in enumerate(inputs)
            ]
            before = _request(base + "api/stats")["jobs"]
            with ThreadPoolExecutor(len(payloads)) as pool:
                server_s, jobs = _timed(
                    lambda p=payloads, pool=pool: list(
                        pool.map(lambda q: explain_over_http(base, q), p)
                    )
                )
            assert all(j["message"] != "cached" for j in jobs)
            after = _request(base + "api/stats")["jobs"]
            server_times.append(server_s)
            merged.append(after["coalesced"] - before["coalesced"])
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
        "server": statistics.median(server_times),
        "ratios_a": [srv / d for srv, d in zip(server_times, directs, strict=True)],
        "ratios_b": [srv / b for srv, b in zip(server_times, batcheds, strict=True)],
        "direct": statistics.median(directs),
        "batched": statistics.median(batcheds),
        "direct+png": rendered,
        "cached20": floor_s,
        "coalesced": statistics.median(merged),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="repeats of each throughput figure within a round (median; default 5)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the server and of the direct calls alike (default 1: the "
        "steadiest figures on a shared machine)",
    )
    parser.add_argument(
        "--model", default=MODEL, help=f"the model served and explained (default: {MODEL})"
    )
    parser.add_argument(
        "--data", help="data set of the gallery (default: the model card's; e.g. shapes)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    model, inputs = direct_inputs(args.model, args.data)
    rounds = []
    for r in range(args.rounds):
        rounds.append(one_round(model, inputs, args.threads, args.model, args.data, args.repeats))
        print(
            f"round {r + 1}: "
            + ", ".join(
                f"{k} {v * 1000:.1f} ms" if k != "coalesced" else f"{k} {v}/{N_CONCURRENT}"
                for k, v in rounds[-1].items()
                if not k.startswith("ratios")
            )
        )
    med = {
        key: statistics.median(r[key] for r in rounds)
        for key in rounds[0]
        if not key.startswith("ratios")
    }
    # each server repeat against the baselines timed just before it, then the median
    over_a = statistics.median(q for r in rounds for q in r["ratios_a"]) - 1
    over_b = statistics.median(q for r in rounds for q in r["ratios_b"]) - 1
    print()
    print(
        f"xaikit serve, {args.model}, Grad-CAM, CPU ({torch.get_num_threads()} torch threads, "
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
        f"  (a) {N_CONCURRENT} sequential xaikit.explain calls, one image each: "
        f"{med['direct'] * 1000:8.1f} ms ({N_CONCURRENT / med['direct']:.1f} views/s)"
    )
    print(
        f"  (b) one batched xaikit.explain of the {N_CONCURRENT} images:        "
        f"{med['batched'] * 1000:8.1f} ms ({N_CONCURRENT / med['batched']:.1f} views/s)"
    )
    print(
        f"  requests the worker computed in coalesced calls: {med['coalesced']:.0f} of "
        f"{N_CONCURRENT} (median)"
    )
    print(
        f"  {N_CONCURRENT} direct calls + the PNG data URIs the server draws: "
        f"{med['direct+png'] * 1000:8.1f} ms"
    )
    print(
        f"  the same {N_CONCURRENT} again, all cached (HTTP + JSON floor):      "
        f"{med['cached20'] * 1000:8.1f} ms"
    )
    for label, overhead in (("(a) vs sequential calls", over_a), ("(b) vs one batch", over_b)):
        verdict = "meets" if overhead <= 0.20 else "misses"
        print(
            f"  server overhead {label}: server / explain - 1 = {overhead * 100:+.1f} % "
            f"({verdict} the goal <= 20 %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
