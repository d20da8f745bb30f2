"""The training state that makes a resumed run continue exactly, stored without pickle.

A checkpoint ``<dir>/last`` is four files:

- ``last.safetensors`` + ``last.json``: the model and its card (:func:`xaikit.zoo.checkpoint.
  save_model`), loadable on its own;
- ``last.train.safetensors``: every tensor of the training state (optimizer moments, RNG
  states);
- ``last.train.json``: everything else (epoch, history, scheduler, early-stopping counters,
  and the skeleton of the optimizer state with a ``{"__tensor__": key}`` in place of each
  tensor), plus the SHA-256 of ``last.safetensors`` so a state never pairs with other
  weights, and ``state_sha256``, the SHA-256 of its own ``state`` as canonical JSON
  (:func:`state_digest`), so a state edited by hand (``"epoch": 1e9``) is refused.

The files of one epoch (``best`` when it improved, and ``last``) are first written into
``<dir>/.staging/`` and then moved into place by :func:`commit_staged`, the staged
``last.train.json`` last: it marks a complete set. A process killed while staging leaves the
previous checkpoint untouched (the incomplete set is discarded); one killed while moving
leaves a complete staged set that the next :func:`load_training_state` (a resume) finishes
moving. So a crash at any point leaves a checkpoint that resumes.

Loading reads JSON and safetensors only; nothing is unpickled. The JSON is checked against
:data:`STATE_SPEC` (a wrong field is one line naming it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xaikit.errors import CheckpointError
from xaikit.io import atomic_path, atomic_write_json, check_regular_file, finite_json, read_document
from xaikit.schema import Int, List, Number, Str, Table, Where, check, show

STATE_FORMAT = "xaikit-train-state/1"
#: The folder, inside a checkpoint directory, where an epoch's files are written before they
#: are moved into place together (see the module docstring).
STAGING = ".staging"


def model_file(stem: Path) -> Path:
    """``<stem>.safetensors``: the weights written by ``save_model(model, stem)``."""
    return stem.with_name(stem.name + ".safetensors")


def state_files(stem: Path) -> tuple[Path, Path]:
    """``(<stem>.train.safetensors, <stem>.train.json)``."""
    return stem.with_name(stem.name + ".train.safetensors"), stem.with_name(
        stem.name + ".train.json"
    )


def checkpoint_stem(path: str | Path) -> Path:
    """The stem of a checkpoint given as its folder (``<dir>/last``), its stem or any of its
    files (``last.safetensors``, ``last.json``, ``last.train.json``)."""
    path = Path(path)
    if path.is_dir():
        return path / "last"
    for suffix in (".train.safetensors", ".train.json", ".safetensors", ".json"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def staging_dir(directory: str | Path) -> Path:
    """``<directory>/.staging``: where :class:`~xaikit.train.Trainer` writes an epoch's
    checkpoint files before :func:`commit_staged` moves them into ``directory``."""
    return Path(directory) / STAGING


def commit_staged(directory: str | Path) -> None:
    """Move a complete staged checkpoint into ``directory``; discard an incomplete one.

    Complete means the staged ``last.train.json`` (written last) exists; it is moved last,
    so a commit cut short is finished by calling this again. Does nothing without a staging
    folder.
    """
    staging = staging_dir(directory)
    if not staging.is_dir():
        return
    marker = state_files(staging / "last")[1]
    if marker.is_file():
        staged = [p for p in staging.iterdir() if p.is_file() and not p.name.startswith(".")]
        for path in sorted(staged, key=lambda p: (p == marker, p.name)):
            os.replace(path, Path(directory) / path.name)
    shutil.rmtree(staging, ignore_errors=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- state trees <-> (JSON, tensors) ------------------------------------------------------


def encode(obj: Any, tensors: dict[str, torch.Tensor], key: str = "") -> Any:
    """A JSON-ready copy of ``obj`` whose tensors are moved into ``tensors``.

    Tuples and dicts with non-string keys (an optimizer's ``state`` is keyed by parameter
    index) are tagged so :func:`decode` rebuilds them with the same types.
    """
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, tensors, f"{key}/{k}") for k, v in obj.items()}
        return {
            "__items__": [
                [encode(k, tensors, f"{key}/k{i}"), encode(v, tensors, f"{key}/{k}")]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(
        f"cannot store {type(obj).__name__} at {key or '/'} in a training checkpoint "
        "(only tensors, numbers, strings, lists and dicts are kept)"
    )


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Invert :func:`encode`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(decode(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {decode(k, tensors): decode(v, tensors) for k, v in obj["__items__"]}
        return {k: decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


def save_training_state(stem: Path, state: dict[str, Any]) -> None:
    """Write ``state`` beside the model saved at ``stem``, bound to it by its SHA-256.

    Call after the model files are written. Each file is written atomically; the JSON goes
    last, so a state that a crash cut short is detected by :func:`load_training_state`.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = encode(state, tensors)
    tensor_path, json_path = state_files(stem)
    with atomic_path(tensor_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": STATE_FORMAT})
    skeleton, _ = finite_json(skeleton)  # what the JSON file will hold, NaN as null
    atomic_write_json(
        json_path,
        {
            "format": STATE_FORMAT,
            "model_sha256": sha256(model_file(stem)),
            "tensors_sha256": sha256(tensor_path),
            "state_sha256": state_digest(skeleton),
            "state": skeleton,
        },
    )


def state_digest(skeleton: Any) -> str:
    """The SHA-256 of ``skeleton`` as canonical JSON (sorted keys, no spaces): a training
    state edited by hand no longer matches the digest saved with it."""
    text = json.dumps(skeleton, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_DIGEST = Where(Str(), lambda v: None if len(v) == 64 else "must be 64 hex digits")
_TENSOR_REF = Table({"__tensor__": Str(nonempty=False)}, required=("__tensor__",))
#: ``last.train.json``: the parts :class:`~xaikit.train.Trainer` reads on resume. The digest
#: catches any edit; these checks name the field of a file whose digest was recomputed.
STATE_SPEC = Table(
    {
        "format": Str(),
        "model_sha256": _DIGEST,
        "tensors_sha256": _DIGEST,
        "state_sha256": _DIGEST,
        "state": Table(
            {
                "epoch": Int(0, 10**9),
                "plan": Table(
                    {"epochs": Int(low=1), "steps_per_epoch": Int(low=0)},
                    required=("epochs", "steps_per_epoch"),
                    optional=True,
                ),
                "recipe": Table(required=("optimizer", "scheduler")),
                "optimizer": Table(),
                "scheduler": Table(optional=True),
                "scaler": Table(optional=True),
                "monitor": Table(
                    {
                        "name": Str(),
                        "best": Number(optional=True),
                        "best_epoch": Int(low=0, optional=True),
                        "bad_epochs": Int(low=0),
                    },
                    required=("name", "best", "best_epoch", "bad_epochs"),
                    extra=True,
                ),
                "history": List(Table({"epoch": Int(low=1)}, required=("epoch",), extra=True)),
                "rng": Table({"sampler": _TENSOR_REF}, required=("sampler",), extra=_TENSOR_REF),
                "input_shape": List(Int(low=1), min_len=1, max_len=4, optional=True),
                # Under torchrun: the number of processes, and every rank's random state
                # (shuffling generator, torch, numpy, python), indexed by rank.
                "world_size": Int(1, 1 << 20, optional=True),
                "ranks": List(
                    Table({"sampler": _TENSOR_REF}, required=("sampler",), extra=True),
                    max_len=1 << 20,
                    optional=True,
                ),
            },
            required=("epoch", "plan", "recipe", "optimizer", "monitor", "history", "rng"),
            extra=True,
        ),
    },
    required=("format", "model_sha256", "tensors_sha256", "state_sha256", "state"),
    extra=True,
)


def _check_epochs(state: dict[str, Any], where: str) -> None:
    """The epoch count agrees with the history and the plan it was trained under."""
    epoch, history, plan = state["epoch"], state["history"], state["plan"]
    if len(history) != epoch:
        raise CheckpointError(
            f"{where}: epoch {epoch} does not match the history of {len(history)} epochs"
        )
    if plan is not None and epoch > plan["epochs"]:
        raise CheckpointError(
            f"{where}: epoch {epoch} is past the {plan['epochs']} epochs the run was planned for"
        )


def load_training_state(stem: Path) -> dict[str, Any]:
    """Read the state saved by :func:`save_training_state` and check it fits the model file.

    A checkpoint whose commit a crash cut short is completed first (:func:`commit_staged`).
    """
    commit_staged(stem.parent)
    tensor_path, json_path = state_files(stem)
    for path in (model_file(stem), tensor_path, json_path):
        if not path.is_file():
            raise CheckpointError(
                f"cannot resume from {stem}: {path.name} is missing (resuming needs a 'last' "
                "checkpoint written by the Trainer)"
            )
    document = read_document(json_path, what="training state", error=CheckpointError)
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{json_path} is not an xaikit training state ({STATE_FORMAT})")
    if "state_sha256" not in document:
        raise CheckpointError(
            f"{json_path}: the training state has no state_sha256 (written by an older "
            "xaikit?); it cannot be checked, so it is not resumed"
        )
    check(document, STATE_SPEC, where=f"{json_path}: training state", error=CheckpointError)
    if state_digest(document["state"]) != document["state_sha256"]:
        raise CheckpointError(
            f"{json_path}: the training state was changed after it was saved (its SHA-256 "
            "differs from state_sha256); resume from an unedited checkpoint"
        )
    _check_epochs(document["state"], f"{json_path}: training state")
    for path in (model_file(stem), tensor_path):
        check_regular_file(path, what="checkpoint file", error=CheckpointError)
    if document["model_sha256"] != sha256(model_file(stem)) or document["tensors_sha256"] != sha256(
        tensor_path
    ):
        raise CheckpointError(
            f"the files of checkpoint {stem} do not belong together (a save was cut short?); "
            "resume from an intact checkpoint"
        )
    try:
        tensors = load_file(str(tensor_path))
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"cannot read the training state at {stem}: {err}") from None
    try:
        return decode(document["state"], tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{json_path}: the training state does not fit its tensors ({show(err)})"
        ) from None


# --- interrupts and random state ----------------------------------------------------------


@contextlib.contextmanager
def defer_keyboard_interrupt() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done, then raise it, so files written together
    are never half-written. Only where Python's default SIGINT handler is active in the main
    thread; a handler the caller installed (one that calls ``Trainer.stop``) stays in charge.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def get_rng_state(device: torch.device, host: bool = False) -> dict[str, Any]:
    """The global RNG states that dropout and unseeded samplers draw from.

    ``{"cpu": ByteTensor, "cuda": ByteTensor (on CUDA)}``; with ``host`` also ``"numpy"``
    (``{"keys": (624,) int64, "pos", "has_gauss", "gauss"}``) and ``"python"`` (``{"version",
    "state": (625,) int64, "gauss"}``): what a rank of a distributed run saves, so that data
    augmentations drawing from numpy or :mod:`random` resume exactly too.
    """
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if host:
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        }
        version, internal, gauss_next = random.getstate()
        state["python"] = {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss_next,
        }
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`get_rng_state` returned (the numpy and python parts when present)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if "numpy" in state:
        saved = state["numpy"]
        keys = saved["keys"].numpy().astype(np.uint32)
        np.random.set_state(
            ("MT19937", keys, int(saved["pos"]), int(saved["has_gauss"]), float(saved["gauss"]))
        )
    if "python" in state:
        saved = state["python"]
        internal = tuple(int(v) for v in saved["state"].tolist())
        random.setstate((int(saved["version"]), internal, saved["gauss"]))


@contextlib.contextmanager
def private_host_rng() -> Iterator[None]:
    """Run the block with numpy's and :mod:`random`'s global states forked (restored after)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextlib.contextmanager
def private_global_rng(device: torch.device) -> Iterator[None]:
    """Run the block with the global RNG forked: the caller's RNG state is restored after."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        yield
