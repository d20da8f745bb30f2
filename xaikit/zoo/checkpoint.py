"""Safe, self-describing checkpoints: weights in safetensors, a JSON model card beside them.

``save_model(model, "runs/a/model")`` writes ``runs/a/model.safetensors`` (tensors only) and
``runs/a/model.json`` (the card: architecture and config, task, class names, input shape,
normalization, training recipe and seed, metrics, xaikit version). Loading parses the
safetensors header and the JSON, rebuilds the architecture from the card through the zoo's
factory and loads the tensors: no pickle is ever read, so a checkpoint cannot run code.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from xaikit._model_limits import is_bare_name
from xaikit._version import __version__
from xaikit.errors import CheckpointError, XaikitConfigError
from xaikit.io import atomic_path, atomic_write_json, check_regular_file, read_document
from xaikit.schema import Int, List, Number, OneOf, Str, Table, Where, check
from xaikit.zoo.heads import get_task
from xaikit.zoo.limits import MAX_CLASSES, check_input_shape
from xaikit.zoo.registry import TORCHVISION_PREFIX, create_model

CARD_FORMAT = "xaikit-model-card"
CARD_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
# A safetensors header larger than this is not a real checkpoint of ours.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


# The reference models ship inside the package (package data), so an installed wheel has them
# wherever it is run from; a source checkout finds the same folder.
PACKAGED_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def shipped_models_dir() -> Path:
    """The folder of the reference models: ``$XAIKIT_MODELS_DIR`` when set, else the
    ``xaikit/models`` folder inside the installed package."""
    env = os.environ.get("XAIKIT_MODELS_DIR")
    if env:
        return Path(env)
    return PACKAGED_MODELS_DIR


def list_shipped_models() -> list[str]:
    """Names of the reference models that ``load_model(name)`` finds (weights and card)."""
    folder = shipped_models_dir()
    if not folder.is_dir():
        return []
    return sorted(
        p.stem for p in folder.glob(f"*{WEIGHTS_SUFFIX}") if p.with_suffix(CARD_SUFFIX).exists()
    )


def _base_path(path: str | os.PathLike[str]) -> Path:
    """``x``, ``x.safetensors`` or ``x.json`` -> ``x`` (the stem both files share)."""
    p = Path(path)
    if p.suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        return p.with_suffix("")
    return p


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _spec_of(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "spec", None)
    if not spec or "name" not in spec:
        raise CheckpointError(
            "this model has no .spec (build it with xaikit.create_model so its architecture "
            "can be written into the model card)"
        )
    return dict(spec)


def save_model(model: nn.Module, path: str | os.PathLike[str], **card: Any) -> Path:
    """Write ``model``'s weights and its model card; returns the ``.safetensors`` path.

    Args:
        model: a model built by :func:`xaikit.create_model` (it carries ``model.spec``).
        path: ``dir/name`` or ``dir/name.safetensors``; ``dir/name.json`` holds the card.
        **card: extra card fields, e.g. ``class_names``, ``input_shape``,
            ``normalization={"mean": [...], "std": [...]}``, ``recipe``, ``seed``,
            ``metrics``. They override the fields derived from the model.

    Both files are written atomically; the card records the weights' SHA-256 so a card and
    weights that do not belong together are caught on load.
    """
    spec = _spec_of(model)
    base = _base_path(path)
    weights_path = base.with_name(base.name + WEIGHTS_SUFFIX)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": CARD_FORMAT})
    task = get_task(model)
    full_card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "architecture": spec.pop("name"),
        "config": spec,
        "task": task.name,
        "num_classes": spec.get("num_classes"),
        "class_names": None,
        "input_shape": None,
        "normalization": None,
        "recipe": None,
        "seed": None,
        "metrics": {},
        "xaikit_version": __version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    full_card.update(card)
    full_card["weights_file"] = weights_path.name
    full_card["weights_sha256"] = _sha256(weights_path)
    atomic_write_json(base.with_name(base.name + CARD_SUFFIX), full_card)
    return weights_path


def _check_normalization(value: Any) -> str | None:
    if isinstance(value, Mapping) and "mean" in value and "std" in value:
        if len(value["mean"]) != len(value["std"]):
            return "must have as many std values as mean values"
        return None
    return "must hold both mean and std"


_NUMBERS = List(Number(), min_len=1, max_len=4096)
#: What :func:`load_model` and the commands read from a card; other fields are kept as they
#: are (a card may carry notes of its own, e.g. ``comparison``).
CARD_SPEC = Table(
    {
        "format": Str(),
        "format_version": Int(low=1, optional=True),
        "architecture": Str(max_len=200),
        "config": Table(),
        "task": Str(optional=True, max_len=100),
        "num_classes": Int(low=1, high=MAX_CLASSES, optional=True),
        "class_names": List(
            OneOf(Str(nonempty=False, max_len=1000), Int()),
            max_len=MAX_CLASSES,
            optional=True,
            describe="a list of class names (strings)",
        ),
        "input_shape": List(Int(low=1), min_len=2, max_len=4, optional=True),
        "normalization": Where(
            Table({"mean": _NUMBERS, "std": List(Number(low=0, low_open=True), min_len=1)}),
            _check_normalization,
            optional=True,
        ),
        "recipe": Table(optional=True),
        "seed": Int(optional=True),
        "epoch": Int(low=0, optional=True),
        "metrics": Table(optional=True),
        "data": Table({"name": Str(), "options": Table(optional=True)}, extra=True, optional=True),
        "selection": Table(optional=True),
        "weights": Str(optional=True),
        "weights_file": Str(optional=True),
        "weights_sha256": Where(
            Str(), lambda v: None if len(v) == 64 else "must be 64 hex digits", optional=True
        ),
        "source": Table(optional=True),
    },
    required=("architecture", "config"),
    extra=True,
)


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the JSON model card beside a checkpoint.

    The card is read as a regular file of at most 16 MiB (see :func:`xaikit.io.read_document`)
    and its fields are checked against :data:`CARD_SPEC`; any failure is one
    :class:`CheckpointError` line naming the field.
    """
    card_path = _base_path(path).with_name(_base_path(path).name + CARD_SUFFIX)
    if not card_path.exists() and not card_path.is_symlink():
        raise CheckpointError(f"{card_path}: model card not found (it sits beside the weights)")
    card = read_document(card_path, what="model card", error=CheckpointError)
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"{card_path}: not an xaikit model card (no format field)")
    for key in ("architecture", "config"):
        if key not in card:
            raise CheckpointError(f"{card_path}: the model card has no {key!r} field")
    check(card, CARD_SPEC, where=f"{card_path}: model card", error=CheckpointError)
    return card


def _check_safetensors_header(path: Path) -> None:
    """Refuse anything that is not a well-formed safetensors file, before parsing it."""
    # A FIFO or /dev/zero would block or never end: only a regular file is opened.
    size = check_regular_file(path, what="weights file", error=CheckpointError)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{path}: this is a pickle or torch.save file, not safetensors; xaikit never "
            "unpickles checkpoints (pickles can run code). Convert it with safetensors first."
        )
    if len(head) < 8:
        raise CheckpointError(f"{path}: file is empty or truncated (no safetensors header)")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > min(size - 8, _MAX_HEADER_BYTES):
        raise CheckpointError(
            f"{path}: not a safetensors file or truncated (header of {header_len} bytes in a "
            f"file of {size} bytes)"
        )


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load the tensors of a ``.safetensors`` file, refusing pickles and damaged files."""
    weights_path = Path(path)
    if not weights_path.exists() and not weights_path.is_symlink():
        raise CheckpointError(f"{weights_path}: checkpoint not found")
    _check_safetensors_header(weights_path)
    try:
        return load_file(str(weights_path))
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{weights_path}: corrupt or truncated safetensors ({err})") from None


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """Return the ``.safetensors`` path for a reference model name or a checkpoint path.

    A bare name of a reference model (no path separator, no suffix, e.g. ``"digits-cnn"``)
    always means the shipped reference model in :func:`shipped_models_dir`, even when the
    current folder holds ``digits-cnn.safetensors`` or a folder ``digits-cnn``: what a name
    loads must not depend on where the command runs. To load such a local file, write it as a
    path: ``"./digits-cnn"``, ``"./digits-cnn.safetensors"`` or ``"runs/digits-cnn"``.

    Anything else is a path: ``dir/name``, ``dir/name.safetensors``, ``dir/name.json`` or a
    folder holding one checkpoint (``best``/``model`` preferred). A bare name that is neither
    a reference model nor an existing path raises :class:`CheckpointError` listing the
    reference models.
    """
    bare = is_bare_name(name_or_path)
    if bare:
        shipped = shipped_models_dir() / f"{os.fspath(name_or_path)}{WEIGHTS_SUFFIX}"
        if shipped.exists():
            return shipped
    raw = Path(name_or_path)
    if raw.is_dir():
        candidates = sorted(raw.glob(f"*{WEIGHTS_SUFFIX}"))
        preferred = [p for p in candidates if p.stem in ("best", "model")]
        if preferred or len(candidates) == 1:
            return (preferred or candidates)[0]
        raise CheckpointError(
            f"{raw}: expected one checkpoint in this folder, found {len(candidates)}"
        )
    base = _base_path(raw)
    weights = base.with_name(base.name + WEIGHTS_SUFFIX)
    if weights.exists():
        return weights
    if raw.exists():
        # The user named a file that is not a .safetensors/.json: inspect it as weights.
        return raw
    if bare:
        known = ", ".join(list_shipped_models()) or "none installed"
        raise CheckpointError(
            f"no reference model or checkpoint named {str(name_or_path)!r} (reference models: "
            f"{known}; or give a path to a .safetensors checkpoint, or 'torchvision:<name>')"
        )
    raise CheckpointError(f"{raw}: checkpoint not found")


def provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """Where a checkpoint's weights were read from: ``{"path": <absolute path>, "sha256": ...}``.

    :func:`load_model` puts this in the returned card as ``card["source"]`` so results can
    say exactly which file produced them (a name like ``"digits-cnn"`` does not). The digest
    is of the file's bytes as they are now, not the one the card records.
    """
    resolved = Path(path).resolve()
    return {"path": str(resolved), "sha256": _sha256(resolved)}


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model by name, with its weights and model card: every source in one call.

    Args:
        name_or_path: a reference model name (``"shapes-multilabel"``), a checkpoint written
            by :func:`save_model` (``dir/model``, ``dir/model.safetensors`` or a folder
            holding one), a zoo architecture (``"simple_cnn"``), ``"torchvision:<name>"`` or
            ``"timm:<name>"`` (see :mod:`xaikit.zoo.sources`).
        device: where to put the model.
        weights: a weights file to load instead: safetensors, or a PyTorch state dict
            (``.pth``/``.pt``/``.bin``/``.ckpt``, read with ``weights_only=True``: a pickle
            that would run code is refused). For an architecture ``num_classes`` is read
            off the file; for a checkpoint the file replaces the checkpoint's weights.
        pretrained: the published weights of a torchvision or timm model.
        seed: the seed random weights are drawn from (the caller's random state is kept).
        options: architecture options for an architecture name (``num_classes``, ...).

    Returns:
        ``(model, card)``: the model in eval mode, and its model card as a dict. The card
        records ``weights`` (``"random"``, ``"pretrained:<enum>"`` or ``"file:<path>"``,
        absent for a checkpoint's own weights), class names, normalization, input shape,
        and ``source`` (``{"path", "sha256"}`` of the weights file read; absent for random).

    Raises:
        CheckpointError: the file is missing, not safetensors (a pickle is refused without
            being read), truncated, or its tensors do not fit the architecture in its card.
        XaikitConfigError: an unknown architecture or option; ``pretrained`` for a model
            without published weights.
    """
    from xaikit.zoo import sources  # sources imports this module
    from xaikit.zoo.state_dicts import load_state_into, read_weights_file

    text = str(name_or_path)
    if weights is not None and pretrained:
        raise XaikitConfigError("give a weights file or ask for pretrained weights, not both")
    if sources.source_kind(text) != "checkpoint":
        model, card = sources.load_source(
            text, weights=weights, pretrained=pretrained, seed=seed, options=options
        )
        return model.to(device).eval(), card
    if pretrained:
        raise XaikitConfigError(
            f"{text} is a checkpoint with its own weights; pretrained weights are for "
            "'torchvision:<name>' and 'timm:<name>' (pass a weights file to replace them)"
        )
    if options:
        raise XaikitConfigError(
            f"architecture options ({', '.join(options)}) are for architecture names; a "
            f"checkpoint's architecture comes from its model card"
        )
    weights_path = resolve_checkpoint(name_or_path)
    override = None
    if weights is None:
        state = load_weights(weights_path)
    else:
        override = read_weights_file(weights)
        state = override.state
    card = read_card(weights_path)
    try:
        check_input_shape(card.get("input_shape"))
    except XaikitConfigError as err:
        raise CheckpointError(f"{weights_path}: model card: {err}") from None
    sha = card.get("weights_sha256")
    if override is None and sha is not None and sha != _sha256(weights_path):
        raise CheckpointError(
            f"{weights_path}: the weights do not match their model card (SHA-256 differs); "
            "the file was changed or belongs to another card"
        )
    config = dict(card["config"])
    if str(card["architecture"]).startswith(TORCHVISION_PREFIX):
        # The weights are the safetensors file's. A card's `weights="DEFAULT"` (recorded for
        # a fine-tuned pretrained model) would fetch the published weights: never rebuild
        # with pretrained weights.
        config.pop("weights", None)
    try:
        with sources.seeded(seed):
            model = create_model(card["architecture"], **config)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"{weights_path}: the model card describes an architecture xaikit cannot build ({err})"
        ) from None
    if override is not None:
        load_state_into(model, state, str(override.path))
        card = {
            **card,
            "weights": override.label,
            "weights_sha256": override.sha256,
            "weights_file": str(override.path),
            "source": {"path": str(override.path.resolve()), "sha256": override.sha256},
        }
        return model.to(device).eval(), card
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
        raise CheckpointError(
            f"{weights_path}: the weights do not fit the architecture in the model card ({detail})"
        ) from None
    card["source"] = provenance(weights_path)  # the file actually read, for results files
    return model.to(device).eval(), card
