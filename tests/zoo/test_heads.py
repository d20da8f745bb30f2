"""Each head's loss, probabilities and prediction rule equal torch's reference functions."""

import pytest
import torch
import torch.nn.functional as F

import xaikit
from xaikit.zoo import get_task


@pytest.fixture
def logits():
    return torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.1, 3.0], [0.0, 0.0, 0.0]])


def test_multiclass_head_is_softmax_cross_entropy(logits):
    task = get_task("multiclass")
    target = torch.tensor([0, 2, 1])
    assert torch.allclose(task.loss(logits, target), F.cross_entropy(logits, target))
    assert torch.allclose(task.probabilities(logits), torch.softmax(logits, dim=1))
    assert task.predict(logits).tolist() == [0, 2, 0]
    manual = -(logits.log_softmax(1)[torch.arange(3), target]).mean()
    assert torch.allclose(task.loss(logits, target), manual)


def test_multilabel_head_is_independent_sigmoids(logits):
    task = get_task("multilabel")
    target = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0]])
    expected = F.binary_cross_entropy(torch.sigmoid(logits), target.float())
    assert torch.allclose(task.loss(logits, target), expected, atol=1e-6)
    assert torch.allclose(task.probabilities(logits), torch.sigmoid(logits))
    predicted = task.predict(logits)
    assert predicted.tolist() == [[True, False, True], [False, True, True], [True, True, True]]
    strict = task.predict(logits, torch.tensor([0.9, 0.9, 0.9]))
    assert strict.tolist() == [[False, False, False], [False, False, True], [False, False, False]]


def test_binary_head_has_one_logit():
    task = get_task("binary")
    logits = torch.tensor([[1.5], [-0.2], [0.0]])
    target = torch.tensor([1, 0, 0])
    expected = F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float())
    assert torch.allclose(task.loss(logits, target), expected)
    assert torch.allclose(task.probabilities(logits), torch.sigmoid(logits))
    assert task.predict(logits).tolist() == [1, 0, 1]


def test_model_head_uses_its_thresholds():
    model = xaikit.create_model("simple_cnn", num_classes=3, task="multilabel", widths=(4, 8))
    logits = torch.tensor([[0.1, 1.0, -1.0]])
    assert model.head.predict(logits).tolist() == [[True, True, False]]
    model.head.thresholds.fill_(0.6)
    assert model.head.predict(logits).tolist() == [[False, True, False]]
    assert "head.thresholds" in model.state_dict()


def test_models_without_an_xaikit_head_are_multiclass():
    assert get_task(torch.nn.Linear(3, 2)).name == "multiclass"
    model = xaikit.create_model("lstm", num_classes=2, task="binary", in_channels=1)
    assert get_task(model).name == "binary"
