"""Helpers shared by the CLI commands: loading a model from what the user typed.

Every command that takes ``--model`` adds it with :func:`add_model_argument` (which also adds
``--weights``, ``--pretrained``, ``--model-option`` and, where the command has none of its
own, ``--seed``) and loads it with :func:`load_cli_model`, one resolver for every source.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xaikit.errors import XaikitConfigError, XaikitError

if TYPE_CHECKING:
    from torch import nn

# xaikit.zoo (torch) is imported inside the functions that load a model: every command's
# parser is built with add_model_argument, and `xaikit <command> --help` must not pay for it.

MODEL_HELP = (
    "a reference model name (see `xaikit zoo`; a bare name always means the shipped model, "
    "even where the current folder holds a file of that name: write ./NAME for a local "
    "one), a checkpoint path or folder (.safetensors + card), 'torchvision:<name>', "
    "'timm:<name>', or an architecture name (random weights unless --weights or --pretrained)"
)
WEIGHTS_HELP = (
    "weights for --model: a .safetensors file or a PyTorch state dict (.pth, .pt, .bin, "
    ".ckpt; read with torch.load(weights_only=True): a pickle that would run code is "
    "refused). num_classes is read from the file; for a checkpoint it replaces its weights"
)
PRETRAINED_HELP = (
    "the published weights of a torchvision: model (from the torch hub cache, else "
    "downloaded) or a timm: model (from the Hugging Face cache only, safetensors)"
)
OPTION_HELP = (
    "an architecture option when --model names an architecture, e.g. num_classes=10 or "
    "widths=[16,32] (repeatable)"
)


def add_model_argument(
    parser: argparse.ArgumentParser, *, required: bool = True, seed: bool = True
) -> None:
    """Add ``--model`` with ``--weights``, ``--pretrained``, ``--model-option`` and ``--seed``.

    Pass ``seed=False`` when the command has a ``--seed`` of its own: its value then seeds
    random weights too.
    """
    group = parser.add_argument_group("model and weights")
    group.add_argument("--model", "-m", required=required, metavar="M", help=MODEL_HELP)
    group.add_argument("--weights", metavar="FILE", help=WEIGHTS_HELP)
    group.add_argument("--pretrained", action="store_true", help=PRETRAINED_HELP)
    group.add_argument(
        "--model-option", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP
    )
    if seed:
        group.add_argument(
            "--seed", type=int, default=0, help="seed of random weights (default: 0)"
        )


def parse_options(pairs: Sequence[str], flag: str = "--model-option") -> dict[str, Any]:
    """``["num_classes=10", "widths=[16,32]"]`` -> ``{"num_classes": 10, "widths": [16, 32]}``
    (values are Python literals, else strings)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise XaikitConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return options


def is_plain_checkpoint(args: argparse.Namespace) -> bool:
    """``--model`` is a checkpoint or reference model loaded as it is (no --weights,
    --pretrained or --model-option)."""
    from xaikit.zoo.sources import source_kind

    return (
        source_kind(str(args.model)) == "checkpoint"
        and getattr(args, "weights", None) is None
        and not getattr(args, "pretrained", False)
        and not getattr(args, "model_option", None)
    )


def load_cli_model(
    spec: str | argparse.Namespace,
    *,
    device: str = "cpu",
    weights: str | None = None,
    pretrained: bool = False,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load what ``--model`` names, with ``--weights`` / ``--pretrained`` / ``--seed`` /
    ``--model-option``: pass the parsed ``args`` (or the spec and the keywords).

    Random weights are announced once on stderr, so nobody reads heatmaps of an untrained
    network by mistake.
    """
    from xaikit.zoo.checkpoint import load_model
    from xaikit.zoo.registry import TIMM_PREFIX, TORCHVISION_PREFIX

    if isinstance(spec, argparse.Namespace):
        args = spec
        spec = str(args.model)
        weights = getattr(args, "weights", None)
        pretrained = bool(getattr(args, "pretrained", False))
        seed = int(getattr(args, "seed", None) or 0)
        options = parse_options(getattr(args, "model_option", None) or [])
    model, card = load_model(
        spec, device=device, weights=weights, pretrained=pretrained, seed=seed, options=options
    )
    if card.get("weights") == "random":
        hint = (
            "--pretrained or --weights FILE"
            if spec.startswith((TORCHVISION_PREFIX, TIMM_PREFIX))
            else "--weights FILE, or a reference model (see `xaikit zoo`)"
        )
        print(
            f"xaikit: note: {spec} has random weights (seed {seed}); pass {hint}", file=sys.stderr
        )
    return model, card


def input_shape(card: dict[str, Any], override: str | None = None) -> tuple[int, ...]:
    """The per-sample input shape: ``--input-shape C,H,W`` or the model card's."""
    from xaikit.zoo.registry import TIMM_PREFIX, TORCHVISION_PREFIX

    if override:
        try:
            shape = tuple(int(v) for v in override.replace("x", ",").split(","))
        except ValueError:
            raise XaikitConfigError(
                f"--input-shape must be integers like 3,64,64; got {override!r}"
            ) from None
        if not shape or min(shape) < 1:
            raise XaikitConfigError(f"--input-shape must be positive integers; got {override!r}")
        return shape
    shape = card.get("input_shape")
    if shape:
        return tuple(int(v) for v in shape)
    if str(card.get("architecture", "")).startswith((TORCHVISION_PREFIX, TIMM_PREFIX)):
        return (3, 224, 224)
    raise XaikitConfigError("the model card has no input_shape; pass --input-shape C,H,W")


DEVICE_HELP = (
    "where the model runs: auto (CUDA when available, else CPU), cpu, cuda, cuda:1 or mps "
    "(default: auto)"
)
SIZE_HELP = "image size the data set's images are resized to (default: the model card's input size)"
DATA_OPTION_HELP = (
    "an option of the --data loader, e.g. seed=3, size=96 or download=True (repeatable)"
)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--device`` (default ``auto``), the same in every command."""
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)


def add_data_option_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-option KEY=VALUE`` (repeatable), the same in every command with ``--data``."""
    parser.add_argument(
        "--data-option", action="append", default=[], metavar="KEY=VALUE", help=DATA_OPTION_HELP
    )


def cli_device(text: str) -> str:
    """``--device`` resolved (``auto`` -> ``cuda`` or ``cpu``); a device this machine does not
    have is a one-line :class:`~xaikit.errors.XaikitConfigError` (exit 2)."""
    from xaikit.distributed import current
    from xaikit.train.loaders import resolve_device

    # Under torchrun, auto / cuda mean this rank's GPU (cuda:<LOCAL_RANK>), else the CPU.
    return str(resolve_device(current().device(text)))


def canonical_methods(names: Sequence[str]) -> list[str]:
    """Method names with aliases (``gradxinput``) replaced by their canonical name
    (``inputxgrad``); a one-line note on stderr says so."""
    from xaikit._names import METHOD_ALIASES

    out = []
    for name in names:
        canonical = METHOD_ALIASES.get(name, name)
        if canonical != name:
            print(f"xaikit: note: {name!r} is another name of {canonical!r}", file=sys.stderr)
        out.append(canonical)
    return out


def card_size(card: dict[str, Any], override: int | None = None) -> int | None:
    """The image size data is resized to: ``--size``, else the card's input size (``None``
    when the card's input is not an image)."""
    if override is not None:
        if override < 1:
            raise XaikitConfigError(f"--size must be a positive number of pixels, got {override}")
        return int(override)
    try:
        shape = input_shape(card)
    except XaikitConfigError:
        return None
    return int(shape[-1]) if len(shape) == 3 else None


def data_options(
    name: str,
    pairs: Sequence[str],
    *,
    size: int | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The loader options of ``--data NAME``: ``defaults`` and ``size`` where its loader
    takes them, then ``--data-option`` pairs on top (an unknown key is an error there)."""
    import inspect

    from xaikit.data import dataset_info

    try:
        loader = dataset_info(name).loader
    except XaikitError:  # an unknown name: the loader says so, with the known ones
        return parse_options(pairs, "--data-option")
    accepted = {
        p.name
        for p in inspect.signature(loader).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    options = {k: v for k, v in (defaults or {}).items() if k in accepted}
    if size is not None and "size" in accepted:
        options["size"] = size
    options.update(parse_options(pairs, "--data-option"))
    return options


#: API wording -> command-line wording, for errors a CLI user sees (the API keeps its own).
CLI_WORDING: tuple[tuple[str, str], ...] = (
    (
        "pass class_names=[...] (the model card's class_names)",
        'give a class index (e.g. --target 3), or add "class_names" to the model card',
    ),
    ("pass data= (--data D)", "pass --data D"),
    ("pass download=True", "pass --data-option download=True"),
    ("or root=... to point", "or --data-option root=DIR to point"),
)


def cli_wording(message: str) -> str:
    """``message`` with Python-argument advice replaced by the flags that do the same."""
    for api, cli in CLI_WORDING:
        message = message.replace(api, cli)
    return message
