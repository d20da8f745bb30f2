"""Weights files, read without running code: safetensors, or a PyTorch state dict.

A user's weights come as ``.safetensors`` or as a ``torch.save`` file (``.pth``, ``.pt``,
``.bin``, ``.ckpt``). The format is told by the file's bytes, not its name. A ``torch.save``
file is a pickle, and unpickling can run any code, so it is read only with
``torch.load(path, map_location="cpu", weights_only=True)``: PyTorch's restricted unpickler,
which builds tensors and plain containers and refuses every other import. Nothing in xaikit
reads a pickle any other way.

After reading, the usual wrappings are taken off (``{"state_dict": ...}``, ``{"model": ...}``,
``{"model_state_dict": ...}``, ``{"ema": ...}``, the ``module.`` prefix of DDP and the
``_orig_mod.`` of ``torch.compile``) and what is left must be names -> tensors.
:func:`load_state_into` then loads it strictly, naming the keys that do not fit.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xaikit.errors import CheckpointError
from xaikit.io import open_regular
from xaikit.zoo.checkpoint import load_weights

#: Extensions of ``torch.save`` state dicts (the content decides the format, not these).
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
#: Keys a training script wraps a state dict in, most specific first. The trained weights
#: win over an EMA copy when a file holds both.
WRAPPER_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "ema",
    "model_ema",
    "state_dict_ema",
    "ema_state_dict",
)
#: Prefixes every key carries when the model was wrapped: DDP / DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_DEPTH = 4
_SHOW = 3  # key names shown in an error, before "..."


@dataclass(frozen=True)
class WeightsFile:
    """The tensors of a weights file and where they came from."""

    path: Path
    state: dict[str, torch.Tensor]
    sha256: str
    format: str  # "safetensors" or "torch"
    inner_key: str | None  # the wrapping taken off, e.g. "state_dict" or "model.ema"

    @property
    def label(self) -> str:
        """What a model card records as ``weights``: ``"file:<path>"``."""
        return f"file:{self.path}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file is an 8-byte little-endian header length, then a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return length > 1


def read_weights_file(path: str | os.PathLike[str]) -> WeightsFile:
    """Read a safetensors file or a PyTorch state dict, never running code.

    Args:
        path: the file. Its bytes decide the format: safetensors, else a ``torch.save``
            file read with ``torch.load(..., weights_only=True)``.

    Returns:
        the unwrapped state dict (names -> tensors) with the file's SHA-256.

    Raises:
        CheckpointError: the file is missing, damaged, a pickle that would import code
            (its code is not run), or does not hold a state dict of tensors.
    """
    file = Path(path)
    if not file.exists() and not file.is_symlink():
        raise CheckpointError(f"{file}: weights file not found")
    # Opened without blocking and only as a regular file: a FIFO would hang the read and
    # /dev/zero (or a symlink to it) would be read until memory runs out.
    fd = open_regular(file, what="weights file", error=CheckpointError)
    with os.fdopen(fd, "rb") as handle:
        head = handle.read(9)
    if not head:
        raise CheckpointError(f"{file}: the weights file is empty")
    if _is_safetensors(head):
        loaded: Any = load_weights(file)
        fmt = "safetensors"
    else:
        loaded = _torch_load(file)
        fmt = "torch"
    state, inner = unwrap_state_dict(loaded, str(file))
    return WeightsFile(file, state, file_sha256(file), fmt, inner)


def _torch_load(file: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # "Detected pickle protocol 4 ...": noise about files we refuse or read anyway.
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{file}: refused: {_refusal(str(err))}") from None
    except Exception as err:  # any other failure of the parser means a damaged or foreign file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointError(
            f"{file}: not a safetensors file nor a PyTorch state dict, or truncated ({first})"
        ) from None


def _refusal(message: str) -> str:
    """torch's many-line weights-only refusal -> the one reason that matters."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    reason = (
        f"it would import {found.group(1)}"
        if found
        else "it holds objects other than tensors and plain containers"
    )
    return (
        f"{reason}; a pickle can run code, so xaikit reads only tensors from it "
        "(torch.load weights_only=True) and ran nothing; save a plain state_dict() or "
        "safetensors instead"
    )


def _tensor_map(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(
    obj: Any, where: str = "weights"
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Take the usual wrappings off a loaded checkpoint and return ``(state, inner_key)``.

    ``{"state_dict": {...}, "epoch": 3, "optimizer": {...}}`` -> the inner dict, and so on for
    :data:`WRAPPER_KEYS` (a few levels deep); a :data:`WRAPPER_PREFIXES` prefix on every key
    is removed.

    Raises:
        CheckpointError: what is left is not a non-empty mapping of names to tensors.
    """
    path: list[str] = []
    for _ in range(_MAX_DEPTH):
        if _tensor_map(obj):
            break
        if not isinstance(obj, Mapping):
            raise CheckpointError(
                f"{where}: holds a {type(obj).__name__}, not a state dict (names -> tensors)"
            )
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            _refuse_non_tensors(obj, where)
        path.append(key)  # type: ignore[arg-type]
        obj = obj[key]
    else:
        raise CheckpointError(f"{where}: no state dict found within {_MAX_DEPTH} levels")
    state = {k: v.detach() for k, v in obj.items()}
    state = _strip_common(state, WRAPPER_PREFIXES)
    return state, ".".join(path) or None


def _refuse_non_tensors(obj: Mapping[Any, Any], where: str) -> None:
    if not obj:
        raise CheckpointError(f"{where}: the state dict is empty (no tensors)")
    bad = [(k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not bad:  # every value is a tensor, so some key is not a string
        raise CheckpointError(f"{where}: a state dict's keys must be strings")
    key, value = bad[0]
    raise CheckpointError(
        f"{where}: not a state dict: {len(bad)} of {len(obj)} entries are not tensors "
        f"(e.g. {key!r}: {type(value).__name__}) and none of {', '.join(WRAPPER_KEYS[:4])}, "
        "... holds one"
    )


def _strip_common(
    state: dict[str, torch.Tensor], prefixes: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Remove a prefix that every key carries, repeatedly (``module._orig_mod.x`` -> ``x``)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def align_keys(state: dict[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Strip a leading ``name.`` shared by every key when that makes more keys match
    ``expected`` (a Lightning module's ``model.``, a wrapper's ``backbone.``)."""
    wanted = set(expected)
    for _ in range(2):
        heads = {k.split(".", 1)[0] for k in state}
        if len(heads) != 1 or not all("." in k for k in state):
            break
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if len(wanted & stripped.keys()) <= len(wanted & state.keys()):
            break
        state = stripped
    return state


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


def _shape(t: torch.Tensor | torch.Size) -> str:
    return "x".join(str(s) for s in (t.shape if isinstance(t, torch.Tensor) else t)) or "scalar"


def load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch names the keys that do not fit.

    Raises:
        CheckpointError: keys are missing, unexpected, or of another shape. The message
            gives the counts and the first few names (with both shapes for a mismatch).
    """
    expected = model.state_dict()
    state = align_keys(dict(state), expected)
    # BatchNorm fills a num_batches_tracked that an old file lacks: not a real gap.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
    if wrong:
        shown = ", ".join(
            f"{k} (file {_shape(state[k])}, model {_shape(expected[k])})" for k in wrong[:_SHOW]
        )
        problems.append(
            f"{len(wrong)} of another shape: {shown}{', ...' if len(wrong) > _SHOW else ''}"
        )
    if not problems:
        try:
            model.load_state_dict(state, strict=True)
            return
        except RuntimeError as err:
            problems.append(str(err).strip().splitlines()[-1].strip())
    raise CheckpointError(
        f"{where}: the weights do not fit the architecture ({'; '.join(problems)}); "
        "its options (num_classes, widths, ...) must match the file's"
    )


def infer_num_classes(
    model: nn.Module, state: Mapping[str, torch.Tensor], num_classes: int
) -> int | None:
    """The class count of ``state``'s classifier, read off the tensors whose first dimension
    is ``model``'s ``num_classes`` (``fc.weight``, ``head.bias``, ...); ``None`` when the file
    agrees with the model or does not tell one clear count."""
    expected = model.state_dict()
    state = align_keys(dict(state), expected)
    found: set[int] = set()
    for key, want in expected.items():
        have = state.get(key)
        if have is None or want.dim() == 0 or have.dim() != want.dim():
            continue
        # Only the class dimension differs: the tensor belongs to the classifier.
        same_rest = have.shape[1:] == want.shape[1:]
        if want.shape[0] == num_classes and have.shape[0] != num_classes and same_rest:
            found.add(int(have.shape[0]))
    return found.pop() if len(found) == 1 else None
