"""Inspect learned filters: kernels, feature maps, activation maximization, dataset
exemplars, per-channel atlases, and LSTM gates and cell states.

=====================  ==================================================================
``weights``            a convolution's kernels as a labelled image grid
``activations``        feature maps of inputs at one or more layers, and their grid
``maximize``           the input that makes each channel fire most (feature visualization)
``exemplars``          the top-k data set inputs per channel, with receptive-field crops
``atlas``              kernel + maximization + exemplars per channel, figure and HTML
``lstm_states``        an ``nn.LSTM``'s gates, cell and hidden states per time step
                       (``lstm_states_all``: every layer and direction)
``receptive_field``    the input region a layer's output positions see
``spectrum_from``      the Fourier magnitude of images, for ``maximize(param="maco")``
``concepts``           NMF concepts of a layer (DFF over positions, CRAFT over crops),
                       with exemplars, per-class Sobol importance and ``concept_maps``
=====================  ==================================================================

``maximize(param="maco")`` is MACO (Fel et al., 2023: phase-only optimization under a fixed
natural-image magnitude, with a transparency map); ``maximize(start=images)`` is feature
accentuation (Hamblin et al., 2024).

Activation maximization is built from three small modules that can be used alone:
:mod:`~xaikit.filters.param` (image parametrizations), :mod:`~xaikit.filters.transforms`
(random jitter, zoom, rotation) and :mod:`~xaikit.filters.objectives` (what to maximize,
composed with ``+ - *``).
"""

from xaikit.filters import objectives
from xaikit.filters.activations import FeatureMaps, activations
from xaikit.filters.atlas import Atlas, atlas
from xaikit.filters.concepts import ConceptBank, concept_maps, concepts
from xaikit.filters.exemplars import Exemplars, exemplars
from xaikit.filters.lstm import LSTMStates, lstm_states, lstm_states_all
from xaikit.filters.maximize import Maximization, maximize
from xaikit.filters.objectives import Objective, channel, class_logit, diversity, l2, neuron, tv
from xaikit.filters.receptive_field import ReceptiveField, receptive_field
from xaikit.filters.spectrum import spectrum_from
from xaikit.filters.weights import Kernels, weights

__all__ = [
    "Atlas",
    "ConceptBank",
    "Exemplars",
    "FeatureMaps",
    "Kernels",
    "LSTMStates",
    "Maximization",
    "Objective",
    "ReceptiveField",
    "activations",
    "atlas",
    "channel",
    "class_logit",
    "concept_maps",
    "concepts",
    "diversity",
    "exemplars",
    "l2",
    "lstm_states",
    "lstm_states_all",
    "maximize",
    "neuron",
    "objectives",
    "receptive_field",
    "spectrum_from",
    "tv",
    "weights",
]
