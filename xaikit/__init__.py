"""xaikit: explainable AI for convolutional and recurrent networks on PyTorch.

Three jobs, one pipeline: train small reference models (:func:`create_model`,
:class:`Trainer`), generate heatmaps (:func:`explain`), inspect learned filters
(:mod:`xaikit.filters`). See the README for a tour.
"""

from xaikit._version import __version__
from xaikit.errors import CheckpointError, DataError, XaikitConfigError, XaikitError
from xaikit.zoo.checkpoint import load_model, save_model
from xaikit.zoo.registry import create_model, list_models

__all__ = [
    "CheckpointError",
    "DataError",
    "XaikitConfigError",
    "XaikitError",
    "__version__",
    "create_model",
    "list_models",
    "load_model",
    "save_model",
]
