"""The trainer learns a tiny task of every kind, with the loss and metrics of the model's head."""

from __future__ import annotations

import pytest
import torch

import xaikit
from xaikit.train import Trainer


def _split(x: torch.Tensor, y: torch.Tensor, n_train: int):
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def test_multiclass_cnn_learns_the_quadrant_task(synth):
    train, val = _split(*synth.quadrant_images(400), 320)
    trainer = Trainer(synth.small_cnn(4), "adam", lr=1e-2, batch_size=32, quiet=True)
    history = trainer.fit(train, val, epochs=5)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] >= 0.9
    result = trainer.evaluate(val)
    assert set(result) == {"loss", "accuracy", "per_class_accuracy", "confusion_matrix"}
    assert result["accuracy"] == pytest.approx(history[-1]["val_accuracy"])
    confusion = torch.tensor(result["confusion_matrix"])
    assert confusion.shape == (4, 4) and int(confusion.sum()) == 80
    assert result["accuracy"] == pytest.approx(float(confusion.trace()) / 80)


def test_multiclass_evaluation_reports_top5_for_more_than_five_classes(synth):
    """A constructed case: the logits are (6, 5, ..., 0) for every image, so the prediction
    is class 0 and the top five are classes 0-4; labels cycle through the 7 classes."""
    x, _ = synth.quadrant_images(64)
    y = torch.arange(64) % 7  # class 0: 10 images, classes 1-6: 9 each
    model = synth.small_cnn(7)
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(torch.arange(6.0, -1.0, -1.0))
    result = Trainer(model, quiet=True).evaluate((x, y))
    assert result["accuracy"] == 10 / 64
    assert result["top5_accuracy"] == (10 + 4 * 9) / 64  # labels 0-4
    assert result["confusion_matrix"] == [[n] + [0] * 6 for n in (10, 9, 9, 9, 9, 9, 9)]
    assert result["per_class_accuracy"][0] == 1.0 and result["per_class_accuracy"][1:] == [0.0] * 6


def test_multilabel_cnn_learns_independent_labels(synth):
    train, val = _split(*synth.label_images(400), 320)
    model = synth.small_cnn(3, "multilabel")
    trainer = Trainer(model, "adam", lr=1e-2, batch_size=32, quiet=True)
    history = trainer.fit(train, val, epochs=5)
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert "train_f1_micro" in history[-1]
    assert history[-1]["val_map"] >= 0.95
    assert history[-1]["val_f1_micro"] >= 0.85
    result = trainer.evaluate(val)
    assert {"f1_macro", "subset_accuracy", "per_class_ap"} <= set(result)
    assert len(result["per_class_ap"]) == 3


def test_binary_cnn_learns_blob_detection(synth):
    train, val = _split(*synth.blob_images(400), 320)
    model = synth.small_cnn(1, "binary")
    trainer = Trainer(model, "sgd", lr=0.1, momentum=0.9, nesterov=True, batch_size=32, quiet=True)
    history = trainer.fit(train, val, epochs=5)
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] >= 0.9
    assert history[-1]["val_auroc"] >= 0.95
    assert set(trainer.evaluate(val)) == {"loss", "accuracy", "f1", "auroc"}


def test_lstm_learns_the_sequence_mean(synth):
    train, val = _split(*synth.offset_sequences(400), 320)
    torch.manual_seed(2)
    model = xaikit.create_model("lstm", num_classes=2, in_channels=1, hidden_size=16)
    trainer = Trainer(model, "adam", lr=1e-2, batch_size=32, quiet=True)
    history = trainer.fit(train, val, epochs=6)
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] >= 0.9
