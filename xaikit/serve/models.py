"""The models and data the server may use: fixed at start, never chosen by a path.

A :class:`Registry` holds one :class:`ModelEntry` per model id: the command line's
``--model`` values (ids are the text given) and the shipped reference models. The page can
only name an id; an id that is not in the registry is a :class:`KeyError` (404). Each model
is loaded once, on first use, under a lock; its card summary, layer table, data set and
predictions are computed once too.

Inputs the page explains are an **upload** (bytes kept in memory, checked by the image
loader, keyed by their SHA-256) or an **item** of the model's data set (``--data``, else the
data set its card was trained on when that is a built-in one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xaikit.errors import DataError, XaikitConfigError, XaikitError
from xaikit.serve.cache import LRUCache

Loader = Callable[[], tuple[Any, dict[str, Any]]]
#: Items of a data set the gallery shows (and exemplars search), at most.
DEFAULT_ITEMS = 64


def shipped_loader(name: str, device: str = "cpu") -> Loader:
    """A loader of the reference model ``name``."""

    def load() -> tuple[Any, dict[str, Any]]:
        from xaikit.zoo.checkpoint import load_model

        return load_model(name, device=device)

    return load


def _tensor_hash(tensor: Any) -> str:
    array = tensor.detach().cpu().contiguous().numpy()
    digest = hashlib.sha256(str((array.dtype, array.shape)).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:32]


def _state_hash(model: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass
class Prepared:
    """One input ready for one model: the batch of one, its hash and how it was made."""

    x: Any  # (1, *input_shape) tensor on the model's device
    hash: str
    source: dict[str, Any]
    label: Any = None  # the data set's target, when the input is an item
    picture: str | None = None  # the input drawn as a data URI, once it was drawn


@dataclass
class LoadedModel:
    """A loaded model and what the server derived from it."""

    id: str
    origin: str
    model: Any
    card: dict[str, Any]
    hash: str
    input_shape: tuple[int, ...]
    kind: str  # "image" (C, H, W), "signal" (C, L) or "sequence" (T, F)
    recurrent: bool
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    memo: dict[str, Any] = field(default_factory=dict, repr=False)
    # inputs drawn as data URIs, by input hash: another method or target of the same image
    # does not draw it again (about 2 ms at 224 px)
    pictures: LRUCache = field(default_factory=lambda: LRUCache(128, 32 * 1024 * 1024), repr=False)

    @property
    def class_names(self) -> list[str] | None:
        names = self.card.get("class_names")
        return list(names) if names else None

    @property
    def task(self) -> str:
        return str(self.card.get("task") or "multiclass")

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        return self.card.get("normalization") or None

    def class_name(self, index: int) -> str:
        names = self.class_names
        return names[index] if names and 0 <= index < len(names) else str(index)


def _kind(model: Any, shape: tuple[int, ...]) -> tuple[str, bool]:
    from torch import nn

    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    if len(shape) == 3:
        return "image", recurrent
    if recurrent:
        return "sequence", True
    return "signal", False


class ModelEntry:
    """One model id: how to load it, loaded once on first :meth:`get`."""

    def __init__(self, model_id: str, origin: str, loader: Loader) -> None:
        self.id = model_id
        self.origin = origin
        self._loader = loader
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()
        self.loads = 0

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def get(self) -> LoadedModel:
        with self._lock:
            if self._loaded is None:
                from xaikit.cli._common import input_shape

                model, card = self._loader()
                self.loads += 1
                model.eval()
                shape = input_shape(card)
                kind, recurrent = _kind(model, shape)
                sha = card.get("weights_sha256") or (card.get("source") or {}).get("sha256")
                self._loaded = LoadedModel(
                    self.id,
                    self.origin,
                    model,
                    dict(card),
                    str(sha or _state_hash(model))[:32],
                    shape,
                    kind,
                    recurrent,
                )
            return self._loaded


class Registry:
    """Every model the server offers, its data and the uploaded images."""

    def __init__(
        self,
        models: Mapping[str, Loader | tuple[Any, dict[str, Any]]] | Sequence[str] | None = None,
        *,
        data: str | None = None,
        data_options: Sequence[str] = (),
        items: int = DEFAULT_ITEMS,
        shipped: bool = True,
        device: str = "cpu",
        uploads: Any = None,
    ) -> None:
        self.entries: dict[str, ModelEntry] = {}
        given: dict[str, Loader] = {}
        if isinstance(models, Mapping):
            for model_id, value in models.items():
                given[str(model_id)] = value if callable(value) else (lambda v=value: v)
        else:
            for spec in models or ():
                given[str(spec)] = _cli_loader(str(spec), device)
        for model_id, loader in given.items():
            self.entries[model_id] = ModelEntry(model_id, "command line", loader)
        if shipped:
            from xaikit.zoo.checkpoint import list_shipped_models

            for name in list_shipped_models():
                if name not in self.entries:
                    self.entries[name] = ModelEntry(name, "reference", shipped_loader(name, device))
        self.data = data
        self.data_options = list(data_options)
        self.items = max(1, int(items))
        self.uploads = uploads if uploads is not None else LRUCache(64, 128 * 1024 * 1024)
        self._data_lock = threading.Lock()

    # -- models ---------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return list(self.entries)

    def entry(self, model_id: str) -> ModelEntry:
        """The entry of ``model_id``; :class:`KeyError` for any other text (never a path)."""
        if not isinstance(model_id, str) or model_id not in self.entries:
            raise KeyError(model_id)
        return self.entries[model_id]

    def model(self, model_id: str) -> LoadedModel:
        return self.entry(model_id).get()

    # -- data -----------------------------------------------------------------------------

    def data_name(self, loaded: LoadedModel) -> str | None:
        """``--data``, else the card's training data set when it is a built-in name."""
        if self.data:
            return self.data
        recorded = (loaded.card.get("data") or {}).get("name")
        if not isinstance(recorded, str) or ":" in recorded:
            return None  # a folder recorded in a card is not opened on the page's behalf
        from xaikit.data import list_datasets

        return recorded if recorded in list_datasets() else None

    def dataset(self, loaded: LoadedModel) -> Any:
        """The model's data set (test split, the first :attr:`items` used), loaded once;
        ``None`` without one. A loader error (:class:`DataError`: files missing, inputs of
        another shape) is raised, and remembered: the next call raises it again at once."""
        with self._data_lock:
            if "dataset_error" in loaded.memo:
                raise loaded.memo["dataset_error"]
            if "dataset" not in loaded.memo:
                try:
                    loaded.memo["dataset"] = self._load_dataset(loaded)
                except XaikitError as err:
                    loaded.memo["dataset_error"] = err
                    raise
            return loaded.memo["dataset"]

    def _load_dataset(self, loaded: LoadedModel) -> Any:
        name = self.data_name(loaded)
        if name is None:
            return None
        from xaikit.cli._common import card_size, data_options
        from xaikit.data import load

        size = card_size(loaded.card) if loaded.kind == "image" else None
        defaults: dict[str, Any] = {}
        if not self.data:  # the card's own data set, as it was generated
            defaults.update((loaded.card.get("data") or {}).get("options") or {})
        defaults.update({"n": self.items, "seed": 0})
        options = data_options(name, self.data_options, size=size, defaults=defaults)
        dataset = load(name, "test", **options)
        shape = tuple(dataset[0][0].shape) if len(dataset) else loaded.input_shape
        if shape != tuple(loaded.input_shape):
            raise DataError(
                f"data set {name!r} has inputs of shape {list(shape)}, but {loaded.id} reads "
                f"{list(loaded.input_shape)}"
            )
        return dataset

    def item_count(self, loaded: LoadedModel) -> int:
        dataset = self.dataset(loaded)
        return 0 if dataset is None else min(len(dataset), self.items)

    # -- inputs ---------------------------------------------------------------------------

    def add_upload(self, data: bytes) -> dict[str, Any]:
        """Check an uploaded file with the image loader (formats, pixel limit, decodable)
        and keep its bytes; returns ``{"image": sha256, "width", "height"}``."""
        from xaikit.data.images import read_image

        sha = hashlib.sha256(data).hexdigest()
        with _temporary(data) as path:
            raw = read_image(path)
        height, width = raw.original_size
        self.uploads.put(sha, data, len(data))
        return {"image": sha, "width": int(width), "height": int(height), "bytes": len(data)}

    def prepare(self, loaded: LoadedModel, source: Mapping[str, Any]) -> Prepared:
        """The model input of ``source`` (``{"upload": sha}`` or ``{"item": index}``)."""
        import torch

        from xaikit.explain.state import model_device

        device = model_device(loaded.model)
        if "upload" in source:
            sha = str(source["upload"])
            data = self.uploads.peek(sha)
            if data is None:
                raise DataError(
                    "that uploaded image is no longer held by the server; upload it again"
                )
            if loaded.kind != "image":
                raise XaikitConfigError(
                    f"{loaded.id} reads {loaded.kind}s of shape {list(loaded.input_shape)}, not "
                    "images; pick an item of its data set"
                )
            from xaikit.explain.files import load_for_model

            with _temporary(data) as path:
                x, _ = load_for_model(path, loaded.input_shape, loaded.normalization)
            x = x.unsqueeze(0).to(device)
            return Prepared(x, _tensor_hash(x), {"upload": sha})
        if "item" in source:
            dataset = self.dataset(loaded)
            if dataset is None:
                raise XaikitConfigError(f"{loaded.id} has no data set; start with --data D")
            try:
                index = int(source["item"])
            except (TypeError, ValueError):
                raise XaikitConfigError("item must be an integer") from None
            if not 0 <= index < self.item_count(loaded):
                raise XaikitConfigError(
                    f"item {index} is out of range (0..{self.item_count(loaded) - 1})"
                )
            item = dataset[index]
            x = torch.as_tensor(item[0]).unsqueeze(0).to(device)
            return Prepared(x, _tensor_hash(x), {"item": index}, label=item[1])
        raise XaikitConfigError("give an input: an uploaded image or a data set item")


class _temporary:
    """A private temporary file holding ``data``, removed on exit (the loader reads paths)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.path = ""

    def __enter__(self) -> str:
        handle, self.path = tempfile.mkstemp(prefix="xaikit-serve-", suffix=".upload")
        with os.fdopen(handle, "wb") as out:
            out.write(self.data)
        return self.path

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _cli_loader(spec: str, device: str) -> Loader:
    def load() -> tuple[Any, dict[str, Any]]:
        from xaikit.cli._common import load_cli_model

        return load_cli_model(spec, device=device)

    return load
