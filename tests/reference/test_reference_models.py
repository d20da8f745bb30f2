"""The shipped reference models load, keep their recorded metrics, and explain as promised."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import xaikit
from xaikit.train.recipe import Recipe
from xaikit.zoo.checkpoint import list_shipped_models, shipped_models_dir

SHIPPED = {
    "shapes-multiclass": ("test_accuracy", 0.98),
    "shapes-multilabel": ("test_map", 0.97),
    "digits-cnn": ("test_accuracy", 0.97),
    "mnist1d-lstm": ("test_accuracy", 0.91),
    "mnist1d-cnn": ("test_accuracy", 0.94),
    "recall-lstm": ("test_accuracy", 0.95),
}


def test_every_reference_model_is_shipped():
    assert set(SHIPPED) <= set(list_shipped_models())


#: test items each model is measured on (a seeded random subset of its recipe's test split).
SUBSET = 200


def _test_subset(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``SUBSET`` items of the test split the model's recipe names (data set, options and
    test options), drawn with a fixed seed: ``(inputs, targets)``."""
    recipe = Recipe.from_toml(shipped_models_dir() / f"{name}.toml")
    test = xaikit.data.load(recipe.data, "test", **{**recipe.data_options, **recipe.test_options})
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    items = [test[i] for i in order[:SUBSET].tolist()]
    inputs = torch.stack([item[0] for item in items])
    return inputs, torch.stack([torch.as_tensor(item[1]) for item in items])


def _measured(model: torch.nn.Module, metric: str, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(x)
    if metric == "test_map":  # mean over labels of scikit-learn's average precision
        scores, truth = logits.sigmoid().numpy(), y.numpy() >= 0.5
        per_label = [average_precision_score(truth[:, c], scores[:, c]) for c in range(y.shape[1])]
        return float(np.mean(per_label))
    return float((logits.argmax(dim=1) == y).double().mean())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_reference_model_card_meets_its_target(name):
    """The card's headline figure meets the target, and it is what the model really scores:
    measured on a seeded subset of 200 items of its own test split, the accuracy lies within
    3 binomial standard deviations of the card's (plus one item), the mAP within 0.01."""
    model, card = xaikit.load_model(name)
    metric, target = SHIPPED[name]
    recorded = card["metrics"][metric]
    assert recorded >= target
    measured = _measured(model, metric, *_test_subset(name))
    if metric == "test_map":
        tolerance = 0.01
    else:
        tolerance = 3 * math.sqrt(recorded * (1 - recorded) / SUBSET) + 1 / SUBSET
    assert measured == pytest.approx(recorded, abs=tolerance), (measured, recorded)
    assert measured >= target - tolerance
    assert card["recipe"]["model"]["arch"] == card["architecture"]
    shape = card["input_shape"]
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape[0] == 2


def test_digits_cnn_reaches_its_recorded_accuracy_on_the_test_split():
    model, card = xaikit.load_model("digits-cnn")
    test = xaikit.data.load("digits", "test")
    x = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == test.targets).float().mean().item()
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=1e-6)


def test_recall_lstm_temporal_heatmap_peaks_at_the_marker():
    model, card = xaikit.load_model("recall-lstm")
    test = xaikit.data.load("recall", "test", n=400)
    sequences = torch.stack([test[i][0] for i in range(len(test))])
    markers = torch.stack([test[i][2] for i in range(len(test))]).argmax(dim=1)
    heat = xaikit.explain_sequence(model, sequences, method="gradxinput", target="predicted")
    hits = (heat.argmax(dim=1) == markers).float().mean().item()
    assert hits >= 0.95
    assert card["comparison"]["rnn"]["test_accuracy"] < 0.5  # the plain RNN cannot do it
