"""The closed-form size limits of zoo models, in a module that imports neither torch nor numpy.

:mod:`xaikit.zoo.limits` re-exports everything here and adds the meta-device counts of
torchvision and timm models. Living outside ``xaikit.zoo`` (whose ``__init__`` imports
torch), these checks also run before torch is imported: the command line refuses a zoo
checkpoint whose card asks for a huge model (:func:`precheck_checkpoint`) in a process that
never grows past a bare interpreter's size, where ``import torch`` alone takes ~640 MB.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xaikit.errors import CheckpointError, XaikitConfigError

DEFAULT_MAX_PARAMS = 500_000_000
MAX_PARAMS_ENV = "XAIKIT_MAX_PARAMS"
MAX_ACTIVATION_BYTES = 4 * 2**30  # float32 activations of one input
MAX_CLASSES = 1_000_000
MAX_KERNEL_SIZE = 63
MAX_DEPTH = 1_000  # blocks_per_stage, convs_per_stage, num_layers
MAX_INPUT_SIDE = 4096
MAX_INPUT_ELEMENTS = 64 * 2**20
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def max_params() -> int:
    """The parameter limit: ``XAIKIT_MAX_PARAMS`` when set, else :data:`DEFAULT_MAX_PARAMS`."""
    raw = os.environ.get(MAX_PARAMS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PARAMS
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise XaikitConfigError(f"{MAX_PARAMS_ENV} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise XaikitConfigError(f"{MAX_PARAMS_ENV} must be positive, got {raw!r}")
    return value


def _is_int(value: Any) -> bool:
    # numpy's bool_ is no numbers.Integral; Python's bool is one, and is refused here.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(field: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or one line naming ``field`` and the type."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        upper = f" <= {high:,}" if high is not None else ""
        raise XaikitConfigError(f"{field} must be an int >= {low}{upper}, got {value!r}")
    return int(value)


def check_widths(value: Any) -> tuple[int, ...]:
    """``widths`` as a tuple of positive ints (a list or tuple; a string is refused)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise XaikitConfigError(f"widths must be a list of positive ints, got {value!r}")
    if not value or not all(_is_int(w) and w >= 1 for w in value):
        raise XaikitConfigError(f"widths must be a list of positive ints, got {list(value)!r}")
    return tuple(value)


def check_input_shape(value: Any, field: str = "input_shape") -> list[int] | None:
    """A card's ``input_shape``: ``None`` or 2 to 4 positive ints, each side at most
    :data:`MAX_INPUT_SIDE` and :data:`MAX_INPUT_ELEMENTS` elements in all."""
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not 2 <= len(value) <= 4
        or not all(_is_int(v) and v >= 1 for v in value)
    ):
        raise XaikitConfigError(f"{field} must be a list of 2 to 4 positive ints, got {value!r}")
    if max(value) > MAX_INPUT_SIDE:
        raise XaikitConfigError(
            f"{field} {list(value)} has a side of {max(value):,}, past the limit of "
            f"{MAX_INPUT_SIDE} per side"
        )
    elements = math.prod(value)
    if elements > MAX_INPUT_ELEMENTS:
        raise XaikitConfigError(
            f"{field} {list(value)} has {elements:,} elements, past the limit of "
            f"{MAX_INPUT_ELEMENTS:,}"
        )
    return list(value)


# -- closed-form counts ----------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, dims: int, bias: bool) -> int:
    return cout * cin * k**dims + (cout if bias else 0)


def _outputs(num_classes: int, task: str) -> int:
    return 1 if task == "binary" else num_classes


def _simple_cnn(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any], dims: int):
    widths = cfg.get("widths", (32, 64, 128))
    k = cfg.get("kernel_size", 5 if dims == 1 else 3)
    size = cfg.get("input_size", 40 if dims == 1 else 32)
    bn = bool(cfg.get("batchnorm", True))
    pools = cfg.get("pools")
    pools = len(widths) - 1 if pools is None or not _is_int(pools) else pools
    params, acts, channels = 0, 0, in_channels
    for i, width in enumerate(widths, start=1):
        params += _conv(channels, width, k, dims, not bn) + (2 * width if bn else 0)
        acts += 3 * width * size**dims
        if i <= pools and size >= 4:
            size //= 2
        channels = width
    return params + channels * _outputs(num_classes, task) + _outputs(num_classes, task), acts


def _vgg_small(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any]):
    widths = cfg.get("widths", (32, 64, 128))
    convs = cfg.get("convs_per_stage", 2)
    size = cfg.get("input_size", 32)
    bn = bool(cfg.get("batchnorm", True))
    params, acts, channels = 0, 0, in_channels
    for s, width in enumerate(widths, start=1):
        for _ in range(convs):
            params += _conv(channels, width, 3, 2, not bn) + (2 * width if bn else 0)
            acts += 3 * width * size**2
            channels = width
        if s < len(widths) and size >= 4:
            size //= 2
    return params + channels * _outputs(num_classes, task) + _outputs(num_classes, task), acts


def _resnet_small(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any]):
    widths = cfg.get("widths", (16, 32, 64))
    blocks = cfg.get("blocks_per_stage", 3)
    size = cfg.get("input_size", 32)
    bn = bool(cfg.get("batchnorm", True))
    norm = 2 if bn else 0
    large = size >= 128
    params = _conv(in_channels, widths[0], 3, 2, not bn) + norm * widths[0]
    size = size // 4 if large else size
    acts = 3 * widths[0] * size**2
    channels = widths[0]
    for s, width in enumerate(widths, start=1):
        for b in range(blocks):
            stride = 2 if (s > 1 and b == 0 and size >= 4) else 1
            params += _conv(channels, width, 3, 2, not bn) + norm * width
            params += _conv(width, width, 3, 2, not bn) + norm * width
            if stride != 1 or channels != width:
                params += _conv(channels, width, 1, 2, False) + norm * width
            size //= stride
            acts += 7 * width * size**2
            channels = width
    return params + channels * _outputs(num_classes, task) + _outputs(num_classes, task), acts


def _recurrent(num_classes: int, task: str, in_channels: int, cfg: dict[str, Any], cell: str):
    hidden = cfg.get("hidden_size", 64)
    layers = cfg.get("num_layers", 1)
    dirs = 2 if cfg.get("bidirectional", False) else 1
    gates = _GATES.get(cell, 4)
    params, features = 0, in_channels
    for _ in range(layers):
        params += dirs * gates * hidden * (features + hidden + 2)
        features = hidden * dirs
    return params + features * _outputs(num_classes, task) + _outputs(num_classes, task), 0


def _check_zoo_types(num_classes: Any, in_channels: Any, config: dict[str, Any]) -> None:
    check_int("num_classes", num_classes, 1, MAX_CLASSES)
    check_int("in_channels", in_channels, 1, 100_000)
    if "widths" in config:
        check_widths(config["widths"])
    if "kernel_size" in config:
        check_int("kernel_size", config["kernel_size"], 1, MAX_KERNEL_SIZE)
    if "input_size" in config:
        check_int("input_size", config["input_size"], 1, MAX_INPUT_SIDE)
    for field in ("blocks_per_stage", "convs_per_stage", "num_layers"):
        if field in config:
            check_int(field, config[field], 1, MAX_DEPTH)
    if "hidden_size" in config:
        check_int("hidden_size", config["hidden_size"], 1, 1_000_000)


def estimate_zoo(
    name: str, num_classes: int, task: str, in_channels: int, config: dict[str, Any]
) -> tuple[int, int] | None:
    """``(parameters, activation elements of one input)`` of a zoo architecture from its
    options alone (after checking their types); ``None`` for an architecture without a
    formula (a user's registered model)."""
    _check_zoo_types(num_classes, in_channels, config)
    if name in ("simple_cnn", "simple_cnn1d"):
        return _simple_cnn(num_classes, task, in_channels, config, 1 if name[-2:] == "1d" else 2)
    if name == "vgg_small":
        return _vgg_small(num_classes, task, in_channels, config)
    if name == "resnet_small":
        return _resnet_small(num_classes, task, in_channels, config)
    if name in _GATES:
        return _recurrent(num_classes, task, in_channels, config, name)
    return None


def _refuse_params(name: str, params: int, field: str) -> None:
    limit = max_params()
    if params > limit:
        raise XaikitConfigError(
            f"{name}: {field} give about {params:,} parameters ({params * 4 / 2**30:.1f} GiB), "
            f"past the limit of {limit:,} (raise it with {MAX_PARAMS_ENV})"
        )


def check_zoo_limits(
    name: str, num_classes: Any, task: str, in_channels: Any, config: dict[str, Any]
) -> None:
    """Refuse a zoo configuration whose parameters or activations are past the limits."""
    estimate = estimate_zoo(name, num_classes, task, in_channels, config)
    if estimate is None:
        return
    params, acts = estimate
    fields = [f for f in ("widths", "kernel_size", "blocks_per_stage", "convs_per_stage",
                          "hidden_size", "num_layers") if f in config]  # fmt: skip
    _refuse_params(name, params, "/".join(["num_classes", *fields]))
    if acts * 4 > MAX_ACTIVATION_BYTES:
        raise XaikitConfigError(
            f"{name}: widths/input_size give about {acts * 4 / 2**30:.1f} GiB of activations "
            f"for one input, past the limit of {MAX_ACTIVATION_BYTES / 2**30:.0f} GiB"
        )


#: The zoo architectures :func:`estimate_zoo` has a formula for.
ZOO_FORMULAS: tuple[str, ...] = (
    "simple_cnn", "simple_cnn1d", "vgg_small", "resnet_small", *_GATES,
)  # fmt: skip


def is_bare_name(name_or_path: str | os.PathLike[str]) -> bool:
    """True for a plain name such as ``"digits-cnn"``: no path separator and no suffix.

    Only such a name can mean a reference model; ``"./digits-cnn"``, ``"dir/m"`` and
    ``"m.safetensors"`` are always paths. The test is on the text: ``Path("./m")`` prints as
    ``"m"``, so it is a bare name too.
    """
    text = os.fspath(name_or_path)
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        bool(text)
        and text not in (".", "..")
        and not any(sep in text for sep in separators)
        and Path(text).suffix == ""
    )


def _card_of(spec: str) -> tuple[Path, Path] | None:
    """``(weights, card)`` paths a checkpoint path would load, as
    :func:`xaikit.zoo.checkpoint.resolve_checkpoint` finds them; ``None`` when unsure."""
    raw = Path(spec)
    if raw.is_dir():
        candidates = sorted(raw.glob("*.safetensors"))
        preferred = [p for p in candidates if p.stem in ("best", "model")]
        if not (preferred or len(candidates) == 1):
            return None
        weights = (preferred or candidates)[0]
    else:
        base = raw.with_suffix("") if raw.suffix in (".safetensors", ".json") else raw
        weights = base.with_name(base.name + ".safetensors")
    card = weights.with_suffix(".json")
    return (weights, card) if card.is_file() else None


def precheck_checkpoint(spec: str) -> None:
    """Refuse a zoo checkpoint whose card asks for a model past the limits, before torch is
    imported. Anything this cannot judge (a reference name, torchvision / timm, a card that
    does not read) is left to the full loader, which checks it again and reports it."""
    if not spec or spec.startswith(("torchvision:", "timm:")):
        return
    found = None
    if is_bare_name(spec):  # a reference model first, whatever the current folder holds
        folder = os.environ.get("XAIKIT_MODELS_DIR") or Path(__file__).resolve().parent / "models"
        shipped = Path(folder) / f"{spec}.safetensors"
        if shipped.exists():
            found = (shipped, shipped.with_suffix(".json"))
    if found is None:
        found = _card_of(spec)
    if found is None:
        return
    weights, card_path = found
    from xaikit.io import read_document

    try:
        card = read_document(card_path, what="model card", error=CheckpointError)
    except CheckpointError:
        return
    if not isinstance(card, dict) or not isinstance(card.get("config"), dict):
        return
    architecture = card.get("architecture")
    if architecture not in ZOO_FORMULAS:
        return
    config = dict(card["config"])
    num_classes = config.pop("num_classes", 10)
    task = config.pop("task", "multiclass")
    in_channels = config.pop("in_channels", 3)
    try:
        check_zoo_limits(str(architecture), num_classes, str(task), in_channels, config)
    except XaikitConfigError as err:
        # The words of the full loader (xaikit.zoo.checkpoint.load_model), so a refusal reads
        # the same whichever check met it first.
        raise CheckpointError(
            f"{weights}: the model card describes an architecture xaikit cannot build ({err})"
        ) from None
