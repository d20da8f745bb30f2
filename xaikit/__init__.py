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

from xaikit import data, evaluate, explain, filters, viz
from xaikit._version import __version__
from xaikit.errors import CheckpointError, DataError, XaikitConfigError, XaikitError
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
