"""xaikit: explainable AI for convolutional and recurrent networks on PyTorch.

Three jobs, one pipeline:

- train small reference models: :func:`create_model`, :class:`Trainer`, :func:`save_model`,
  :func:`load_model`, data sets from :func:`xaikit.data.load`;
- generate heatmaps: ``xaikit.explain(model, images, method="gradcam", target=...)``
  (:mod:`xaikit.explain` is itself callable), temporal heatmaps for sequences;
- inspect learned filters: :mod:`xaikit.filters`.

Around them: :mod:`xaikit.evaluate` (explanation quality), :mod:`xaikit.viz` (overlays,
report). See the README for a tour.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xaikit._version import __version__
from xaikit.errors import CheckpointError, DataError, XaikitConfigError, XaikitError

# The public API is imported on first use (PEP 562), not here: importing it takes torch,
# torchvision, matplotlib, ... (seconds), and `import xaikit` runs before every command of
# the CLI, `xaikit --version` included. Name -> (module, attribute; None: the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "Callback": ("xaikit.train", "Callback"),
    "Trainer": ("xaikit.train", "Trainer"),
    "TrainingDivergedError": ("xaikit.train", "TrainingDivergedError"),
    "create_model": ("xaikit.zoo.registry", "create_model"),
    "data": ("xaikit.data", None),
    "evaluate": ("xaikit.evaluate", None),
    "explain": ("xaikit.explain", None),  # the callable package: xaikit.explain(model, x)
    "explain_sequence": ("xaikit.explain.temporal", "explain_sequence"),
    "filters": ("xaikit.filters", None),
    "list_models": ("xaikit.zoo.registry", "list_models"),
    "load_model": ("xaikit.zoo.checkpoint", "load_model"),
    "lr_find": ("xaikit.train", "lr_find"),
    "save_model": ("xaikit.zoo.checkpoint", "save_model"),
    "viz": ("xaikit.viz", None),
}

if TYPE_CHECKING:  # what type checkers and IDEs see: the names as eager imports
    from xaikit import data, evaluate, explain, filters, viz
    from xaikit.explain.temporal import explain_sequence
    from xaikit.train import Callback, Trainer, TrainingDivergedError, lr_find
    from xaikit.zoo.checkpoint import load_model, save_model
    from xaikit.zoo.registry import create_model, list_models

__all__ = [
    "Callback",
    "CheckpointError",
    "DataError",
    "Trainer",
    "TrainingDivergedError",
    "XaikitConfigError",
    "XaikitError",
    "__version__",
    "create_model",
    "data",
    "evaluate",
    "explain",
    "explain_sequence",
    "filters",
    "list_models",
    "load_model",
    "lr_find",
    "save_model",
    "viz",
]


def __getattr__(name: str) -> Any:
    """Import a public name, or a sub-package such as ``xaikit.zoo``, when first read."""
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
    elif not name.startswith("__"):
        # `import xaikit; xaikit.zoo.create_model(...)` worked while this file imported
        # everything; any sub-module still does. Dunder probes (copy, pickle, doctest) are
        # not sub-modules and must get a plain AttributeError.
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise  # a sub-module exists but one of its own imports is missing
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later reads are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
