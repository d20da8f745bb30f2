"""What the worker computes for each view, through the library's own API.

* :func:`explain_view`: :func:`xaikit.explain` with every chosen method in one call (image
  and signal models; :func:`explain_views` stacks the inputs of several queued requests of
  the same settings into that one call, the worker's coalescing), or
  :func:`xaikit.explain.temporal.explain_sequence` per method plus
  :func:`xaikit.filters.lstm_states` (recurrent models);
* :func:`filters_view`: :func:`xaikit.filters.weights` and :func:`xaikit.filters.activations`
  of one layer for the current input;
* :func:`maximize_view` / :func:`exemplars_view`: one channel's activation maximization and
  data set exemplars, with progress and cancel through the job context;
* :func:`gallery`: predictions, confidence and loss of the data set items.

Each returns a :class:`ViewResult`: the JSON the page reads and the arrays the downloads
serve. Nothing here is a second implementation of a method.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaikit.errors import XaikitConfigError
from xaikit.serve import views

MAX_TOP_K = 10
MAX_CHANNELS = 64
DEFAULT_STEPS = 32
MAX_STEPS = 512
DEFAULT_CMAP = "jet"


@dataclass
class ViewResult:
    """A computed view: ``public`` (JSON for the page) and ``arrays`` (downloads)."""

    key: str
    public: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        size = len(self.public_json())
        size += sum(int(a.nbytes) for a in self.arrays.values())
        return size + sum(len(b) for b in self.figures.values()) + 4096

    def public_json(self) -> bytes:
        """:attr:`public` as JSON bytes, encoded once (every poll of the job, every cache
        hit answers these bytes)."""
        encoded = self.extra.get("_json")
        if encoded is None:
            encoded = json.dumps(
                self.public, default=str, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode("utf-8")
            self.extra["_json"] = encoded
        return encoded


def view_key(kind: str, *parts: Any) -> str:
    """The cache key of a view: a hash of what its result depends on."""
    text = json.dumps([kind, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


# -- targets ----------------------------------------------------------------------------


def parse_target(text: Any, loaded: Any) -> Any:
    """The page's target text -> what :func:`xaikit.explain` takes, or ``("top", k)``.

    ``predicted``, ``positive``, ``all``; ``top:K``; a class index; a class name.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    text = str(text or "predicted").strip()
    if text in ("predicted", "positive", "all"):
        return text
    if text.startswith("top:"):
        try:
            k = int(text[4:])
        except ValueError:
            raise XaikitConfigError(f"top-k target must be top:K, got {text!r}") from None
        if not 1 <= k <= MAX_TOP_K:
            raise XaikitConfigError(f"top-k must be between 1 and {MAX_TOP_K}, got {k}")
        return ("top", k)
    if text.lstrip("-").isdigit():
        return int(text)
    names = loaded.class_names or []
    if text not in names:
        raise XaikitConfigError(f"unknown class {text!r}; the classes are {', '.join(names)}")
    return text


def _logits(loaded: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return loaded.model(x).float()


def _probabilities(loaded: Any, logits: Any) -> Any:
    from xaikit.zoo.heads import get_task

    return get_task(loaded.model).probabilities(logits)


def _explicit_targets(loaded: Any, target: Any, logits: Any) -> list[int]:
    """Class indices for one input (recurrent models, top-k): the same rules as
    :mod:`xaikit.explain.targets` for the keywords."""
    from xaikit.zoo.heads import get_task

    outputs = int(logits.shape[-1])
    if isinstance(target, tuple):
        k = min(target[1], outputs)
        return [int(i) for i in logits[0].topk(k).indices.tolist()]
    if target == "predicted":
        return [int(logits[0].argmax())]
    if target == "all":
        return list(range(outputs))
    if target == "positive":
        predicted = get_task(loaded.model).predict(logits)
        if predicted.dtype == bool:
            chosen = [int(i) for i in predicted[0].nonzero().flatten().tolist()]
            return chosen or [int(logits[0].argmax())]
        return [int(predicted.reshape(-1)[0])]
    if isinstance(target, str):
        return [(loaded.class_names or []).index(target)]
    if not 0 <= int(target) < outputs:
        raise XaikitConfigError(f"class {target} is out of range (0..{outputs - 1})")
    return [int(target)]


def prediction_summary(
    loaded: Any, logits: Any, top: int = 5, probs: Any = None
) -> list[dict[str, Any]]:
    """The top classes with their logits and probabilities (what the model says)."""
    probs = (_probabilities(loaded, logits) if probs is None else probs)[0]
    order = probs.argsort(descending=True)[: min(top, probs.numel())].tolist()
    return [
        {
            "index": int(i),
            "name": loaded.class_name(int(i)),
            "logit": float(logits[0, i]),
            "probability": float(probs[i]),
        }
        for i in order
    ]


# -- explanations -----------------------------------------------------------------------


def check_methods(loaded: Any, methods: Sequence[str]) -> list[str]:
    """The chosen methods, checked against what this model's input kind accepts."""
    if isinstance(methods, str):
        methods = [part for part in methods.split(",") if part]
    names = [str(m).strip() for m in methods if str(m).strip()]
    if not names:
        raise XaikitConfigError("choose at least one method")
    if loaded.kind == "sequence":
        from xaikit.explain.temporal import TEMPORAL_METHODS

        allowed = list(TEMPORAL_METHODS)
    else:
        from xaikit.explain.engine import method_names

        allowed = list(method_names())
    from xaikit._names import METHOD_ALIASES

    names = [METHOD_ALIASES.get(n, n) for n in names]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise XaikitConfigError(
            f"unknown method {unknown[0]!r} for a {loaded.kind} model; choose from "
            f"{', '.join(allowed)}"
        )
    return list(dict.fromkeys(names))


#: Methods whose per-input maps do not depend on the other inputs of a batch (no noise or
#: sampling seeded by the input's index in the call): the worker may stack queued requests
#: for them into one :func:`xaikit.explain` call (``tests/serve`` holds each to equality).
BATCHABLE_METHODS = frozenset(
    {
        "gradcam",
        "gradcam++",
        "xgradcam",
        "layercam",
        "hirescam",
        "gradcam-elementwise",
        "saliency",
        "inputxgrad",
        "ig",
        "guided-backprop",
        "guided-gradcam",
        "deconvolution",
        "occlusion",
    }
)


def batchable(loaded: Any, settings: Mapping[str, Any]) -> bool:
    """Whether requests with ``settings`` may share one batched :func:`xaikit.explain`."""
    return loaded.kind != "sequence" and all(m in BATCHABLE_METHODS for m in settings["methods"])


def batch_key(loaded: Any, settings: Mapping[str, Any]) -> tuple[Any, ...]:
    """What requests must share to be explained together: model and every setting the maps
    depend on (the colormap only draws, so it may differ)."""
    return (
        "explain",
        loaded.id,
        loaded.hash,
        tuple(settings["methods"]),
        _target_group(settings["target"]),
        settings.get("layer") or "auto",
        settings.get("reshape") or "auto",
        settings.get("score", "logit"),
        settings.get("seed", 0),
    )


def explain_view(
    loaded: Any, prepared: Any, settings: Mapping[str, Any], ctx: Any, key: str
) -> ViewResult:
    """Every chosen method's maps of one input, with scores and probabilities per target."""
    return explain_views(loaded, [prepared], [settings], ctx, [key])[0]


def explain_views(
    loaded: Any,
    prepared: Sequence[Any],
    settings: Sequence[Mapping[str, Any]],
    ctx: Any,
    keys: Sequence[str],
) -> list[ViewResult]:
    """:func:`explain_view` of several inputs by one :func:`xaikit.explain` call (the
    inputs stacked into one batch); ``settings[i]`` is request ``i``'s (they agree on
    :func:`batch_key`; the colormap may differ). One forward pass: the logits of the
    prediction panel are the ones ``explain`` computed (:attr:`Explanation.logits`).
    ``ctx.skip(i)``, when the context has it, says request ``i`` was cancelled meanwhile:
    its pictures are not drawn (``None`` in its place). A constant-map warning of the
    batched call is rebuilt per request from its own rows; after any other warning each
    request is explained again on its own, so that it carries only its own
    warnings (a result is cached under its own key and must not depend on its batch mates)."""
    import torch

    first = settings[0]
    methods = list(first["methods"])
    target = first["target"]
    targets = [s["target"] for s in settings]
    score = first.get("score", "logit")
    x = prepared[0].x if len(prepared) == 1 else torch.cat([p.x for p in prepared])
    with loaded.lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if loaded.kind == "sequence":
            if len(prepared) != 1:
                raise XaikitConfigError("recurrent models are explained one input at a time")
            ctx.progress(0.05, "forward pass")
            logits = _logits(loaded, x)
            per_input = [_sequence_maps(loaded, x, methods, target, logits, score, ctx)]
            extra = {"states": lstm_view(loaded, x)}
        else:
            per_input, logits = _explain_maps(loaded, x, methods, targets, first, ctx)
            extra = {}
    notes = _notes(caught)
    # a batch draws no pictures for a request cancelled meanwhile (one alone has just
    # passed its check: it is drawn)
    skip = getattr(ctx, "skip", None) if len(prepared) > 1 else None
    own_notes = [notes] * len(prepared)
    if notes and len(prepared) > 1:
        own_notes = _notes_per_request(caught, per_input)  # type: ignore[assignment]
    if own_notes is None:
        # the batched call warned of more than constant maps: a warning may concern only
        # some of its inputs (no targets), and a result is cached under its own key, so it
        # must not carry its batch mates' warnings: each request is explained alone
        return [
            None  # type: ignore[misc]
            if skip is not None and skip(i)
            else explain_views(loaded, [prepared[i]], [settings[i]], ctx, [keys[i]])[0]
            for i in range(len(prepared))
        ]
    probs = _probabilities(loaded, logits)
    ctx.progress(0.9, "drawing")
    out: list[ViewResult] = []
    for i, per_method in enumerate(per_input):
        if skip is not None and skip(i):
            out.append(None)  # type: ignore[arg-type]
            continue
        out.append(
            _render(
                loaded,
                prepared[i],
                settings[i],
                per_method,
                logits[i : i + 1],
                probs[i : i + 1],
                own_notes[i],
                extra,
                keys[i],
            )
        )
    return out


def _notes(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    return _notes_text([str(w.message) for w in caught])


def _notes_per_request(
    caught: Sequence[warnings.WarningMessage], per_input: Sequence[Mapping[str, Any]]
) -> list[list[str]] | None:
    """Each request's own warnings when the batched call warned only of constant maps (the
    usual case): rebuilt from the request's rows with the engine's own message, as its
    call alone would have said it. ``None`` for any other warning: it may concern some
    inputs only, so each request is explained again on its own."""
    from xaikit.explain.engine import DegenerateMapsWarning, degenerate_message

    if not all(isinstance(w.message, DegenerateMapsWarning) for w in caught):
        return None
    layer = caught[0].message.layer  # type: ignore[union-attr]
    out = []
    for per_method in per_input:
        counts = {
            method: (sum(info["degenerate"]), len(info["degenerate"]))
            for method, info in per_method.items()
        }
        constant = any(count for count, _total in counts.values())
        out.append(_notes_text([degenerate_message(counts, layer)]) if constant else [])
    return out


def _notes_text(messages: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(" ".join(str(m).split()) for m in messages))


def _render(
    loaded: Any,
    prepared: Any,
    settings: Mapping[str, Any],
    per_method: Mapping[str, Mapping[str, Any]],
    logits: Any,
    probs: Any,
    notes: list[str],
    extra: Mapping[str, Any],
    key: str,
) -> ViewResult:
    """One request's result: its maps drawn (PNG data URIs), arrays kept for downloads."""
    cmap = settings.get("cmap") or DEFAULT_CMAP
    x = prepared.x
    result = ViewResult(key, {})
    rendered = []
    for method, info in per_method.items():
        maps = []
        for k, target_index in enumerate(info["targets"]):
            heat = info["maps"][k]
            result.arrays[f"{method}/{k}/map"] = heat.astype(np.float32)
            result.arrays[f"{method}/{k}/raw"] = info["raw"][k].astype(np.float32)
            probability = info["probabilities"][k] if "probabilities" in info else None
            maps.append(
                {
                    "k": k,
                    "target": target_index,
                    "name": loaded.class_name(target_index),
                    "score": info["scores"][k],
                    "probability": float(
                        probs[0, target_index] if probability is None else probability
                    ),
                    "degenerate": info["degenerate"][k],
                    "src": views.heatmap_uri(heat, cmap),
                    "range": [float(heat.min()), float(heat.max())],
                }
            )
        rendered.append(
            {
                "method": method,
                "layer": info.get("layer"),
                "layout": info.get("layout"),
                "maps": maps,
            }
        )
    result.extra["x"] = x[0].detach().cpu()
    result.public = {
        "key": key,
        "model": loaded.id,
        "kind": loaded.kind,
        "input": {
            "src": input_uri(loaded, prepared),
            "shape": list(x.shape[1:]),
            "hash": prepared.hash,
            "source": prepared.source,
            "label": _label_text(loaded, prepared.label),
        },
        "prediction": prediction_summary(loaded, logits, probs=probs),
        "methods": rendered,
        "colorbar": views.colorbar_uri(cmap),
        "cmap": cmap,
        "settings": dict(settings, target=_target_json(settings["target"])),
        "warnings": notes,
        **extra,
    }
    return result


def input_uri(loaded: Any, prepared: Any) -> str:
    """The input as the page draws it under the maps, drawn once per input (by its hash)."""
    uri = prepared.picture or loaded.pictures.get(prepared.hash)
    if uri is None:
        picture = views.input_pixels(prepared.x[0], loaded.kind, loaded.normalization)
        uri = views.pixels_uri(picture, level=0)  # deflate hardly shrinks an input image
        loaded.pictures.put(prepared.hash, uri, len(uri))
    prepared.picture = uri
    return uri


KEYWORD_TARGETS = ("predicted", "positive", "all")


def _target_group(target: Any) -> Any:
    """What requests must share of their targets to be batched: the keyword or top-k, or
    ``"class"`` for an explicit class (each row then gets its own)."""
    if isinstance(target, tuple) or (isinstance(target, str) and target in KEYWORD_TARGETS):
        return _target_json(target)
    return "class"


def _target_json(target: Any) -> Any:
    return f"top:{target[1]}" if isinstance(target, tuple) else target


def _label_text(loaded: Any, label: Any) -> Any:
    if label is None:
        return None
    import torch

    label = torch.as_tensor(label)
    if label.dim() == 0:
        return loaded.class_name(int(label))
    return [loaded.class_name(int(i)) for i in label.nonzero().flatten().tolist()]


class _LogitsTarget:
    """The request's keyword or top-k target as a callable on the logits
    :func:`xaikit.explain` computes: the target, top-k included (``(m, k)`` indices, one row
    per input of the logits it is given). It reads only the logits it gets, so it holds for
    every chunk when the memory budget splits the call (each chunk calls it on its rows)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __call__(self, logits: Any) -> Any:
        if isinstance(self.target, tuple):
            k = min(self.target[1], int(logits.shape[-1]))
            return logits.detach().topk(k, dim=1).indices
        return self.target  # the same keyword for every row (the batch key says so)


def _explain_target(targets: Sequence[Any], class_names: Sequence[str] | None) -> Any:
    """What :func:`xaikit.explain` is given for ``targets`` (one per input): a
    :class:`_LogitsTarget` for a keyword or top-k; explicit classes as they are (one
    request) or as a plain list with one class index per row, which the engine slices per
    chunk when the memory budget splits the call."""
    first = targets[0]
    if isinstance(first, tuple) or (isinstance(first, str) and first in KEYWORD_TARGETS):
        return _LogitsTarget(first)
    if len(targets) == 1:
        return first
    names = list(class_names or [])

    def index(target: Any) -> Any:
        if isinstance(target, str) and target in names:
            return names.index(target)
        return target

    return [index(t) for t in targets]


def _explain_maps(
    loaded: Any,
    x: Any,
    methods: list[str],
    targets: Sequence[Any],
    settings: Mapping[str, Any],
    ctx: Any,
) -> tuple[list[dict[str, dict[str, Any]]], Any]:
    """Maps of every input of ``x`` (one :func:`xaikit.explain` call; ``targets``: one per
    input), and the logits."""
    import xaikit

    ctx.progress(0.1, f"explaining with {', '.join(methods)}")
    target = _explain_target(targets, loaded.class_names)
    results = xaikit.explain(
        loaded.model,
        x,
        method=methods,
        target=target,
        layer=settings.get("layer") or "auto",
        reshape=settings.get("reshape") or "auto",
        score=settings.get("score", "logit"),
        class_names=loaded.class_names,
        seed=settings.get("seed", 0),
        return_result=True,
        quiet=True,
    )
    ctx.check()
    # the prediction panel reads the logits of explain's own forward pass (no second one)
    logits = next(iter(results.values())).logits
    if logits is None:
        logits = _logits(loaded, x)
    logits = logits.float()
    n = int(x.shape[0])
    out: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
    for method, res in results.items():
        valid = res.valid.cpu()
        targets = res.targets.cpu().tolist()
        scores = res.scores.detach().float().cpu().tolist()
        probabilities = res.probabilities.detach().float().cpu().tolist()
        degenerate = res.degenerate.cpu().tolist()
        maps = res.maps.detach().float().cpu().numpy()
        raw = res.raw.detach().float().cpu().numpy()
        for i in range(n):
            keep = [k for k in range(valid.shape[1]) if bool(valid[i, k])]
            out[i][method] = {
                "targets": [int(targets[i][k]) for k in keep],
                "maps": [maps[i, k] for k in keep],
                "raw": [raw[i, k] for k in keep],
                "scores": [float(scores[i][k]) for k in keep],
                "probabilities": [float(probabilities[i][k]) for k in keep],
                "degenerate": [bool(degenerate[i][k]) for k in keep],
                "layer": res.layer,
                "layout": res.layout,
            }
    return out, logits


def _sequence_maps(
    loaded: Any, x: Any, methods: list[str], target: Any, logits: Any, score: str, ctx: Any
) -> dict[str, dict[str, Any]]:
    import torch

    from xaikit.explain.temporal import explain_sequence, normalize_maps

    indices = _explicit_targets(loaded, target, logits)
    tensor = torch.tensor([indices], device=x.device)
    scores_of = _probabilities(loaded, logits) if score == "prob" else logits
    out = {}
    for i, method in enumerate(methods):
        ctx.progress(0.1 + 0.8 * i / len(methods), f"{method} over time")
        raw = explain_sequence(loaded.model, x, method, tensor, score=score, normalize=None)
        maps = normalize_maps(raw, "abs")  # explain_sequence's default normalization
        out[method] = {
            "targets": indices,
            "maps": [maps[0, k].detach().float().cpu().numpy() for k in range(len(indices))],
            "raw": [raw[0, k].detach().float().cpu().numpy() for k in range(len(indices))],
            "scores": [float(scores_of[0, t]) for t in indices],
            "degenerate": [bool(maps[0, k].max() <= 0) for k in range(len(indices))],
            "layer": None,
            "layout": "time steps",
        }
    return out


def lstm_view(loaded: Any, x: Any) -> dict[str, Any]:
    """Gates, cell and hidden states of the model's LSTM for the input (first layer)."""
    from torch import nn

    from xaikit.filters.lstm import lstm_states

    if not any(isinstance(m, nn.LSTM) for m in loaded.model.modules()):
        return {"note": "this recurrent model has no nn.LSTM (gates are LSTM-only)"}
    states = lstm_states(loaded.model, x)
    summary = {name: round(value, 4) for name, value in states.summary.items()}
    return {"src": views.data_uri(views.figure_png(states.figure(0))), "summary": summary}


# -- filters ----------------------------------------------------------------------------


def filter_layers(loaded: Any) -> list[str]:
    """Layers whose channels the filters panel can show (map-shaped outputs)."""
    table = layer_table(loaded)
    return [row["name"] for row in table if row["layout"]]


def layer_table(loaded: Any) -> list[dict[str, Any]]:
    """``xaikit layers`` as JSON: name, type, output shape, layout, default, why not auto."""
    with loaded.lock:
        if "layers" in loaded.memo:
            return loaded.memo["layers"]
        import torch

        from xaikit.explain.layers import choose_layer, explain_choices, trace

        example = torch.rand(1, *loaded.input_shape, generator=torch.Generator().manual_seed(0)).to(
            next(loaded.model.parameters()).device
        )
        rows, output_shape = trace(loaded.model, example)
        default = choose_layer(rows, output_shape, loaded.model)
        outputs = output_shape[-1] if output_shape else None
        table = []
        for row in explain_choices(rows, loaded.model, outputs):
            if row.order < 0:
                continue
            table.append(
                {
                    "name": row.name,
                    "type": row.type,
                    "shape": list(row.output_shape) if row.output_shape else None,
                    "layout": row.layout.describe() if row.layout is not None else None,
                    "parameters": int(row.parameters),
                    "default": row.name == default,
                    "excluded": row.excluded,
                }
            )
        loaded.memo["layers"] = table
        loaded.memo["default_layer"] = default
        return table


def filters_view(loaded: Any, prepared: Any, layer: str, ctx: Any, key: str) -> ViewResult:
    """One layer's kernels (when it holds one convolution) and the input's activations."""
    from xaikit.filters.activations import activations
    from xaikit.filters.weights import weights

    result = ViewResult(key, {})
    if loaded.kind == "sequence":
        with loaded.lock:
            result.public = {"key": key, "layer": None, "states": lstm_view(loaded, prepared.x)}
        return result
    with loaded.lock:
        ctx.progress(0.1, "kernels")
        kernels, note = None, None
        try:
            found = weights(loaded.model, layer)
            kernels = {
                "layer": found.layer,
                "count": int(found.weight.shape[0]),
                "shape": list(found.weight.shape),
                "reduce": found.reduce,
                "src": views.pixels_uri(views.tensor_grid_pixels(found.grid)),
                "ncols": int(found.ncols),
            }
        except XaikitConfigError as err:
            note = " ".join(str(err).split())
        ctx.progress(0.4, "activations")
        maps = activations(loaded.model, prepared.x, layer)
        name = next(iter(maps))
        acts = maps[name][0].detach().float().cpu().numpy()
        means = maps.channel_means(name).cpu().numpy()
    order = np.argsort(-means, kind="stable")[:MAX_CHANNELS]
    pictures = views.channel_pixels(acts[order])
    result.arrays["activations"] = acts.astype(np.float32)
    result.public = {
        "key": key,
        "layer": name,
        "kernels": kernels,
        "kernels_note": note,
        "channels": [
            {"index": int(c), "mean": float(means[c]), "src": views.pixels_uri(p)}
            for c, p in zip(order, pictures)
        ],
        "total_channels": int(acts.shape[0]),
        "shape": list(acts.shape),
    }
    return result


class _Counting:
    """A data set that reports progress (and checks for cancel) as its items are read."""

    def __init__(self, dataset: Any, size: int, ctx: Any) -> None:
        self.dataset, self.size, self.ctx, self.reads = dataset, size, ctx, 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:
        if not 0 <= int(index) < self.size:
            raise IndexError(index)
        self.reads += 1
        if self.reads % 8 == 0:
            self.ctx.progress(min(0.95, 0.05 + 0.9 * self.reads / self.size), "scanning the data")
        return self.dataset[int(index)]


def maximize_view(
    loaded: Any, layer: str, channel: int, steps: int, ctx: Any, key: str
) -> ViewResult:
    """The input that makes ``channel`` of ``layer`` fire most (few steps by default)."""
    from xaikit.explain.layers import resolve_layer
    from xaikit.filters import objectives as obj
    from xaikit.filters.maximize import maximize

    if not 0 <= steps <= MAX_STEPS:
        raise XaikitConfigError(f"steps must be between 0 and {MAX_STEPS}, got {steps}")
    calls = {"n": 0}
    with loaded.lock:
        import torch

        example = torch.zeros(1, *loaded.input_shape, device=next(loaded.model.parameters()).device)
        name = resolve_layer(loaded.model, layer, example)[0]
        inner = obj.channel(name)

        def scored(context: Any) -> Any:
            calls["n"] += 1
            ctx.progress(min(0.99, calls["n"] / (steps + 2)), f"step {calls['n']} of {steps}")
            return inner(context)

        objective = obj.Objective(scored, layers=inner.layers, name=inner.name)
        found = maximize(
            loaded.model,
            name,
            [int(channel)],
            steps=steps,
            objective=objective,
            normalization=loaded.normalization,
            quiet=True,
        )
    images = found.images.detach().float().cpu()
    picture = images[0] if images.dim() == 4 else images[0][:, None, :]
    result = ViewResult(key, {})
    result.arrays["image"] = images[0].numpy()
    result.public = {
        "key": key,
        "layer": name,
        "channel": int(channel),
        "steps": steps,
        "score": float(found.score[0]),
        "gain": float(found.gain[0]),
        "flat": bool(found.flat[0]),
        "src": views.pixels_uri(views.tensor_grid_pixels(picture)),
    }
    return result


def exemplars_view(
    loaded: Any, dataset: Any, size: int, layer: str, channel: int, k: int, ctx: Any, key: str
) -> ViewResult:
    """The ``k`` data set items that activate ``channel`` most, with receptive-field crops."""
    from xaikit.filters.exemplars import exemplars

    if dataset is None:
        raise XaikitConfigError("exemplars need a data set; start the server with --data D")
    counted = _Counting(dataset, size, ctx)
    with loaded.lock:
        found = exemplars(
            loaded.model, layer, counted, min(k, size), channels=[int(channel)], quiet=True
        )
    crops = found.crops[0].detach().float().cpu() if found.crops is not None else None
    items = []
    for j in range(found.indices.shape[1]):
        entry = {"index": int(found.indices[0, j]), "value": float(found.values[0, j])}
        if crops is not None:
            crop = crops[j]
            if loaded.kind == "image":
                entry["src"] = views.pixels_uri(
                    views.input_pixels(crop, "image", getattr(dataset, "normalization", None))
                )
            else:
                entry["src"] = views.pixels_uri(views.input_pixels(crop, loaded.kind))
        items.append(entry)
    result = ViewResult(key, {})
    result.public = {"key": key, "layer": found.layer, "channel": int(channel), "items": items}
    return result


# -- gallery ----------------------------------------------------------------------------


def gallery(loaded: Any, dataset: Any, size: int, batch: int = 32) -> list[dict[str, Any]]:
    """Every item: label, prediction, confidence, loss, correct, thumbnail (computed once)."""
    import torch

    from xaikit.explain.state import model_device
    from xaikit.zoo.heads import get_task

    task = get_task(loaded.model)
    device = model_device(loaded.model)
    rows = []
    with loaded.lock:
        for start in range(0, size, batch):
            items = [dataset[i] for i in range(start, min(size, start + batch))]
            xs = torch.stack([torch.as_tensor(item[0]) for item in items]).to(device)
            ys = torch.stack([torch.as_tensor(item[1]) for item in items]).to(device)
            with torch.no_grad():
                logits = loaded.model(xs).float()
            probs = task.probabilities(logits)
            predicted = task.predict(logits)
            for j, item in enumerate(items):
                y = ys[j]
                if y.dim() == 0:
                    loss = float(task.loss(logits[j : j + 1], y.reshape(1)))
                    label = [int(y)]
                    pred = [int(predicted[j])]
                    confidence = float(probs[j].max())
                else:
                    loss = float(task.loss(logits[j : j + 1], y.reshape(1, -1)))
                    label = [int(i) for i in y.nonzero().flatten().tolist()]
                    pred = [int(i) for i in predicted[j].nonzero().flatten().tolist()]
                    confidence = float(torch.where(predicted[j], probs[j], 1 - probs[j]).min())
                picture = views.input_pixels(item[0], loaded.kind, dataset.normalization)
                rows.append(
                    {
                        "index": start + j,
                        "label": label,
                        "label_names": [loaded.class_name(i) for i in label],
                        "predicted": pred,
                        "predicted_names": [loaded.class_name(i) for i in pred],
                        "confidence": confidence,
                        "loss": loss,
                        "correct": sorted(label) == sorted(pred),
                        "src": views.pixels_uri(picture),
                    }
                )
    return rows
