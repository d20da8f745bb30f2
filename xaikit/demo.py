"""``xaikit demo``: the main job on built-in defaults, offline, in about a minute on a laptop.

With the shipped reference models (``shapes-multiclass``, ``shapes-multilabel``,
``recall-lstm``, shipped inside the package in ``xaikit/models``, or in ``$XAIKIT_MODELS_DIR``)
and the generated data sets, it writes into one folder::

    heatmaps/shapes-multiclass_methods.png     several methods side by side, test images
    heatmaps/shapes-multiclass_gradcam/        the Grad-CAM explanation as .npz + .json
    heatmaps/shapes-multilabel_labels.png      one map per label, with names and probabilities
    heatmaps/recall-lstm_temporal.png          temporal heatmaps of recall sequences
    heatmaps/recall-lstm_sequence0.png         one sequence with its attribution band
    filters/first_layer_weights.png            the first convolution's kernels
    filters/maximize.png                       activation maximization of a few channels
    filters/exemplars.png                      the test images that fire those channels most
    filters/atlas.png                          kernel + maximization + exemplars per channel
    evaluation/evaluation.json                 deletion / insertion AUC, pointing games, sanity
    evaluation/evaluation.png                  the same as bar charts next to the baselines
    evaluation/randomization.png               the cascading-randomization sanity check
    report.html                                everything above in one self-contained page
    reports/shapes-multilabel.html             the multi-label model's page (a map per label)
    reports/recall-lstm.html                   the LSTM's page (temporal maps, gates, cell state)
    index.json                                 the list of files, settings and timings

``fast=True`` uses fewer images, steps and methods (for CI); the files are the same.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from xaikit._names import DEMO_MODELS
from xaikit._version import __version__
from xaikit.errors import CheckpointError, XaikitConfigError
from xaikit.explain.api import explain
from xaikit.filters import exemplars, maximize, weights
from xaikit.io import atomic_write_json, atomic_write_text
from xaikit.viz.overlay import save_figure, signal_overlay
from xaikit.viz.report import ReportContext, ReportSettings, load_context, render_context
from xaikit.viz.report_analysis import evaluation_json, report_atlas, run_evaluation
from xaikit.viz.report_figures import (
    cascade_figure,
    evaluation_figure,
    label_grid_figure,
    method_grid_figure,
    temporal_matrix_figure,
)
from xaikit.viz.report_gallery import image_explanations, marker_steps, temporal_maps
from xaikit.zoo.checkpoint import CARD_SUFFIX, WEIGHTS_SUFFIX, shipped_models_dir


@dataclass(frozen=True)
class DemoPlan:
    """How much work each step does; :data:`FULL` and :data:`FAST` (for CI)."""

    grid_images: int
    grid_methods: tuple[str, ...]
    report_methods: tuple[str, ...]
    label_images: int
    sequences: int
    temporal_methods: tuple[str, ...]
    maximize_channels: int
    maximize_steps: int
    exemplar_pool: int
    report_n: int
    eval_n: int
    eval_steps: int
    atlas_channels: int
    atlas_steps: int


FULL = DemoPlan(
    grid_images=8,
    grid_methods=("gradcam", "gradcam++", "layercam", "scorecam-fast", "saliency", "ig"),
    report_methods=("gradcam", "gradcam++", "layercam", "saliency"),
    label_images=6,
    sequences=12,
    temporal_methods=("inputxgrad", "ig", "occlusion"),
    maximize_channels=6,
    maximize_steps=128,
    exemplar_pool=256,
    report_n=16,
    eval_n=24,
    eval_steps=16,
    atlas_channels=8,
    atlas_steps=64,
)
FAST = DemoPlan(
    grid_images=3,
    grid_methods=("gradcam", "gradcam++", "saliency"),
    report_methods=("gradcam", "saliency"),
    label_images=3,
    sequences=4,
    temporal_methods=("inputxgrad", "occlusion"),
    maximize_channels=3,
    maximize_steps=16,
    exemplar_pool=32,
    report_n=4,
    eval_n=4,
    eval_steps=4,
    atlas_channels=3,
    atlas_steps=8,
)


@dataclass
class DemoResult:
    """What the demo wrote: ``files`` as ``(what, path)`` pairs, and how long it took."""

    out: Path
    files: list[tuple[str, Path]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, what: str, path: Path) -> Path:
        self.files.append((what, path))
        return path

    def summary(self) -> str:
        """One line per file: what it shows and where it is."""
        width = max((len(what) for what, _ in self.files), default=0)
        lines = [f"  {what:<{width}}  {path}" for what, path in self.files]
        head = f"xaikit demo: {len(self.files)} files in {self.out} ({self.seconds:.0f} s)"
        return "\n".join([head, *lines])


def missing_models(models_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The reference models the demo needs that ``models_dir`` (default: the shipped models
    folder) lacks."""
    folder = Path(models_dir) if models_dir is not None else shipped_models_dir()
    return [
        name
        for name in DEMO_MODELS
        if not (folder / f"{name}{WEIGHTS_SUFFIX}").is_file()
        or not (folder / f"{name}{CARD_SUFFIX}").is_file()
    ]


def _check_models(folder: Path) -> None:
    missing = missing_models(folder)
    if missing:
        names = ", ".join(missing)
        raise CheckpointError(
            f"reference model(s) {names} missing from {folder} (each needs <name>.safetensors "
            "and <name>.json); train them with `xaikit train` and copy them there, or point "
            "--models-dir / $XAIKIT_MODELS_DIR at a folder that holds them"
        )


def _captions(ctx: ReportContext, count: int) -> list[str]:
    captions = []
    for i in range(count):
        name, p = ctx.outcome(i)
        truth = ctx.label_name(i) if ctx.targets.dim() == 1 else "?"
        captions.append(f"{truth} -> {name} {p:.2f}")
    return captions


def _method_grid(ctx: ReportContext, plan: DemoPlan, out: Path, result: DemoResult) -> None:
    count = min(plan.grid_images, ctx.inputs.shape[0])
    x = ctx.inputs[:count]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explained = explain(
            ctx.model,
            ctx.model_inputs(x),
            method=list(plan.grid_methods),
            class_names=ctx.class_names,
            seed=ctx.settings.seed,
            quiet=ctx.settings.is_quiet,
            return_result=True,
        )
    ctx.note(caught, "heatmap grid")
    first = next(iter(explained.values()))
    masks = None
    if ctx.truth is not None and ctx.truth.dim() == 4 and ctx.targets.dim() == 1:
        masks = ctx.truth[torch.arange(count), ctx.targets[:count]]
    fig = method_grid_figure(
        x,
        {name: res.heatmap.cpu() for name, res in explained.items()},
        captions=_captions(ctx, count),
        masks=masks,
        title=f"{ctx.name}: heatmaps of the predicted class (white: the true shape's mask)",
    )
    path = save_figure(fig, out / "heatmaps" / f"{ctx.name}_methods.png")
    result.add("heatmaps, methods side by side", path)
    gradcam = explained.get("gradcam", first)
    saved = gradcam.save(out / "heatmaps" / f"{ctx.name}_{gradcam.method}")
    result.add(f"{gradcam.method} maps as arrays", saved)


def _label_grid(ctx: ReportContext, out: Path, result: DemoResult) -> None:
    res = next(iter(image_explanations(ctx).values()))
    labels: list[list[str | None]] = []
    for i in range(res.maps.shape[0]):
        row: list[str | None] = []
        for k in range(res.maps.shape[1]):
            cls = int(res.targets[i, k])
            if cls < 0 or not bool(res.valid[i, k]):
                row.append(None)
                continue
            true = ctx.targets.dim() == 2 and bool(ctx.targets[i, cls])
            mark = "true" if true else "not true"
            row.append(f"{ctx.class_names[cls]} p={float(res.probabilities[i, k]):.2f} ({mark})")
        labels.append(row)
    masks = None
    if ctx.truth is not None and ctx.truth.dim() == 4:
        index = res.targets.cpu().clamp(min=0)
        masks = torch.stack([ctx.truth[i, index[i]] for i in range(index.shape[0])])
    fig = label_grid_figure(
        ctx.inputs[: res.maps.shape[0]],
        res.maps.cpu(),
        labels,
        masks=masks,
        title=f"{ctx.name}: {res.method}, one map per label (predicted or true)",
    )
    path = save_figure(fig, out / "heatmaps" / f"{ctx.name}_labels.png")
    result.add("heatmaps, one per label", path)


def _temporal(ctx: ReportContext, out: Path, result: DemoResult) -> None:
    maps = temporal_maps(ctx)
    markers = marker_steps(ctx)
    fig = temporal_matrix_figure(
        maps, markers, title=f"{ctx.name}: which steps decided the output (blue: the marker)"
    )
    result.add("temporal heatmaps", save_figure(fig, out / "heatmaps" / f"{ctx.name}_temporal.png"))
    method, values = next(iter(maps.items()))
    fig = signal_overlay(
        ctx.inputs[0],
        values[0],
        channels_first=False,
        title=f"{ctx.name} sequence 0: {method}, predicted {ctx.outcome(0)[0]}",
    )
    if markers is not None:
        fig.axes[0].axvline(int(markers[0]), color="tab:blue", linestyle="--", linewidth=1)
    path = save_figure(fig, out / "heatmaps" / f"{ctx.name}_sequence0.png")
    result.add("one sequence and its attribution", path)


def _filters(ctx: ReportContext, plan: DemoPlan, out: Path, result: DemoResult) -> None:
    folder = out / "filters"
    kernels = weights(ctx.model)
    result.add(
        "first-layer kernels", save_figure(kernels.figure, folder / "first_layer_weights.png")
    )
    maximized = maximize(
        ctx.model,
        "auto",
        list(range(plan.maximize_channels)),
        steps=plan.maximize_steps,
        seed=ctx.settings.seed,
        normalization=ctx.normalization,
        quiet=ctx.settings.is_quiet,
    )
    result.add("activation maximization", save_figure(maximized.figure, folder / "maximize.png"))
    found = exemplars(
        ctx.model,
        maximized.layer or "auto",
        ctx.pool,
        min(6, ctx.pool.shape[0]),
        channels=maximized.units,
        normalization=ctx.normalization,
        quiet=ctx.settings.is_quiet,
    )
    result.add("dataset exemplars", save_figure(found.figure, folder / "exemplars.png"))
    result.add("filter atlas", save_figure(report_atlas(ctx).figure, folder / "atlas.png"))


def _evaluation(ctx: ReportContext, out: Path, result: DemoResult) -> None:
    folder = out / "evaluation"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_evaluation(ctx)
    ctx.note(caught, "evaluation")
    payload = {
        "model": ctx.name,
        "data": ctx.data_name,
        "split": "test",
        "xaikit_version": __version__,
        "torch_version": torch.__version__,
        **evaluation_json(report),
    }
    path = folder / "evaluation.json"
    atomic_write_json(path, payload)
    result.add("evaluation figures (JSON)", path)
    result.add(
        "evaluation figure", save_figure(evaluation_figure(report), folder / "evaluation.png")
    )
    cascade = cascade_figure(report)
    if cascade is not None:
        path = save_figure(cascade, folder / "randomization.png")
        result.add("sanity check: randomization", path)


def run_demo(
    out: str | os.PathLike[str],
    *,
    fast: bool = False,
    models_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    quiet: bool | None = None,
) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring for what it writes).

    Args:
        out: the output folder (created; files in it are replaced atomically).
        fast: fewer images, steps and methods, for CI (the same files).
        models_dir: where the reference models are (default ``$XAIKIT_MODELS_DIR`` or the
            package's own ``xaikit/models``, see :func:`~xaikit.zoo.checkpoint.shipped_models_dir`).
        seed: every random choice (maximization, baselines, stochastic methods).
        device: where the models run.
        threads: torch intra-op threads for the run (restored afterwards); ``None`` keeps
            the current setting. The reference models are small: one thread is fastest,
            several mostly wait on each other (17x slower on a busy 2-core machine).
        quiet: hide progress bars (default ``$XAIKIT_QUIET``).

    Raises:
        CheckpointError: a reference model is missing (the message names it).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise XaikitConfigError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        return _run_demo(
            Path(out), fast=fast, models_dir=models_dir, seed=seed, device=device, quiet=quiet
        )
    finally:
        torch.set_num_threads(previous)


def _run_demo(
    out: Path,
    *,
    fast: bool,
    models_dir: str | os.PathLike[str] | None,
    seed: int,
    device: str | torch.device,
    quiet: bool | None,
) -> DemoResult:
    start = time.perf_counter()
    folder = Path(models_dir) if models_dir is not None else shipped_models_dir()
    _check_models(folder)
    plan = FAST if fast else FULL
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)
    silent = quiet if quiet is not None else os.environ.get("XAIKIT_QUIET") == "1"

    def context(name: str, **settings: Any) -> ReportContext:
        options = {"seed": seed, "quiet": True if silent else None, **settings}
        return load_context(
            str(folder / name), DEMO_MODELS[name], settings=ReportSettings(**options), device=device
        )

    main: dict[str, ReportContext] = {}

    def load_main() -> None:
        main["ctx"] = context(
            "shapes-multiclass",
            n=max(plan.report_n, plan.grid_images),
            methods=plan.report_methods,
            eval_n=plan.eval_n,
            eval_steps=plan.eval_steps,
            atlas_channels=plan.atlas_channels,
            atlas_steps=plan.atlas_steps,
            exemplar_pool=plan.exemplar_pool,
        )

    # The two other models' contexts also give their own, smaller report pages: the
    # multi-label gallery (one map per label) and the recurrent sections (gates, cell state).
    side: dict[str, ReportContext] = {}

    def multilabel() -> None:
        ctx = context(
            "shapes-multilabel",
            n=plan.label_images,
            methods=("gradcam",),
            exemplar_pool=plan.label_images,
            eval_steps=plan.eval_steps,
            atlas_channels=plan.atlas_channels,
            atlas_steps=plan.atlas_steps,
        )
        _label_grid(ctx, out, result)
        side["shapes-multilabel"] = ctx

    def recall() -> None:
        ctx = context(
            "recall-lstm",
            n=plan.sequences,
            methods=plan.temporal_methods,
            exemplar_pool=plan.sequences,
            eval_steps=plan.eval_steps,
        )
        _temporal(ctx, out, result)
        side["recall-lstm"] = ctx

    def report() -> None:
        text = render_context(main["ctx"], title="xaikit demo report: shapes-multiclass")
        path = out / "report.html"
        atomic_write_text(path, text)
        result.add("report (open in a browser)", path)
        for name, ctx in side.items():
            path = out / "reports" / f"{name}.html"
            path.parent.mkdir(exist_ok=True)
            atomic_write_text(path, render_context(ctx, title=f"xaikit demo report: {name}"))
            result.add(f"report of {name}", path)

    steps: list[tuple[str, Callable[[], None]]] = [
        ("load shapes-multiclass", load_main),
        ("heatmaps", lambda: _method_grid(main["ctx"], plan, out, result)),
        ("per-label heatmaps", multilabel),
        ("temporal heatmaps", recall),
        ("filters", lambda: _filters(main["ctx"], plan, out, result)),
        ("evaluation", lambda: _evaluation(main["ctx"], out, result)),
        ("report", report),
    ]
    timings: dict[str, float] = {}
    bar = tqdm(steps, desc="demo", disable=silent, leave=False)
    for label, step in bar:
        bar.set_postfix_str(label)
        begin = time.perf_counter()
        step()
        timings[label] = round(time.perf_counter() - begin, 2)
    result.seconds = time.perf_counter() - start
    index = out / "index.json"
    atomic_write_json(
        index,
        {
            "xaikit_version": __version__,
            "fast": fast,
            "seed": seed,
            "models": {name: str(folder / name) for name in DEMO_MODELS},
            "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(plan).items()},
            "seconds": {**timings, "total": round(result.seconds, 2)},
            "files": [
                {"what": what, "path": os.path.relpath(path, out)} for what, path in result.files
            ],
        },
    )
    result.add("index of these files", index)
    return result


__all__ = ["DEMO_MODELS", "FAST", "FULL", "DemoPlan", "DemoResult", "missing_models", "run_demo"]
