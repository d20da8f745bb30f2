"""Metrics equal scikit-learn and hand computations on fixed tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from xaikit.train import metrics as M
from xaikit.zoo import get_task

PRED = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1, 2])
TRUE = torch.tensor([0, 1, 1, 1, 2, 2, 0, 0, 1, 2])


def test_confusion_matrix_rows_are_true_classes_like_sklearn():
    confusion = M.confusion_matrix(PRED, TRUE, 4)
    expected = skm.confusion_matrix(TRUE, PRED, labels=[0, 1, 2, 3])
    assert torch.equal(confusion, torch.from_numpy(expected))
    # by hand: true class 1 was predicted 2 once and 1 three times
    assert confusion[1].tolist() == [0, 3, 1, 0]


def test_accuracy_and_per_class_accuracy_match_sklearn_recall():
    assert float(M.accuracy(PRED, TRUE)) == pytest.approx(0.7)
    per_class = M.per_class_accuracy(M.confusion_matrix(PRED, TRUE, 4))
    recall = skm.recall_score(TRUE, PRED, labels=[0, 1, 2], average=None)
    assert per_class[:3].numpy() == pytest.approx(recall)
    assert math.isnan(float(per_class[3]))  # class 3 has no examples


def test_top_k_accuracy_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 7, generator=g)
    target = torch.randint(0, 7, (50,), generator=g)
    for k in (1, 3, 5):
        expected = skm.top_k_accuracy_score(target, scores, k=k, labels=list(range(7)))
        assert float(M.top_k_accuracy(scores, target, k)) == pytest.approx(expected)


def test_multilabel_f1_subset_accuracy_and_map_match_sklearn():
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(40, 4, generator=g) < 0.4).float()
    target[0] = 1.0  # every label has a positive
    scores = (0.6 * target + 0.7 * torch.rand(40, 4, generator=g)).clamp(0, 1)
    pred = scores >= 0.5
    t, p, s = target.numpy().astype(int), pred.numpy().astype(int), scores.numpy()
    assert float(M.f1_score(pred, target, "micro")) == pytest.approx(
        skm.f1_score(t, p, average="micro")
    )
    assert float(M.f1_score(pred, target, "macro")) == pytest.approx(
        skm.f1_score(t, p, average="macro")
    )
    assert float(M.subset_accuracy(pred, target)) == pytest.approx(skm.accuracy_score(t, p))
    assert float(M.mean_average_precision(scores, target)) == pytest.approx(
        skm.average_precision_score(t, s, average="macro")
    )


def test_average_precision_by_hand_and_nan_for_a_label_without_positives():
    # ranking 0.9(+) 0.8(-) 0.7(+) 0.1(-): precision at the positives 1 and 2/3
    scores = torch.tensor([[0.9, 0.5], [0.8, 0.5], [0.7, 0.5], [0.1, 0.5]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    ap = M.average_precision(scores, target)
    assert float(ap[0]) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(float(ap[1]))
    assert float(M.mean_average_precision(scores, target)) == pytest.approx(5 / 6)


def test_f1_of_a_label_never_present_nor_predicted_is_zero_like_sklearn():
    pred = torch.tensor([[1, 0], [0, 0]])
    target = torch.tensor([[1, 0], [1, 0]])
    expected = skm.f1_score(target.numpy(), pred.numpy(), average="macro", zero_division=0)
    assert (
        float(M.f1_score(pred, target, "macro"))
        == pytest.approx(expected)
        == pytest.approx((2 / 3 + 0) / 2)
    )


def test_binary_auroc_equals_the_mann_whitney_count():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    target = torch.tensor([0, 0, 1, 1, 1, 0])
    positives, negatives = scores[target == 1], scores[target == 0]
    wins = (positives[:, None] > negatives[None, :]).double().mean()
    assert float(M.auroc(scores, target)) == pytest.approx(float(wins))
    assert float(M.auroc(scores, target)) == pytest.approx(skm.roc_auc_score(target, scores))
    assert math.isnan(float(M.auroc(scores, torch.ones(6))))


def test_task_suites_pick_metrics_from_the_head_task():
    logits = torch.tensor([[2.0, -1.0], [-0.5, 0.3], [0.2, 0.1]])
    target = torch.tensor([0, 1, 1])
    task = get_task("multiclass")
    suite = M.metrics_for(task)
    out = M.to_python(suite.compute(task.probabilities(logits), task.predict(logits), target, 2))
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["confusion_matrix"] == [[1, 0], [1, 1]]
    assert M.metrics_for(get_task("multilabel")).main == "map"

    binary = get_task("binary")
    b_logits = torch.tensor([[1.0], [-2.0], [0.5], [-0.1]])
    b_target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    out = M.to_python(
        M.metrics_for(binary).compute(
            binary.probabilities(b_logits), binary.predict(b_logits), b_target, 1
        )
    )
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(skm.f1_score([1, 0, 0, 1], [1, 0, 1, 0]))
    assert out["auroc"] == pytest.approx(skm.roc_auc_score([1, 0, 0, 1], [1.0, -2.0, 0.5, -0.1]))


def test_running_metrics_accumulated_per_batch_equal_the_whole_set():
    g = torch.Generator().manual_seed(2)
    pred = torch.randint(0, 3, (30,), generator=g)
    target = torch.randint(0, 3, (30,), generator=g)
    running = M.metrics_for(get_task("multiclass")).running()
    for chunk in range(0, 30, 8):
        running.update(pred[chunk : chunk + 8], target[chunk : chunk + 8])
    assert running.compute() == pytest.approx(float(M.accuracy(pred, target)))

    ml_pred = torch.rand(30, 4, generator=g) < 0.5
    ml_target = (torch.rand(30, 4, generator=g) < 0.5).float()
    running = M.metrics_for(get_task("multilabel")).running()
    for chunk in range(0, 30, 8):
        running.update(ml_pred[chunk : chunk + 8], ml_target[chunk : chunk + 8])
    assert running.compute() == pytest.approx(
        skm.f1_score(ml_target.numpy().astype(int), ml_pred.numpy().astype(int), average="micro")
    )


def test_soft_multiclass_targets_count_by_their_argmax():
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert M.class_targets(soft).tolist() == [0, 1, 0]
    assert np.isclose(float(M.accuracy(torch.tensor([0, 1, 1]), M.class_targets(soft))), 2 / 3)
