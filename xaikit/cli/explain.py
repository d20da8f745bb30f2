"""``xaikit explain``: heatmaps for image files and folders, written as overlays, maps and JSON.

A thin layer over :func:`xaikit.explain.files.explain_files` (which holds the streaming,
the output layout and the resume logic): it parses the arguments, loads the model, prints
one line per bad input on stderr and a summary on stdout, and returns the exit code
(0 all inputs explained, 2 some input was bad or the settings are wrong).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from xaikit._names import JOURNAL, METHODS, RESHAPE_CHOICES, RESULTS, SCORE_CAM_METHODS
from xaikit.cli._common import (
    add_device_argument,
    add_model_argument,
    canonical_methods,
    input_shape,
    load_cli_model,
    parse_options,
)
from xaikit.errors import XaikitConfigError

if TYPE_CHECKING:
    from xaikit.explain.files import TargetSpec

# xaikit.explain (torch, matplotlib) and tqdm are imported inside the functions that use
# them; the help text's names come from xaikit._names, so `xaikit explain --help` is fast.

NAME = "explain"
HELP = "heatmaps for images or folders: overlay PNGs, .npy maps and results.json"

_METHODS_LINE = textwrap.fill(
    "methods: " + ", ".join(METHODS), width=90, subsequent_indent="  ", break_on_hyphens=False
)
EPILOG = f"""\
targets (--target):
  predicted        the predicted class (default)
  positive         every label the model predicts (multi-label: one map per positive label)
  all              every class
  3                a class index;   1,4,7  several classes for every image
  cat              a class name from the model card (names and indices mix: cat,4)

output (--out DIR), one folder per image ("a.png" given directly -> DIR/a.png/;
an image in a folder "imgs" given as input -> DIR/imgs/<path inside imgs>/):
  <method>.<target>.png          heatmap over the image at the image's original size
  <method>.<target>.figure.png   the same titled "name (p=0.97) — method", with a colour bar
  <method>.<target>.npy          float32 (H, W) map in [0, 1] at the model's input size
  <method>.<target>.raw.npy      float32 unnormalized signed map (at the layer's resolution
                                 for CAM methods, before the ReLU)
  {RESULTS}                   per image: source, targets (index, name, score, probability),
                                 degenerate flags, files; "errors"; the run's settings
  {JOURNAL}                  the same, one line per image as it finishes (survives a kill)
<target> is "<index>-<name>", or "<index>" when the model has no class names.
File and folder names made from image or class names are safe (no "/", control characters
or leading dots; bytes that are not UTF-8 become "_") and at most 100 bytes (longer names
are cut and end with a hash); {RESULTS} keeps the full names (a non-UTF-8 byte as \\xNN,
with "source_bytes": the path's bytes in hex). Class names must be strings or numbers, of
at most 1,000 characters.

Images stream in batches (--batch-size): each image's files are written, atomically, as
soon as its batch is done. After a crash, rerun with --resume to skip the images done.
Bad files are listed on stderr and under "errors" in {RESULTS}; the others are processed.

Several processes: torchrun --nproc-per-node N -m xaikit explain ... splits the inputs over
N ranks (GPUs or CPU processes); the outputs are those of one process, and --resume works
with any number of ranks (see README, "Distributed runs").

exit codes: 0 every input explained; 2 a bad input file or bad settings; 1 internal error.
{_METHODS_LINE}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files (PNG, JPEG, BMP, TIFF, WebP, GIF) and folders (searched recursively)",
    )
    add_model_argument(parser)
    parser.add_argument(
        "--method",
        default="gradcam",
        metavar="METHOD[,METHOD...]",
        help="heatmap method, or several separated by commas (default: gradcam)",
    )
    parser.add_argument(
        "--target",
        "-t",
        default="predicted",
        metavar="T",
        help="what to explain: predicted, positive, all, an index, indices 1,4 or a class "
        "name (default: predicted; see below)",
    )
    parser.add_argument(
        "--layer",
        "-l",
        default="auto",
        metavar="L",
        help="layer for CAM methods (see `xaikit layers`; default: auto, the last layer whose "
        "output is a map of the image and reaches the scores)",
    )
    parser.add_argument(
        "--reshape",
        default="auto",
        choices=RESHAPE_CHOICES,
        help="how the layer's output is read as a map: nchw (CNNs), nhwc (channels last: "
        "Swin, MambaOut), tokens (ViT-family (N, P+H*W, C), prefix tokens dropped); "
        "default: auto, from the shape and the model's patch grid",
    )
    parser.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the methods, as explain(..., KEY=VALUE) takes it (repeatable), e.g. "
        "composite=epsilon-gamma-box (lrp), steps=64 (ig), segments=100 (lime, kernelshap), "
        "aug_smooth=True (CAMs); `xaikit methods` lists the methods",
    )
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--batch-size", type=int, default=16, metavar="B", help="images per batch (default: 16)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"skip images that {JOURNAL} in --out records as done with all files present "
        "inside --out at their recorded sizes (anything else is explained again)",
    )
    parser.add_argument(
        "--score",
        choices=("logit", "prob"),
        default="logit",
        help="the score explained: the logit (default) or the probability",
    )
    parser.add_argument("--cmap", default="jet", help="matplotlib colormap (default: jet)")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="weight of the heatmap colours (default: 0.5)"
    )
    parser.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="model input shape; default: the model card's (224x224 RGB for torchvision)",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="S",
        help="image side the model is fed (S x S, the card's channels); overrides the card",
    )
    parser.add_argument(
        "--no-figure",
        action="store_true",
        help="skip the titled figures with colour bars (faster for large folders)",
    )
    parser.add_argument(
        "--sign",
        choices=("auto", "absolute", "positive", "all"),
        default="auto",
        help="how gradient-method PNGs draw the raw map, clipped at its 99th percentile: "
        "auto/absolute |a|, positive max(a, 0) (sequential colormap), all signed (diverging, "
        "0 at the centre); CAM methods and the .npy files are unaffected (default: auto)",
    )
    add_device_argument(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="run even when the estimate (files, bytes) is over the limits (more than 1,000 "
        "files or 200 MB; see xaikit.estimates)",
    )


def parse_methods(text: str) -> list[str]:
    """``"gradcam,layercam"`` -> ``["gradcam", "layercam"]`` (aliases such as ``gradxinput``
    become their canonical name, with a note)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise XaikitConfigError(f"--method is empty; choose from {', '.join(METHODS)}")
    return canonical_methods(names)


def parse_target(text: str) -> TargetSpec:
    """``--target`` text -> a target for :func:`explain_files`.

    ``predicted`` / ``positive`` / ``all`` stay keywords, ``"3"`` becomes the index 3, a
    comma list becomes a list of indices and names (those classes for every image), anything
    else is a class name looked up in the model card's ``class_names``.
    """
    from xaikit.explain.targets import KEYWORDS

    text = text.strip()
    if not text:
        raise XaikitConfigError(
            "--target is empty; use predicted, positive, all, an index or a class name"
        )
    if "," in text:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise XaikitConfigError(f"--target {text!r} has an empty entry; e.g. 1,4,7")
        keywords = [part for part in parts if part in KEYWORDS]
        if keywords:
            raise XaikitConfigError(
                f"--target {text!r}: the keyword {keywords[0]!r} cannot be combined with other "
                f"targets; give one keyword ({', '.join(KEYWORDS)}) alone, or a list of class "
                "indices and names such as 1,4,7"
            )
        return [_index_or_name(part) for part in parts]
    if text in KEYWORDS:
        return text
    return _index_or_name(text)


def _index_or_name(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _model_info(spec: str, card: dict[str, Any]) -> dict[str, Any]:
    info = {
        "model": spec,
        "architecture": card.get("architecture"),
        "task": card.get("task"),
        "weights": card.get("weights", "trained"),
        "weights_sha256": card.get("weights_sha256"),
    }
    if card.get("source"):
        # The file actually read (absolute path, SHA-256): results.json's run.model_source.
        info["model_source"] = dict(card["source"])
    return info


def _report(source: str, reason: str) -> None:
    from tqdm.auto import tqdm  # loaded already by the run; write() keeps progress bars intact

    from xaikit.names import display

    tqdm.write(f"xaikit: error: {display(reason)}", file=sys.stderr)


def _class_count(model: Any, card: dict[str, Any], shape: tuple[int, ...]) -> int:
    """The model's number of outputs: the card's ``num_classes`` or class names (checked by
    :func:`_run`), else one forward pass on zeros."""
    if card.get("num_classes"):
        return int(card["num_classes"])
    if card.get("class_names"):
        return len(card["class_names"])
    import torch

    from xaikit.explain.state import model_device

    with torch.no_grad():
        return int(model(torch.zeros(1, *shape, device=model_device(model))).shape[-1])


def _scorecam_estimate(
    args: argparse.Namespace,
    model: Any,
    shape: tuple[int, ...],
    masked: list[str],
    images: int,
    estimate: Any,
) -> Any:
    """``estimate`` with Score-CAM's masked batches and a time from one timed masked batch
    (one forward pass of ``scorecam.DEFAULT_BATCH_SIZE`` inputs); unchanged when the layer
    cannot be probed (the run itself then reports why)."""
    import dataclasses
    import time

    import torch

    from xaikit.estimates import scorecam_batches
    from xaikit.explain.layers import resolve_layer
    from xaikit.explain.scorecam import DEFAULT_BATCH_SIZE
    from xaikit.explain.state import model_device

    device = model_device(model)
    seen: list[tuple[int, ...]] = []
    try:
        example = torch.zeros(1, *shape, device=device)
        module = resolve_layer(model, args.layer, example)[1]
        hook = module.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
        try:
            with torch.no_grad():
                model(example)
        finally:
            hook.remove()
        layer_shape = seen[0]
        nchw = len(layer_shape) == 4 and args.reshape in ("auto", "nchw")
        channels = layer_shape[1] if nchw else layer_shape[-1]
        batches = 0
        for name in masked:
            per_image = channels if name == "scorecam" else max(1, channels // 8)
            batches += scorecam_batches(images, per_image, DEFAULT_BATCH_SIZE, args.batch_size)
        probe = torch.zeros(min(DEFAULT_BATCH_SIZE, channels), *shape, device=device)
        start = time.perf_counter()
        with torch.no_grad():
            model(probe)
        seconds = batches * (time.perf_counter() - start)
    except Exception:  # an estimate must never stop the run
        return estimate
    return dataclasses.replace(
        estimate, seconds=seconds, note=f"score-cam: {batches} masked batches"
    )


def _refuse_large(
    args: argparse.Namespace,
    model: Any,
    card: dict[str, Any],
    shape: tuple[int, ...],
    methods: list[str],
    target: Any,
) -> bool:
    """Print the run's estimate (maps, files, bytes) on stderr; ``True`` (after one line)
    when it is over the limits of :mod:`xaikit.estimates` and ``--yes`` was not given."""
    from xaikit.estimates import explain_estimate
    from xaikit.explain.files import collect_images

    images = sum(1 for s in collect_images(args.inputs, exclude=args.out) if s.problem is None)
    if target == "all":
        targets = _class_count(model, card, shape)
    elif isinstance(target, list):
        targets = len(target)
    else:
        targets = 1  # predicted, one class; positive: at least one
    pixels = 1
    for side in shape[1:]:
        pixels *= int(side)
    estimate = explain_estimate(
        images, targets, len(methods), figures=not args.no_figure, input_pixels=pixels
    )
    masked = [m for m in methods if m in SCORE_CAM_METHODS]
    if masked and images:
        estimate = _scorecam_estimate(args, model, shape, masked, images, estimate)
    refusal = estimate.refusal(args.yes, "or explain fewer classes (--target) or images")
    if refusal is not None or estimate.notable():
        print(estimate.line(), file=sys.stderr)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return True
    return False


def run(args: argparse.Namespace) -> int:
    """Refuse an unusable ``--out`` and hold its lock, before any work; then run."""
    from xaikit.explain.files import check_out_of_inputs
    from xaikit.io import check_out, lock_out

    check_out_of_inputs(args.inputs, args.out)
    check_out(args.out)
    with lock_out(args.out, "explain"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from xaikit.distributed import current
    from xaikit.explain.files import explain_files
    from xaikit.names import check_class_names, display
    from xaikit.train.loaders import resolve_device

    methods = parse_methods(args.method)
    target = parse_target(args.target)
    device = resolve_device(args.device)
    model, card = load_cli_model(args, device=str(device))
    # Class names name files and figure titles: strings (numbers read as text), at most
    # 1,000 characters each; anything else is refused here in one line (xaikit.names).
    card = {**card, "class_names": check_class_names(card.get("class_names"))}
    shape = input_shape(card, args.input_shape)
    if args.size is not None:
        if args.size < 1:
            raise XaikitConfigError(f"--size must be a positive integer, got {args.size}")
        shape = (shape[0], *([args.size] * (len(shape) - 1)))
    refused = _refuse_large(args, model, card, shape, methods, target)
    # Under torchrun every rank times its own probe; rank 0's decision (the one printed)
    # holds for all, so no rank goes on while another stops.
    if current().agree(refused)[0]:
        return 2
    summary = explain_files(
        model,
        args.inputs,
        args.out,
        method=methods,
        target=target,
        layer=args.layer,
        reshape=args.reshape,
        score=args.score,
        input_shape=shape,
        normalization=card.get("normalization"),
        class_names=card.get("class_names"),
        batch_size=args.batch_size,
        resume=args.resume,
        cmap=args.cmap,
        alpha=args.alpha,
        figures=not args.no_figure,
        sign=args.sign,
        model_info=_model_info(args.model, card),
        quiet=args.quiet,
        on_error=_report,
        options=parse_options(args.method_option, "--method-option"),
    )
    results = display(str(summary.results))  # printable whatever the bytes of --out
    for text in summary.warnings:
        print(f"xaikit: warning: {display(text)}", file=sys.stderr)
    if summary.degenerate:
        print(
            f"xaikit: warning: {summary.degenerate} map(s) were constant (no evidence at this "
            f"layer or target); saved as zeros and flagged 'degenerate' in {results}",
            file=sys.stderr,
        )
    done = f"explained {summary.explained} image(s)"
    if summary.skipped:
        done += f", skipped {summary.skipped} already done"
    if summary.errors:
        done += f", {len(summary.errors)} bad input(s) listed under 'errors'"
    print(f"{done}; results in {results}")
    return 2 if summary.errors else 0
