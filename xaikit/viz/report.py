"""One self-contained HTML page about a model: ``build_report(model, data, "report.html")``.

The page holds, in sections with stable ids:

==============  ===========================================================================
``model-card``  architecture, task, classes, input shape, normalization, recipe, seed,
                versions, weights hash
``training``    the training curves stored beside the checkpoint (``<stem>.curves.png`` for
                shipped models, ``curves.png`` in a run folder) and the history table
``metrics``     the card's test metrics, per-class figures and the confusion matrix
``gallery``     heatmaps of several methods side by side per test sample; one row per label
                (name, probability, truth) for multi-label models; temporal heatmaps for
                sequence models
``filters``     first-layer kernels and the filter atlas of one layer (kernel, activation
                maximization, dataset exemplars per channel); opt-in, MACO feature
                visualizations and DFF concepts of that layer
``recurrent``   LSTM gates and cell state over time, temporal heatmaps of a few sequences
``evaluation``  deletion / insertion AUC and pointing games next to random and Gaussian
                baselines (direction arrows), sanity-check badges, figures, raw JSON
==============  ===========================================================================

Every image is an inlined base64 PNG, the CSS and the small script are inline, and nothing
references the network, so the file works offline and can be mailed or archived as is. A
section that does not apply (filters of an LSTM, gates of a CNN) says so instead of vanishing,
and a section that fails on a user-fixable problem shows that one-line reason.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from xaikit._names import REPORT_METHODS as DEFAULT_METHODS
from xaikit._names import REPORT_SEQUENCE_METHODS as SEQUENCE_METHODS
from xaikit._version import __version__
from xaikit.data.images import MAX_PIXELS
from xaikit.data.normalization import denormalize, normalize
from xaikit.data.registry import dataset_info, load
from xaikit.data.sampling import balanced_order, dataset_targets
from xaikit.errors import DataError, XaikitConfigError, XaikitError
from xaikit.explain.engine import check_methods
from xaikit.explain.layers import resolve_layer
from xaikit.explain.state import borrowed, has_recurrent, model_device
from xaikit.explain.temporal import TEMPORAL_METHODS
from xaikit.io import atomic_write_text, read_limited
from xaikit.schema import List, Number, Where, check, show
from xaikit.viz.html import (
    Section,
    encode_png,
    escape,
    fmt,
    heat_cell,
    img,
    key_values,
    page,
    table,
)
from xaikit.zoo.checkpoint import resolve_checkpoint
from xaikit.zoo.heads import get_task
from xaikit.zoo.limits import MAX_CLASSES
from xaikit.zoo.registry import TORCHVISION_PREFIX

SECTION_IDS = (
    "model-card",
    "training",
    "metrics",
    "gallery",
    "filters",
    "recurrent",
    "evaluation",
)
SIZE_BUDGET = 5 * 1024 * 1024  # bytes of the whole page, for 100 gallery samples
GALLERY_BUDGET = 3_500_000  # bytes of the gallery's images, the rest of the page is < 1.5 MB
IMAGE_CHANNEL_DIM = {"image": -3, "signal": -2, "sequence": -1}


@dataclass(frozen=True)
class ReportSettings:
    """What the report computes; every field has a command-line flag of ``xaikit report``.

    Attributes:
        n: test samples in the gallery (and, by default, in the evaluation).
        methods: heatmap methods (default :data:`DEFAULT_METHODS` for CNNs,
            :data:`SEQUENCE_METHODS` for recurrent models).
        layer: the explained layer of CAM methods (``"auto"``: the last spatial layer).
        filter_layer: the layer of the filter atlas (default: the first convolution).
        seed: for stochastic methods, baselines and activation maximization.
        evaluate: run the explanation-quality figures (the slowest part).
        eval_n: samples scored by the evaluation (default ``n``).
        eval_steps: deletion / insertion increments.
        sanity: run the randomization and class-contrast checks.
        atlas_channels: channels shown in the atlas (the first ones of the layer).
        atlas_steps: activation-maximization steps per channel.
        exemplar_pool: test inputs searched for dataset exemplars.
        maco: also show MACO feature visualizations (phase-only, with their transparency)
            of the atlas layer's most active channels, ``atlas_steps`` steps each (opt-in).
        concepts: also show this many DFF concepts of the atlas layer found on the
            report's samples, with exemplar crops and per-class importance (0: off).
        metrics: explanation-quality metrics of :data:`xaikit.evaluate.CATALOGUE` scored in
            the evaluation section, shown as a methods x metrics table with ranks (``None``:
            the deletion / insertion / pointing figures).
        sequences: sequences drawn in the recurrent section.
        cell_px: longest side of a gallery image, in pixels (larger inputs are downscaled).
        gallery_budget: bytes the gallery's images may take in the page; when the estimate
            exceeds it, every gallery image is downscaled alike (never below 24 px).
        quiet: hide progress bars (default: ``$XAIKIT_QUIET``).
    """

    n: int = 24
    methods: tuple[str, ...] | None = None
    layer: str = "auto"
    filter_layer: str | None = None
    seed: int = 0
    evaluate: bool = True
    eval_n: int | None = None
    eval_steps: int = 16
    sanity: bool = True
    atlas_channels: int = 8
    atlas_steps: int = 64
    exemplar_pool: int = 256
    maco: bool = False
    concepts: int = 0
    metrics: tuple[str, ...] | None = None
    sequences: int = 3
    cell_px: int = 96
    gallery_budget: int = GALLERY_BUDGET
    quiet: bool | None = None

    def check(self) -> None:
        """Raise :class:`~xaikit.errors.XaikitConfigError` for values out of range."""
        for name in ("n", "eval_steps", "atlas_channels", "exemplar_pool", "sequences"):
            if int(getattr(self, name)) < 1:
                raise XaikitConfigError(f"report setting {name} must be at least 1")
        if self.eval_n is not None and self.eval_n < 1:
            raise XaikitConfigError("report setting eval_n must be at least 1")
        if self.atlas_steps < 0:
            raise XaikitConfigError("report setting atlas_steps must be >= 0")
        if self.concepts < 0:
            raise XaikitConfigError("report setting concepts must be >= 0 (0: no concepts)")
        if self.metrics is not None:
            from xaikit.evaluate.suite import check_metric_names

            check_metric_names(self.metrics)
        if self.cell_px < 16:
            raise XaikitConfigError("report setting cell_px must be at least 16 pixels")
        if self.gallery_budget < 1:
            raise XaikitConfigError("report setting gallery_budget must be positive")
        if self.methods is not None and not self.methods:
            raise XaikitConfigError("report setting methods is empty")

    @property
    def is_quiet(self) -> bool:
        if self.quiet is not None:
            return bool(self.quiet)
        return os.environ.get("XAIKIT_QUIET") == "1"


@dataclass
class ReportContext:
    """Everything the sections share: the model, its card, the samples and its outputs.

    Attributes:
        model: the classifier (borrowed by every computation, never modified).
        card: the model card (a minimal one for a bare module).
        name: how the model is called in the page.
        checkpoint: the ``.safetensors`` file, when the model came from one.
        data_name: the data set's name; ``data_options`` the options it was loaded with.
        kind: ``"image"`` ``(N, C, H, W)``, ``"signal"`` ``(N, C, L)`` or ``"sequence"``
            ``(N, T, F)``.
        inputs: ``(N, ...)`` the gallery's test inputs as raw values (``[0, 1]`` pixels),
            on the CPU; :meth:`model_inputs` normalizes them for the model.
        targets: ``(N,)`` class indices or ``(N, K)`` 0/1 label vectors.
        truth: ground truth per input when the data has it: ``(N, K, H, W)`` masks for
            shapes, ``(N, T)`` marker steps for ``recall``; else ``None``.
        pool: ``(P, ...)`` test inputs (``P >= N``) searched for dataset exemplars.
        normalization: ``{"mean", "std"}`` the model expects, or ``None``.
        class_names: one name per model output.
        labels: the names target indices refer to (the data set's classes; for a binary
            model both outcomes, while ``class_names`` names its single output).
        task: ``"multiclass"``, ``"multilabel"`` or ``"binary"``.
        logits, probabilities: ``(N, outputs)`` on the CPU.
        settings: the :class:`ReportSettings`.
        notes: warnings collected while computing, shown at the end of the page.
    """

    model: nn.Module
    card: dict[str, Any]
    name: str
    checkpoint: Path | None
    data_name: str
    data_options: dict[str, Any]
    kind: str
    inputs: torch.Tensor
    targets: torch.Tensor
    truth: torch.Tensor | None
    pool: torch.Tensor
    normalization: dict[str, list[float]] | None
    class_names: list[str]
    labels: list[str]
    task: str
    logits: torch.Tensor
    probabilities: torch.Tensor
    settings: ReportSettings
    notes: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def methods(self) -> tuple[str, ...]:
        """The heatmap methods of the gallery and the evaluation."""
        if self.settings.methods:
            return tuple(self.settings.methods)
        return SEQUENCE_METHODS if self.kind == "sequence" else DEFAULT_METHODS

    @property
    def predicted(self) -> torch.Tensor:
        """``(N,)`` predicted class, or ``(N, K)`` bool predicted labels (multi-label)."""
        task = get_task(self.task)
        return task.predict(self.logits)

    def outcome(self, index: int) -> tuple[str, float]:
        """The predicted class of sample ``index`` and its probability (multi-class or
        binary models)."""
        pred = int(self.predicted.reshape(self.predicted.shape[0], -1)[index, 0])
        if self.task == "binary":
            positive = float(self.probabilities[index, 0])
            return self.labels[pred], positive if pred == 1 else 1.0 - positive
        return self.class_names[pred], float(self.probabilities[index, pred])

    def label_name(self, index: int) -> str:
        """The true class name of sample ``index`` (one label per sample)."""
        cls = int(self.targets[index])
        return self.labels[cls] if 0 <= cls < len(self.labels) else str(cls)

    def model_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalized inputs -> what the model takes, on its device."""
        x = x.to(self.device)
        if self.normalization:
            x = normalize(x, self.normalization, channel_dim=IMAGE_CHANNEL_DIM[self.kind])
        return x

    def note(self, caught: Sequence[warnings.WarningMessage], where: str) -> None:
        """Keep the distinct warnings raised while computing ``where``."""
        for item in caught:
            text = f"{where}: {item.message}"
            if text not in self.notes:
                self.notes.append(text)


# --------------------------------------------------------------------------- loading


def _minimal_card(model: nn.Module) -> dict[str, Any]:
    spec = dict(getattr(model, "spec", None) or {})
    return {
        "architecture": spec.pop("name", type(model).__name__),
        "config": spec,
        "task": get_task(model).name,
    }


def _load_model(
    model: str | os.PathLike[str] | nn.Module,
    card: Mapping[str, Any] | None,
    checkpoint: str | os.PathLike[str] | None,
    device: str | torch.device,
) -> tuple[nn.Module, dict[str, Any], str, Path | None]:
    from xaikit.zoo.checkpoint import load_model

    if isinstance(model, nn.Module):
        loaded_card = dict(card) if card is not None else _minimal_card(model)
        path = Path(checkpoint) if checkpoint is not None else None
        name = str(loaded_card.get("name") or (path.stem if path else loaded_card["architecture"]))
        return model, loaded_card, name, path
    spec = str(model)
    loaded, loaded_card = load_model(spec, device=device)
    path = None
    if not spec.startswith(TORCHVISION_PREFIX):
        path = resolve_checkpoint(spec)
    if card is not None:
        loaded_card = {**loaded_card, **card}
    name = Path(spec).stem if os.sep in spec or spec.endswith(".safetensors") else spec
    return loaded, loaded_card, name, path


def _kind(model: nn.Module, card: Mapping[str, Any], dataset_kind: str | None) -> str:
    if has_recurrent(model):
        return "sequence"
    shape = card.get("input_shape")
    if shape is not None and len(shape) == 2:
        return "signal"
    if shape is not None and len(shape) == 3:
        return "image"
    return dataset_kind or "image"


def _loader_options(name: str) -> set[str]:
    loader = dataset_info(name).loader
    return {
        p.name
        for p in inspect.signature(loader).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


#: Data sets a model card may name for a report without ``--data``: generated or bundled,
#: offline. Anything else (folders, IDX files, torchvision sets that may download) the user
#: names: a card never chooses files, paths or downloads.
CARD_DATA = ("shapes", "shapes-multilabel", "digits", "mnist1d", "recall")
#: Options a card's recipe may not pass on: they choose files or the network.
_CARD_FORBIDDEN_OPTIONS = frozenset({"root", "download", "path", "dir", "url"})


def dataset_options(
    data: str, card: Mapping[str, Any], count: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """How to load the test split of ``data`` so it matches the model: the options the model
    was trained with (from its card, when the card's data set is ``data``; ``n`` excepted),
    ``n = count``, the image ``size`` / sequence ``length`` of the card's input shape, then
    ``extra`` on top."""
    accepted = _loader_options(data)
    options: dict[str, Any] = {}
    recipe_data = card.get("data") or (card.get("recipe") or {}).get("data") or {}
    if isinstance(recipe_data, Mapping) and recipe_data.get("name") == data:
        card_options = recipe_data.get("options") or {}
        if isinstance(card_options, Mapping):
            options.update(
                {
                    k: v
                    for k, v in card_options.items()
                    if k != "n" and k not in _CARD_FORBIDDEN_OPTIONS
                }
            )
    shape = card.get("input_shape") or []
    if "size" in accepted and len(shape) == 3:
        options["size"] = int(shape[-1])
    if "length" in accepted and len(shape) == 2:
        options["length"] = int(shape[0])
    if "n" in accepted:
        options["n"] = int(count)
    options.update(extra or {})
    return {k: v for k, v in options.items() if k in accepted}


def _sample(dataset: Any, count: int, seed: int, generated: bool) -> list[int]:
    """Which ``count`` items of ``dataset`` the report shows.

    A generated data set (its loader takes ``n``) is a seeded random draw already: its first
    ``count``. A fixed one (an image folder, files sorted by class) is sampled class-balanced
    with ``seed``, in :func:`~xaikit.data.sampling.balanced_order`, so the gallery's first
    ``n`` are balanced too.
    """
    targets = None if generated else dataset_targets(dataset)
    if targets is None or len(targets) != len(dataset):
        return list(range(count))
    return balanced_order(targets, seed)[:count]


def _stack(
    dataset: Any, indices: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(inputs, targets, truth)`` of the items at ``indices``; inputs as raw values (data
    sets hand out model-ready items: their own normalization is undone here, the model's is
    applied by :meth:`ReportContext.model_inputs`)."""
    items = [dataset[i] for i in indices]
    inputs = torch.stack([torch.as_tensor(item[0]) for item in items]).float()
    applied = getattr(dataset, "normalization", None)
    if applied:
        dim = IMAGE_CHANNEL_DIM.get(getattr(dataset, "input_kind", "image"), -3)
        inputs = denormalize(inputs, applied, channel_dim=dim)
    targets = torch.stack([torch.as_tensor(item[1]) for item in items])
    truth = None
    if getattr(dataset, "has_ground_truth", False) and len(items[0]) > 2:
        truth = torch.stack([torch.as_tensor(item[2]) for item in items]).float()
    return inputs, targets, truth


def _logits(model: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    with borrowed(model), torch.no_grad():
        parts = [model(x[i : i + batch]) for i in range(0, x.shape[0], batch)]
    out = torch.cat(parts)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise XaikitConfigError(
            "the report needs a classifier returning (N, outputs) logits; this model returned "
            f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
        )
    return out.detach().float().cpu()


def _check_settings(ctx: ReportContext) -> None:
    """Fail before any section runs when a method or a layer setting is wrong (a typo would
    otherwise leave the gallery, filters and evaluation sections empty)."""
    if ctx.kind == "sequence":
        unknown = [m for m in ctx.methods if m not in TEMPORAL_METHODS]
        if unknown:
            raise XaikitConfigError(
                f"unknown temporal method(s) {', '.join(map(repr, unknown))} for a recurrent "
                f"model; choose from {', '.join(TEMPORAL_METHODS)}"
            )
    else:
        check_methods(list(ctx.methods))
    example = ctx.model_inputs(ctx.inputs[:1])
    chosen = [ctx.settings.filter_layer]
    if ctx.kind != "sequence" and ctx.settings.layer != "auto":
        chosen.append(ctx.settings.layer)
    for layer in chosen:
        if layer is not None:
            resolve_layer(ctx.model, layer, example)


def load_context(
    model: str | os.PathLike[str] | nn.Module,
    data: str | None = None,
    *,
    card: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    settings: ReportSettings | None = None,
    data_options: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> ReportContext:
    """Load the model and test samples of ``data`` and run the model on them (a fixed data
    set is sampled class-balanced with ``settings.seed``, a generated one drawn with it).

    ``data`` defaults to the data set named in the model card. Raises
    :class:`~xaikit.errors.XaikitConfigError` when the model and the data do not fit
    (different class counts, shapes), a method is unknown, or ``layer`` / ``filter_layer``
    names no layer.
    """
    settings = settings or ReportSettings()
    settings.check()
    net, full_card, name, path = _load_model(model, card, checkpoint, device)
    if data is None:
        recipe_data = full_card.get("data") or (full_card.get("recipe") or {}).get("data") or {}
        data = recipe_data.get("name") if isinstance(recipe_data, Mapping) else None
        if not data:
            raise XaikitConfigError(
                f"the model card of {name!r} names no data set; pass data= (--data D)"
            )
        if data not in CARD_DATA:
            raise XaikitConfigError(
                f"the model card of {name!r} names the data set {str(data)[:200]!r}; a card "
                f"only chooses a built-in offline one ({', '.join(CARD_DATA)}): pass data= "
                "(--data D) to use it"
            )
    eval_n = settings.eval_n or settings.n
    count = max(settings.n, eval_n, settings.exemplar_pool)
    options = dataset_options(data, full_card, count, data_options)
    dataset = load(data, "test", **options)
    if len(dataset) < 1:
        raise XaikitConfigError(f"the test split of {data!r} is empty")
    kind = _kind(net, full_card, getattr(dataset, "input_kind", None))
    pool_count = min(len(dataset), count)
    pool, targets, truth = _stack(
        dataset, _sample(dataset, pool_count, settings.seed, "n" in options)
    )
    n = min(max(settings.n, eval_n), pool_count)
    task = get_task(net).name
    normalization = full_card.get("normalization") or getattr(dataset, "normalization", None)
    ctx = ReportContext(
        model=net,
        card=full_card,
        name=name,
        checkpoint=path,
        data_name=data,
        data_options=options,
        kind=kind,
        inputs=pool[:n],
        targets=targets[:n],
        truth=None if truth is None else truth[:n],
        pool=pool,
        normalization=normalization,
        class_names=[],
        labels=[],
        task=task,
        logits=torch.empty(0),
        probabilities=torch.empty(0),
        settings=settings,
    )
    classes = list(getattr(dataset, "classes", []) or [])
    declared = full_card.get("num_classes") or (full_card.get("config") or {}).get("num_classes")
    if task != "binary" and classes and declared and int(declared) != len(classes):
        raise XaikitConfigError(
            f"model {name!r} has {declared} outputs but data set {data!r} has {len(classes)} "
            "classes; report a model on the data it was trained for"
        )
    try:
        ctx.logits = _logits(net, ctx.model_inputs(ctx.inputs))
    except RuntimeError as err:
        raise XaikitConfigError(
            f"model {name!r} cannot run on data set {data!r} (inputs {tuple(pool.shape[1:])}): "
            f"{str(err).splitlines()[0]}"
        ) from None
    _check_settings(ctx)
    outputs = ctx.logits.shape[1]
    names = full_card.get("class_names") or classes
    if task != "binary" and classes and len(classes) != outputs:
        raise XaikitConfigError(
            f"model {name!r} has {outputs} outputs but data set {data!r} has {len(classes)} "
            "classes; report a model on the data it was trained for"
        )
    if task == "binary":
        pair = [str(c) for c in (classes if len(classes) == 2 else names)]
        ctx.labels = pair if len(pair) == 2 else ["negative", "positive"]
        ctx.class_names = [ctx.labels[1]]
    else:
        ctx.class_names = [str(c) for c in names] if len(names) == outputs else []
        ctx.class_names = ctx.class_names or [f"class {k}" for k in range(outputs)]
        ctx.labels = [str(c) for c in classes] or ctx.class_names
    ctx.probabilities = get_task(task).probabilities(ctx.logits)
    return ctx


# --------------------------------------------------------------------------- sections


def _json_block(value: Any) -> str:
    return f"<pre>{escape(json.dumps(value, indent=2, default=str))}</pre>"


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_card_section(ctx: ReportContext) -> Section:
    """Architecture, task, classes, input shape, normalization, recipe, seed, versions."""
    card = ctx.card
    rows: dict[str, str] = {
        "model": escape(ctx.name),
        "checkpoint": escape(ctx.checkpoint) if ctx.checkpoint else "&ndash;",
        "architecture": f"<code>{escape(card.get('architecture'))}</code>",
        "parameters": f"{_parameter_count(ctx.model):,}",
        "task": escape(ctx.task),
        "classes": escape(", ".join(ctx.class_names)),
        "input shape": escape(card.get("input_shape") or tuple(ctx.inputs.shape[1:])),
        "normalization": escape(ctx.normalization) if ctx.normalization else "none",
        "config": f"<code>{escape(json.dumps(card.get('config', {})))}</code>",
        "seed": escape(card.get("seed", "-")),
        "trained with": escape(
            f"xaikit {card.get('xaikit_version', '?')}, torch {card.get('torch_version', '?')}"
        ),
        "created": escape(card.get("created", "-")),
        "weights SHA-256": f"<code>{escape(card.get('weights_sha256', '-'))}</code>",
        "report data": escape(
            f"{ctx.data_name} (test split, {ctx.inputs.shape[0]} samples, options "
            f"{json.dumps(ctx.data_options, default=str)})"
        ),
        "report made with": escape(
            f"xaikit {__version__}, torch {torch.__version__}, python {platform.python_version()}"
        ),
    }
    if card.get("weights"):
        rows["weights"] = escape(card["weights"])
    body = key_values(rows)
    recipe = card.get("recipe")
    if recipe:
        body += "\n<h3>Training recipe</h3>\n" + _json_block(recipe)
    return Section("model-card", "Model card", body)


def training_files(checkpoint: Path | None) -> dict[str, Path]:
    """The training curves and history stored beside a checkpoint: ``<stem>.curves.png`` /
    ``<stem>.history.json`` (shipped models) or ``curves.png`` / ``history.json`` in the run
    folder. Returns ``{"curves": path, "history": path}`` for the files that exist."""
    if checkpoint is None:
        return {}
    folder, stem = checkpoint.parent, checkpoint.name.removesuffix(".safetensors")
    found: dict[str, Path] = {}
    for key, names in (
        ("curves", (f"{stem}.curves.png", "curves.png")),
        ("history", (f"{stem}.history.json", "history.json")),
    ):
        for candidate in names:
            path = folder / candidate
            # Anything by that name, not only regular files: a FIFO or a link to /dev/zero is
            # refused by the reader with a note in the page instead of silently skipped.
            if path.exists() or path.is_symlink():
                found[key] = path
                break
    return found


#: Size limit of a ``curves.png`` beside a checkpoint (the figure is a few hundred KB).
MAX_CURVES_BYTES = 16 * 2**20


def _side_file_note(ctx: ReportContext, name: str, err: Exception, path: Path | None = None) -> str:
    """A side file that failed: one line in the page where its part would be, and in the
    notes; the rest of the section and of the report is built as usual."""
    text = " ".join(str(err).split()) or type(err).__name__
    if path is not None:
        text = text.removeprefix(f"{path}: ")
    line = f"{name} was not read: {text}"
    if line not in ctx.notes:
        ctx.notes.append(line)
    return f'<p class="bad">{escape(line)}</p>'


def _curves_png(path: Path) -> str:
    """``curves.png`` as an inlined PNG: a regular file of at most :data:`MAX_CURVES_BYTES`
    that decodes as a PNG of at most :data:`MAX_PIXELS` pixels, else :class:`DataError`."""
    data = read_limited(path, what="training curves", max_bytes=MAX_CURVES_BYTES, error=DataError)
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise DataError(
                    f"{path}: the figure is {opened.width} x {opened.height} pixels, more than "
                    f"{MAX_PIXELS:,}"
                )
            return encode_png(opened.convert("RGB"), max_side=1000)
    except DataError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... on damage
        detail = " ".join(str(err).split())[:160] or type(err).__name__
        raise DataError(f"{path}: not a readable PNG image ({detail})") from None


def _history_table(path: Path) -> str:
    """The last 30 epochs of ``history.json``; raises :class:`DataError` (one line) when the
    file does not fit :data:`xaikit.train.history.HISTORY_SPEC`."""
    from xaikit.train.history import read_history

    history = read_history(path)
    if not history:
        return ""
    keys: dict[str, None] = {}
    for record in history:
        keys.update(dict.fromkeys(k for k, v in record.items() if isinstance(v, (int, float))))
    header = list(keys)
    rows = [[fmt(record.get(k), 4) for k in header] for record in history[-30:]]
    note = f"last 30 of {len(history)} epochs" if len(history) > 30 else f"{len(history)} epochs"
    return f"<h3>History ({note})</h3>\n" + table(header, rows, css_class="num")


def training_section(ctx: ReportContext) -> Section:
    """The training curves PNG and the history table stored beside the checkpoint; a file
    that cannot be read is replaced by a one-line note, the other is still shown."""
    files = training_files(ctx.checkpoint)
    parts = []
    if "curves" in files:
        path = files["curves"]
        try:
            png = _curves_png(path)
            parts.append(
                f"<figure>{img(png, 'training curves')}<figcaption>"
                f"{escape(path.name)}: loss and metrics per epoch</figcaption></figure>"
            )
        except XaikitError as err:
            parts.append(_side_file_note(ctx, path.name, err, path))
    if "history" in files:
        try:
            parts.append(_history_table(files["history"]))
        except XaikitError as err:
            parts.append(_side_file_note(ctx, files["history"].name, err, files["history"]))
    if not parts:
        where = ctx.checkpoint.parent if ctx.checkpoint else "(no checkpoint file)"
        parts.append(
            f'<p class="note">No training curves found beside the checkpoint in '
            f"{escape(where)} (looked for &lt;name&gt;.curves.png and curves.png).</p>"
        )
    return Section("training", "Training", "\n".join(parts))


def _square(value: Any) -> str | None:
    if any(len(row) != len(value) for row in value):
        lengths = sorted({len(row) for row in value})
        return f"must be a square matrix, got {len(value)} rows of {lengths} numbers"
    return None


def _card_confusion(
    value: Any, names: Sequence[str], task: str, field_path: str
) -> list[list[float]]:
    """The card's confusion matrix: square, of non-negative numbers, one row per class of a
    multi-class model; else :class:`DataError` naming the field."""
    rows = len(names) if task == "multiclass" else None
    spec = Where(
        List(
            List(Number(low=0), max_len=MAX_CLASSES),
            min_len=1,
            length=rows,
            max_len=MAX_CLASSES,
            describe=f"a {rows} x {rows} matrix of counts" if rows else "a square matrix of counts",
        ),
        _square,
    )
    check(value, spec, where="model card", error=DataError, path=tuple(field_path.split(".")))
    return value


def _confusion_table(matrix: Sequence[Sequence[float]], names: Sequence[str]) -> str:
    peak = max((max(row) for row in matrix if row), default=0)
    header = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for i, row in enumerate(matrix):
        label = names[i] if i < len(names) else str(i)
        cells = "".join(heat_cell(float(v), float(peak), fmt(v)) for v in row)
        rows.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return (
        '<table class="confusion">\n<thead>'
        + header
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _sample_metrics(ctx: ReportContext) -> dict[str, float]:
    """Accuracy figures on the report's own samples (computed, not read from the card)."""
    predicted = ctx.predicted
    if ctx.task == "multilabel" and ctx.targets.dim() == 2:
        truth = ctx.targets.bool()
        return {
            "label accuracy": float((predicted == truth).float().mean()),
            "subset accuracy": float((predicted == truth).all(dim=1).float().mean()),
        }
    if ctx.targets.dim() == 1:
        return {"accuracy": float((predicted.reshape(-1) == ctx.targets).float().mean())}
    return {}


def _sample_confusion(ctx: ReportContext) -> list[list[int]] | None:
    if ctx.task != "multiclass" or ctx.targets.dim() != 1:
        return None
    k = len(ctx.class_names)
    matrix = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(ctx.targets.tolist(), ctx.predicted.tolist()):
        if 0 <= t < k:
            matrix[t, p] += 1
    return matrix.tolist()


def metrics_section(ctx: ReportContext) -> Section:
    """The card's metrics: scalars, per-class lists and the confusion matrix; plus accuracy
    on the report's samples."""
    metrics = ctx.card.get("metrics") or {}
    names = ctx.class_names
    parts = []
    if not isinstance(metrics, Mapping):
        parts.append(
            _side_file_note(
                ctx, "the model card's metrics", DataError(f"not a table: {show(metrics)}")
            )
        )
        metrics = {}
    scalars = [
        (key, fmt(value, 4))
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    per_class = {
        key: value
        for key, value in metrics.items()
        if isinstance(value, list)
        and len(value) == len(names)
        and all(isinstance(v, (int, float)) for v in value)
    }
    matrix = None
    found = next(((k, v) for k, v in metrics.items() if "confusion" in str(k)), None)
    if found is not None:
        try:
            matrix = _card_confusion(found[1], names, ctx.task, f"metrics.{found[0]}")
        except XaikitError as err:
            parts.append(_side_file_note(ctx, "the model card's confusion matrix", err))
    if scalars:
        parts.append("<h3>Test metrics (model card)</h3>\n" + table(["metric", "value"], scalars))
    else:
        parts.append('<p class="note">The model card holds no test metrics.</p>')
    if per_class:
        header = ["class", *per_class]
        rows = [
            [name, *(fmt(per_class[k][i], 3) for k in per_class)] for i, name in enumerate(names)
        ]
        parts.append("<h3>Per class</h3>\n" + table(header, rows, css_class="num"))
    source = "model card, test split"
    if matrix is None:
        matrix = _sample_confusion(ctx)
        source = f"the report's {ctx.inputs.shape[0]} samples"
    if matrix is not None:
        parts.append(
            f"<h3>Confusion matrix ({escape(source)})</h3>\n" + _confusion_table(matrix, names)
        )
    sample = _sample_metrics(ctx)
    if sample:
        rows = [(k, fmt(v, 3)) for k, v in sample.items()]
        parts.append(
            f"<h3>On the report's {ctx.inputs.shape[0]} samples</h3>\n"
            + table(["metric", "value"], rows)
        )
    return Section("metrics", "Metrics", "\n".join(parts))


# --------------------------------------------------------------------------- the page

SectionBuilder = Callable[[ReportContext], Section]


def _builders() -> list[tuple[str, str, SectionBuilder]]:
    from xaikit.viz.report_analysis import evaluation_section, filters_section, recurrent_section
    from xaikit.viz.report_gallery import gallery_section

    return [
        ("model-card", "Model card", model_card_section),
        ("training", "Training", training_section),
        ("metrics", "Metrics", metrics_section),
        ("gallery", "Heatmap gallery", gallery_section),
        ("filters", "Filters", filters_section),
        ("recurrent", "Recurrent state", recurrent_section),
        ("evaluation", "Evaluation", evaluation_section),
    ]


def render_context(ctx: ReportContext, *, title: str | None = None) -> str:
    """The HTML page of a loaded :class:`ReportContext` (see :func:`build_report`)."""
    sections = []
    builders = _builders()
    bar = tqdm(builders, desc="report", disable=ctx.settings.is_quiet, leave=False)
    for section_id, heading, builder in bar:
        bar.set_postfix_str(section_id)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                section = builder(ctx)
            ctx.note(caught, heading)
        except XaikitError as err:
            section = Section(
                section_id, heading, f'<p class="bad">Not available: {escape(err)}</p>'
            )
        sections.append(section)
    if ctx.notes:
        items = "\n".join(f"<li>{escape(note)}</li>" for note in ctx.notes)
        sections.append(Section("notes", "Notes", f"<ul>\n{items}\n</ul>"))
    heading = title or f"xaikit report: {ctx.name}"
    subtitle = (
        f"{ctx.card.get('architecture')} · {ctx.task} · data {ctx.data_name} · "
        f"{ctx.inputs.shape[0]} test samples · seed {ctx.settings.seed}"
    )
    footer = escape(f"Written by xaikit {__version__}; self-contained, works offline.")
    return page(heading, subtitle, sections, footer)


def build_report(
    model: str | os.PathLike[str] | nn.Module,
    data: str | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    card: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    n: int = 24,
    methods: Sequence[str] | None = None,
    layer: str = "auto",
    filter_layer: str | None = None,
    seed: int = 0,
    evaluate: bool = True,
    eval_n: int | None = None,
    eval_steps: int = 16,
    sanity: bool = True,
    atlas_channels: int = 8,
    atlas_steps: int = 64,
    exemplar_pool: int = 256,
    maco: bool = False,
    concepts: int = 0,
    metrics: Sequence[str] | None = None,
    sequences: int = 3,
    cell_px: int = 96,
    gallery_budget: int = GALLERY_BUDGET,
    data_options: Mapping[str, Any] | None = None,
    title: str | None = None,
    device: str | torch.device = "cpu",
    quiet: bool | None = None,
) -> Path | str:
    """Write one self-contained HTML report about ``model`` on the test split of ``data``.

    Args:
        model: a reference model name, a checkpoint path, ``"torchvision:<name>"`` or a
            loaded ``nn.Module`` (then pass its ``card`` and, for the training curves, its
            ``checkpoint`` path).
        data: a data set name for :func:`xaikit.data.load` (default: the card's). It is
            loaded with the options the model was trained with (image size, sequence
            length, layout) and ``n`` items.
        out: the ``.html`` file to write (atomically); ``None`` returns the page as text.
        n: test samples in the heatmap gallery; also scored by the evaluation unless
            ``eval_n`` is given. About 40 KB per 64x64 sample with 4 methods: 100 samples
            stay under the 5 MB budget (``gallery_budget`` shrinks images when needed).
        methods: heatmap methods (default :data:`DEFAULT_METHODS`; :data:`SEQUENCE_METHODS`
            for recurrent models).
        layer: explained layer of CAM methods. ``filter_layer``: the atlas layer (default
            the first convolution).
        seed: randomness of stochastic methods, baselines and activation maximization.
        evaluate, eval_n, eval_steps, sanity: the evaluation section (see
            :func:`xaikit.evaluate.evaluate_methods`).
        atlas_channels, atlas_steps, exemplar_pool: the filter atlas (see
            :func:`xaikit.filters.atlas`).
        maco: add MACO feature visualizations of the atlas layer's most active channels
            (:func:`xaikit.filters.maximize` with ``param="maco"``, ``atlas_steps`` steps).
        concepts: add this many DFF concepts of the atlas layer on the report's samples
            (:func:`xaikit.filters.concepts`), with exemplars and per-class importance.
        metrics: catalogue metrics for the evaluation section's methods x metrics table.
        sequences: sequences drawn in the recurrent section.
        cell_px: longest side of a gallery image (larger inputs are downscaled).
        gallery_budget: bytes the gallery's images may take; above it they are downscaled
            alike so the page stays under :data:`SIZE_BUDGET`.
        data_options: extra options for the data set loader.
        title: the page title (default ``"xaikit report: <model>"``).
        device: where the model runs.
        quiet: hide progress bars (default ``$XAIKIT_QUIET``).

    Returns:
        the written path, or the HTML text when ``out`` is ``None``.

    Raises:
        XaikitError: the model or data cannot be loaded or do not fit together.
    """
    settings = ReportSettings(
        n=n,
        methods=tuple(methods) if methods is not None else None,
        layer=layer,
        filter_layer=filter_layer,
        seed=seed,
        evaluate=evaluate,
        eval_n=eval_n,
        eval_steps=eval_steps,
        sanity=sanity,
        atlas_channels=atlas_channels,
        atlas_steps=atlas_steps,
        exemplar_pool=exemplar_pool,
        maco=maco,
        concepts=concepts,
        metrics=tuple(metrics) if metrics is not None else None,
        sequences=sequences,
        cell_px=cell_px,
        gallery_budget=gallery_budget,
        quiet=quiet,
    )
    ctx = load_context(
        model,
        data,
        card=card,
        checkpoint=checkpoint,
        settings=settings,
        data_options=data_options,
        device=device,
    )
    text = render_context(ctx, title=title)
    if out is None:
        return text
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        raise XaikitConfigError(
            f"the report is an HTML file; give a path ending in .html, got {path}"
        )
    atomic_write_text(path, text)
    return path


__all__ = [
    "DEFAULT_METHODS",
    "GALLERY_BUDGET",
    "SECTION_IDS",
    "SEQUENCE_METHODS",
    "SIZE_BUDGET",
    "ReportContext",
    "ReportSettings",
    "build_report",
    "dataset_options",
    "load_context",
    "render_context",
    "training_files",
]
