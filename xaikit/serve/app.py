"""The routes of ``xaikit serve``: one page, its three static files, and a JSON API.

=====================================  ===============================================
``GET  /``                             the page (``index.html``)
``GET  /static/{name}``                ``app.js``, ``style.css``, ``index.html`` only
``GET  /api/models``                   model ids, where they come from, method catalogue
``GET  /api/card?model=ID``            model card, layers, methods, targets, data set
``GET  /api/gallery?model=ID``         data set items with prediction, confidence, loss
``POST /api/upload``                   an image (multipart ``file``) -> ``{"image": sha}``
``POST /api/explain``                  maps of one input, several methods -> a job
                                       (every ``POST`` that starts a job takes
                                       ``"wait": S``: answered once done, S <= 5 s)
``POST /api/filters``                  kernels and activations of a layer -> a job
``POST /api/maximize``                 activation maximization of a channel -> a job
``POST /api/exemplars``                data set exemplars of a channel -> a job
``GET  /api/jobs/{id}?wait=S``         status, progress; the result once done
``POST /api/jobs/{id}/cancel``         stop a job
``GET  /api/download?key=..&kind=..``  ``npy`` / ``raw`` (map arrays), ``png`` (figure),
                                       ``json`` (request and result)
``GET  /api/stats``                    cache, jobs and model-load counters
=====================================  ===============================================

Nothing maps a request to a file: the static files are read into memory at start from the
package's own folder, by a fixed list of names, and every result lives in the in-memory
cache. Models are addressed by id only (404 for any other). See :mod:`xaikit.serve.security`
for the token and the Host check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from xaikit.errors import XaikitError
from xaikit.serve import security
from xaikit.serve import work as W
from xaikit.serve.cache import LRUCache
from xaikit.serve.jobs import DONE, Batch, JobCancelled, JobRunner
from xaikit.serve.models import Registry

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_JSON_BYTES = 64 * 1024
MAX_WAIT_S = 5.0


class ApiError(Exception):
    """A request the server refuses: an HTTP status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _static_files() -> dict[str, bytes]:
    return {name: (STATIC_DIR / name).read_bytes() for name in STATIC_TYPES}


def create_app(
    models: Mapping[str, Any] | Sequence[str] | None = None,
    data: str | None = None,
    token: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    allowed_hosts: Sequence[str] = (),
    data_options: Sequence[str] = (),
    items: int = 64,
    shipped: bool = True,
    device: str = "cpu",
    seed: int = 0,
    cache_items: int = 256,
    cache_bytes: int = 256 * 1024 * 1024,
    max_upload_bytes: int = security.MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The ``xaikit serve`` application.

    Args:
        models: model specs (as ``--model`` takes them), or ``{id: loader}`` where a loader
            is ``() -> (model, card)`` or an already loaded ``(model, card)``.
        data: a data set name (``--data``) for the gallery and exemplars; default: each
            model's training data set when it is a built-in one.
        token: the access token every request must carry (``None``: none needed).
        host, port: where the server listens; with ``allowed_hosts``, the accepted ``Host``
            headers (:func:`xaikit.serve.security.allowed_hosts`).
        items: how many data set items the gallery and exemplars use.
        shipped: also offer the shipped reference models.
        seed: the seed of stochastic methods (SmoothGrad, LIME, ...) when a request names
            none, so a permalink gives the same map again.
        cache_items, cache_bytes: bounds of the result cache (LRU).
        max_upload_bytes: the largest upload accepted (413 above).
    """
    registry = Registry(
        models,
        data=data,
        data_options=data_options,
        items=items,
        shipped=shipped,
        device=device,
    )
    cache = LRUCache(cache_items, cache_bytes)
    runner = JobRunner()
    static = _static_files()
    accepted = security.allowed_hosts(host, port, allowed_hosts)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        runner.close()

    app = FastAPI(
        title="xaikit serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.registry = registry
    app.state.cache = cache
    app.state.runner = runner
    app.state.token = token
    app.state.accepted_hosts = accepted
    app.state.max_upload_bytes = max_upload_bytes

    app.add_middleware(_Guard, accepted=accepted, token=token)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError) -> Response:
        return _error(err.status, err.message)

    @app.exception_handler(XaikitError)
    async def _xaikit_error(_request: Request, err: XaikitError) -> Response:
        return _error(400, str(err))

    # -- the page ---------------------------------------------------------------------

    def _page() -> Response:
        text = static["index.html"].decode("utf-8")
        if token is not None:  # the page's own files need the token too
            for name in ("app.js", "style.css"):
                text = text.replace(f"/static/{name}", f"/static/{name}?token={token}")
        return HTMLResponse(text)

    @app.get("/")
    def index() -> Response:
        return _page()

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in STATIC_TYPES:
            raise ApiError(404, "not found")
        if name == "index.html":
            return _page()
        return Response(static[name], media_type=STATIC_TYPES[name])

    # -- models -----------------------------------------------------------------------

    def _model(model_id: Any) -> Any:
        try:
            entry = registry.entry(str(model_id) if model_id is not None else "")
        except KeyError:
            raise ApiError(404, f"unknown model {str(model_id)[:80]!r}") from None
        return entry.get()

    @app.get("/api/models")
    def list_models() -> Any:
        from xaikit.explain.catalogue import method_catalogue
        from xaikit.explain.temporal import TEMPORAL_METHODS

        return {
            "models": [
                {"id": e.id, "origin": e.origin, "loaded": e.loaded}
                for e in registry.entries.values()
            ],
            "methods": [
                {
                    "name": m.name,
                    "family": m.family,
                    "paper": m.paper,
                    "uses_layer": m.uses_layer,
                }
                for m in method_catalogue()
            ],
            "temporal_methods": list(TEMPORAL_METHODS),
            "data": registry.data,
            "token_required": token is not None,
        }

    @app.get("/api/card")
    def card(model: str | None = None) -> Any:
        loaded = _model(model)
        table = W.layer_table(loaded)
        c = loaded.card
        try:
            count = registry.item_count(loaded)
            data_error = None
        except XaikitError as err:
            count, data_error = 0, _one_line(str(err))
        parameters = sum(int(p.numel()) for p in loaded.model.parameters())
        return {
            "id": loaded.id,
            "origin": loaded.origin,
            "architecture": c.get("architecture"),
            "task": loaded.task,
            "kind": loaded.kind,
            "recurrent": loaded.recurrent,
            "num_classes": c.get("num_classes"),
            "class_names": loaded.class_names,
            "input_shape": list(loaded.input_shape),
            "normalization": loaded.normalization,
            "metrics": _json_safe(c.get("metrics") or {}),
            "weights": c.get("weights", "trained"),
            "parameters": parameters,
            "hash": loaded.hash,
            "layers": table,
            "default_layer": loaded.memo.get("default_layer"),
            "filter_layers": [r["name"] for r in table if r["layout"]],
            "data": {
                "name": registry.data_name(loaded),
                "items": count,
                "error": data_error,
            },
        }

    @app.get("/api/gallery")
    def gallery(model: str | None = None) -> Any:
        loaded = _model(model)
        dataset = registry.dataset(loaded)
        if dataset is None:
            raise ApiError(404, f"{loaded.id} has no data set; start with --data D")
        with loaded.lock:
            if "gallery" not in loaded.memo:
                loaded.memo["gallery"] = W.gallery(loaded, dataset, registry.item_count(loaded))
        return {
            "model": loaded.id,
            "data": registry.data_name(loaded),
            "class_names": loaded.class_names,
            "items": loaded.memo["gallery"],
        }

    # -- uploads ----------------------------------------------------------------------

    @app.post("/api/upload")
    async def upload(request: Request) -> Any:
        limit = app.state.max_upload_bytes
        too_large = f"the upload is larger than the limit of {limit:,} bytes"
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise ApiError(413, too_large)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit + 64 * 1024:
                raise ApiError(413, too_large)
        data = _multipart_file(request, bytes(body))
        if len(data) > limit:
            raise ApiError(413, too_large)
        if not data:
            raise ApiError(400, "the uploaded file is empty")
        try:
            return await run_in_threadpool(registry.add_upload, data)
        except XaikitError as err:
            raise ApiError(400, _strip_temp_path(_one_line(str(err)))) from None

    # -- jobs -------------------------------------------------------------------------

    async def _json(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "send the request as application/json")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
            raise ApiError(413, "request body too large")  # refused before it is read
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_JSON_BYTES:
                raise ApiError(413, "request body too large")
        try:
            value = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        if not isinstance(value, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return value

    def _seed(value: Any, default: int) -> int:
        if value is None or value == "":
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            raise ApiError(400, f"seed must be an int in [0, 2**31), got {str(value)[:40]!r}")
        return value

    def _source(body: Mapping[str, Any]) -> dict[str, Any]:
        if body.get("upload"):
            return {"upload": str(body["upload"])}
        if body.get("item") is not None and body.get("item") != "":
            return {"item": body["item"]}
        raise ApiError(400, "give an input: upload an image or pick a data set item")

    def _view(body: Mapping[str, Any], default: str) -> str:
        return str(body.get("view") or default)[:80]

    def _start(
        kind: str, view: str, key: str, compute: Any, batch: Batch | None = None
    ) -> dict[str, Any]:
        cached = cache.get(key)
        if cached is not None:
            job = runner.finished(view, kind, cached)
        else:

            def work(ctx: Any) -> Any:
                result = compute(ctx)
                cache.put(key, result, result.nbytes)
                return result

            job = runner.submit(view, kind, work, batch=batch)
        return job

    def explain_batch(loaded: Any, ctx: Any, payloads: list[Any]) -> list[Any]:
        """Queued explain requests of one batch key: one batched ``explain`` call for the
        distinct inputs (a request repeated in the batch is computed once), split per
        request, each result cached under its own key."""
        unique: dict[str, int] = {}
        members: dict[str, list[int]] = {}  # key -> every request of the batch with it
        for i, (_prepared, _settings, key, _request) in enumerate(payloads):
            members.setdefault(key, []).append(i)
            if not ctx.skip(i):
                unique.setdefault(key, i)
        order = list(unique.values())
        if not order:  # every request of the batch was cancelled meanwhile
            raise JobCancelled

        class _Sub:  # the batch context as seen by the distinct requests
            def check(self) -> None:
                ctx.check()

            def progress(self, fraction: float, message: str = "") -> None:
                ctx.progress(fraction, message)

            def skip(self, j: int) -> bool:
                # a key is left undrawn only once every request with it was cancelled: the
                # representative's tab may have moved on while another tab still waits
                key = payloads[order[j]][2]
                return all(ctx.skip(i) for i in members[key])

        results = W.explain_views(
            loaded,
            [payloads[i][0] for i in order],
            [payloads[i][1] for i in order],
            _Sub(),
            [payloads[i][2] for i in order],
        )
        by_key = {}
        for i, result in zip(order, results, strict=True):
            if result is None:
                continue
            result.extra["request"] = payloads[i][3]
            cache.put(payloads[i][2], result, result.nbytes)
            by_key[payloads[i][2]] = result
        return [by_key.get(payload[2]) for payload in payloads]

    async def _answer(start: Any, body: dict[str, Any]) -> Response:
        """Start a job (in a thread: it may load a model) and, with ``"wait": S`` in the
        body (seconds, at most 5), hold the answer until it finished or the time is up: a
        view that computes quickly needs one request, not a second to poll."""
        wait = _wait_s(body.get("wait"))
        job = await run_in_threadpool(start, body)
        await _until_finished(job, wait)
        return _job_json(job)

    @app.post("/api/explain")
    async def explain(request: Request) -> Any:
        return await _answer(start_explain, await _json(request))

    def start_explain(body: dict[str, Any]) -> Any:
        loaded = _model(body.get("model"))
        source = _source(body)
        prepared = registry.prepare(loaded, source)
        settings = {
            "methods": W.check_methods(loaded, body.get("methods") or ["gradcam"]),
            "target": W.parse_target(body.get("target", "predicted"), loaded),
            "layer": str(body.get("layer") or "auto"),
            "reshape": str(body.get("reshape") or "auto"),
            "score": "prob" if body.get("score") == "prob" else "logit",
            "cmap": _cmap(body.get("cmap")),
            "seed": _seed(body.get("seed"), seed),
        }
        key = W.view_key(
            "explain",
            loaded.hash,
            prepared.hash,
            W._target_json(settings["target"]),
            {k: v for k, v in settings.items() if k != "target"},
        )
        request_json = {
            "model": loaded.id,
            **source,
            **settings,
            "target": W._target_json(settings["target"]),
        }

        def compute(ctx: Any) -> Any:
            result = W.explain_view(loaded, prepared, settings, ctx, key)
            result.extra["request"] = request_json
            return result

        if cache.peek(key) is None:
            # the input picture is drawn here, in this request's thread, while the worker
            # computes other views (it takes about 2 ms at 224 px)
            W.input_uri(loaded, prepared)
        batch = None
        if W.batchable(loaded, settings):
            batch = Batch(
                W.batch_key(loaded, settings),
                lambda ctx, payloads: explain_batch(loaded, ctx, payloads),
                (prepared, settings, key, request_json),
            )
        return _start("explain", _view(body, "explain"), key, compute, batch)

    @app.post("/api/filters")
    async def filters(request: Request) -> Any:
        return await _answer(start_filters, await _json(request))

    def start_filters(body: dict[str, Any]) -> Any:
        loaded = _model(body.get("model"))
        prepared = registry.prepare(loaded, _source(body))
        layer = str(body.get("layer") or "auto")
        key = W.view_key("filters", loaded.hash, prepared.hash, layer)
        return _start(
            "filters",
            _view(body, "filters"),
            key,
            lambda ctx: W.filters_view(loaded, prepared, layer, ctx, key),
        )

    @app.post("/api/maximize")
    async def maximize(request: Request) -> Any:
        return await _answer(start_maximize, await _json(request))

    def start_maximize(body: dict[str, Any]) -> Any:
        loaded = _model(body.get("model"))
        layer = str(body.get("layer") or "auto")
        channel = _int(body.get("channel"), "channel")
        steps = _int(body.get("steps", W.DEFAULT_STEPS), "steps")
        key = W.view_key("maximize", loaded.hash, layer, channel, steps)
        return _start(
            "maximize",
            _view(body, "maximize"),
            key,
            lambda ctx: W.maximize_view(loaded, layer, channel, steps, ctx, key),
        )

    @app.post("/api/exemplars")
    async def exemplars(request: Request) -> Any:
        return await _answer(start_exemplars, await _json(request))

    def start_exemplars(body: dict[str, Any]) -> Any:
        loaded = _model(body.get("model"))
        layer = str(body.get("layer") or "auto")
        channel = _int(body.get("channel"), "channel")
        k = max(1, min(32, _int(body.get("k", 8), "k")))
        dataset = registry.dataset(loaded)
        size = registry.item_count(loaded)
        key = W.view_key(
            "exemplars", loaded.hash, registry.data_name(loaded), size, layer, channel, k
        )
        return _start(
            "exemplars",
            _view(body, "exemplars"),
            key,
            lambda ctx: W.exemplars_view(loaded, dataset, size, layer, channel, k, ctx, key),
        )

    @app.get("/api/jobs/{job_id}")
    async def job_status(job_id: str, wait: float = 0.0) -> Any:
        """The job's status; ``wait`` (seconds, at most 5) holds the answer until the job
        finished or the time is up (a long poll: fewer requests, prompt results; no
        thread is held while it waits)."""
        job = runner.get(job_id)
        if job is None:
            raise ApiError(404, "unknown job")
        await _until_finished(job, _wait_s(wait))
        return _job_json(job)

    @app.post("/api/jobs/{job_id}/cancel")
    def job_cancel(job_id: str) -> Any:
        job = runner.cancel(job_id)
        if job is None:
            raise ApiError(404, "unknown job")
        return _job_json(job)

    # -- downloads --------------------------------------------------------------------

    @app.get("/api/download")
    def download(key: str = "", kind: str = "npy", method: str = "", k: int = 0) -> Response:
        result = cache.peek(key) if key else None
        if result is None:
            raise ApiError(404, "that result is no longer cached; compute it again")
        stem = f"{result.public.get('model', 'view')}-{method or 'view'}-{k}"
        # ASCII only: the name goes into a Content-Disposition header (latin-1 on the wire).
        stem = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in stem)
        if kind == "json":
            payload = {
                "request": result.extra.get("request"),
                "result": _strip_images(result.public),
            }
            return _attachment(W.views.json_bytes(payload), f"{stem}.json", "application/json")
        if kind in ("npy", "raw"):
            name = f"{method}/{k}/{'map' if kind == 'npy' else 'raw'}"
            array = result.arrays.get(name)
            if array is None:
                raise ApiError(404, f"no {kind} array for method {method!r}, target {k}")
            suffix = ".npy" if kind == "npy" else ".raw.npy"
            return _attachment(W.views.npy_bytes(array), stem + suffix, "application/octet-stream")
        if kind == "png":
            figure = result.figures.get(f"{method}/{k}")
            if figure is None:
                heat = result.arrays.get(f"{method}/{k}/map")
                if heat is None or "x" not in result.extra:
                    raise ApiError(404, f"no map for method {method!r}, target {k}")
                entry = _map_entry(result.public, method, k)
                title = f"{entry['name']} (p={entry['probability']:.2f}) - {method}"
                loaded = _model(result.public["model"])
                figure = W.views.map_figure(
                    result.extra["x"],
                    heat,
                    kind=loaded.kind,
                    title=title,
                    normalization=loaded.normalization,
                    cmap=result.public.get("cmap", W.DEFAULT_CMAP),
                    alpha=0.5,
                )
                result.figures[f"{method}/{k}"] = figure
            return _attachment(figure, f"{stem}.png", "image/png")
        raise ApiError(400, "kind must be npy, raw, png or json")

    @app.get("/api/stats")
    def stats() -> Any:
        return {
            "cache": cache.stats(),
            "uploads": registry.uploads.stats(),
            "jobs": {
                "started": runner.started,
                "cancelled": runner.cancelled,
                "batches": runner.batches,
                "coalesced": runner.coalesced,
            },
            "model_loads": {e.id: e.loads for e in registry.entries.values() if e.loads},
        }

    return app


# -- helpers ------------------------------------------------------------------------------

SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)


class _Guard:
    """The Host, Origin and token checks of every request, and the security headers of
    every answer: a plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task
    and a stream per request, a large share of a cached view's time)."""

    def __init__(self, app: Any, accepted: Any, token: str | None) -> None:
        self.app = app
        self.accepted = accepted
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import Headers, QueryParams

        headers = Headers(scope=scope)
        refusal = None
        if not security.host_allowed(headers.get("host"), self.accepted):
            refusal = (400, "bad Host header: this server answers only to its own address")
        elif not security.origin_allowed(headers.get("origin"), self.accepted):
            refusal = (403, "cross-origin request refused: use the page this server serves")
        else:
            given = headers.get(security.TOKEN_HEADER)
            if not given and self.token is not None:
                given = QueryParams(scope.get("query_string", b"")).get(security.TOKEN_PARAM)
            refused = security.check_token(given, self.token)
            if refused is not None:
                text = "an access token is required" if refused == 401 else "wrong access token"
                refusal = (refused, f"{text} (the token xaikit serve printed at start)")
        if refusal is not None:
            await _error(*refusal)(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                raw = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in _SECURITY_NAMES
                ]
                raw += [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_SECURITY_NAMES = {name.encode() for name, _value in SECURITY_HEADERS}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status)


def _job_json(job: Any) -> Response:
    """A job's status as the page reads it; once done, with its result (encoded once)."""
    head = json.dumps(job.public(), separators=(",", ":")).encode("utf-8")
    if job.status == DONE and job.result is not None:
        head = head[:-1] + b',"result":' + job.result.public_json() + b"}"
    return Response(head, media_type="application/json")


def _wait_s(value: Any) -> float:
    """A long poll's ``wait`` in seconds, clamped to ``[0, MAX_WAIT_S]``."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"wait must be a number of seconds, got {str(value)[:40]!r}")
    seconds = float(value)
    return min(MAX_WAIT_S, seconds) if seconds > 0 else 0.0


async def _until_finished(job: Any, timeout: float) -> None:
    """Wait (on the event loop, holding no thread) until ``job`` finished, ``timeout``
    seconds at most."""
    if timeout <= 0 or job.finished_event.is_set():
        return
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def wake() -> None:
        if not finished.done():
            finished.set_result(None)

    def notify() -> None:  # on the worker thread
        if not loop.is_closed():
            loop.call_soon_threadsafe(wake)

    job.add_done_callback(notify)
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(finished, timeout)


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} must be an integer") from None


def _cmap(value: Any) -> str:
    from xaikit.viz.colormaps import get_colormap

    name = str(value or W.DEFAULT_CMAP)
    get_colormap(name)  # an unknown name is a one-line XaikitConfigError (400)
    return name


def _map_entry(public: Mapping[str, Any], method: str, k: int) -> dict[str, Any]:
    for block in public.get("methods", []):
        if block["method"] == method:
            for entry in block["maps"]:
                if entry["k"] == k:
                    return entry
    raise ApiError(404, f"no map for method {method!r}, target {k}")


def _strip_images(value: Any) -> Any:
    """The result without its embedded pictures (the JSON download stays small)."""
    if isinstance(value, dict):
        return {k: _strip_images(v) for k, v in value.items() if k != "src" and k != "colorbar"}
    if isinstance(value, list):
        return [_strip_images(v) for v in value]
    return value


def _json_safe(value: Any) -> Any:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _attachment(data: bytes, filename: str, media_type: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _strip_temp_path(text: str) -> str:
    import re

    return re.sub(r"(image file )?'?\S*xaikit-serve-\S*\.upload'?", "the upload", text)


def _multipart_file(request: Request, body: bytes) -> bytes:
    """The ``file`` part of a ``multipart/form-data`` body (already size-checked)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "upload the image as multipart/form-data with a 'file' field")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise ApiError(400, "the multipart body could not be read")
    for part in message.iter_parts():
        disposition = part.get("Content-Disposition", "")
        if 'name="file"' in disposition:
            payload = part.get_payload(decode=True)
            return payload or b""
    raise ApiError(400, "the upload has no 'file' field")
