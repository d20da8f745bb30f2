"""The shipped reference models load, keep their recorded metrics, and explain as promised."""

import pytest
import torch

import xaikit
from xaikit.zoo.checkpoint import list_shipped_models

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


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_reference_model_card_meets_its_target(name):
    model, card = xaikit.load_model(name)
    metric, target = SHIPPED[name]
    assert card["metrics"][metric] >= target
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
