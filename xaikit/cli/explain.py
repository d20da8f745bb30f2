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

from xaikit._names import JOURNAL, METHODS, RESHAPE_CHOICES, RESULTS
from xaikit.cli._common import add_model_argument, input_shape, load_cli_model
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

Images stream in batches (--batch-size): each image's files are written, atomically, as
soon as its batch is done. After a crash, rerun with --resume to skip the images done.
Bad files are listed on stderr and under "errors" in {RESULTS}; the others are processed.

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
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--batch-size", type=int, default=16, metavar="B", help="images per batch (default: 16)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"skip images that {JOURNAL} in --out records as done with all files present",
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
        "--no-figure",
        action="store_true",
        help="skip the titled figures with colour bars (faster for large folders)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def parse_methods(text: str) -> list[str]:
    """``"gradcam,layercam"`` -> ``["gradcam", "layercam"]``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise XaikitConfigError(f"--method is empty; choose from {', '.join(METHODS)}")
    return names


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

    tqdm.write(f"xaikit: error: {reason}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from xaikit.explain.files import explain_files
    from xaikit.train.loaders import resolve_device

    methods = parse_methods(args.method)
    target = parse_target(args.target)
    device = resolve_device(args.device)
    model, card = load_cli_model(args, device=str(device))
    shape = input_shape(card, args.input_shape)
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
        model_info=_model_info(args.model, card),
        quiet=args.quiet,
        on_error=_report,
    )
    for text in summary.warnings:
        print(f"xaikit: warning: {text}", file=sys.stderr)
    if summary.degenerate:
        print(
            f"xaikit: warning: {summary.degenerate} map(s) were constant (no evidence at this "
            f"layer or target); saved as zeros and flagged 'degenerate' in {summary.results}",
            file=sys.stderr,
        )
    done = f"explained {summary.explained} image(s)"
    if summary.skipped:
        done += f", skipped {summary.skipped} already done"
    if summary.errors:
        done += f", {len(summary.errors)} bad input(s) listed under 'errors'"
    print(f"{done}; results in {summary.results}")
    return 2 if summary.errors else 0
