"""Targets: every accepted form, K targets from one pass, and clear errors before backward."""

from __future__ import annotations

import pytest
import torch

import xaikit
import xaikit.explain as X
from xaikit.errors import XaikitConfigError
from xaikit.explain.targets import resolve_targets
from xaikit.zoo import TASKS

LOGITS = torch.tensor(
    [
        [0.5, 2.0, -1.0, 0.1],
        [3.0, -2.0, 0.2, 0.4],
        [-1.0, -0.5, -2.0, 1.5],
    ]
)
NAMES = ["cat", "dog", "bird", "fish"]
# Random-weight models give some all-negative CAMs; their warning is tested elsewhere.
pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")


def _resolve(target, task="multiclass", logits=LOGITS, **kw):
    return resolve_targets(target, logits, task=TASKS[task], **kw)


# -- forms ---------------------------------------------------------------------------------


def test_predicted_is_the_argmax_one_per_input():
    t = _resolve("predicted")
    assert t.single and t.indices.tolist() == [[1], [0], [3]]
    assert _resolve(None).indices.tolist() == [[1], [0], [3]]


def test_int_label_name_and_per_input_forms():
    assert _resolve(2).indices.tolist() == [[2], [2], [2]]
    assert _resolve("bird", class_names=NAMES).indices.tolist() == [[2], [2], [2]]
    assert _resolve([0, 3, 1]).indices.tolist() == [[0], [3], [1]]
    assert _resolve(["dog", "cat", "fish"], class_names=NAMES).indices.tolist() == [[1], [0], [3]]
    assert _resolve(torch.tensor([3, 2, 1])).indices.tolist() == [[3], [2], [1]]
    assert _resolve(torch.tensor(1)).indices.tolist() == [[1], [1], [1]]
    assert all(_resolve(t).single for t in (2, [0, 3, 1], torch.tensor([3, 2, 1])))


def test_many_targets_per_input_forms():
    t = _resolve(torch.tensor([[0, 1], [2, 3], [1, 1]]))
    assert not t.single and t.indices.tolist() == [[0, 1], [2, 3], [1, 1]]
    assert _resolve("all").indices.tolist() == [[0, 1, 2, 3]] * 3


def test_ragged_lists_and_multi_hot_masks_are_padded_with_a_validity_mask():
    t = _resolve([[0, 2], [3], ["dog", "cat", "fish"]], class_names=NAMES)
    assert t.indices.tolist() == [[0, 2, -1], [3, -1, -1], [1, 0, 3]]
    assert t.valid.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    mask = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    t = _resolve(mask)
    assert t.indices.tolist() == [[1, 3, -1], [-1, -1, -1], [0, 1, 2]]
    assert t.valid.sum(dim=1).tolist() == [2, 0, 3]
    assert _resolve(mask.float()).indices.tolist() == t.indices.tolist()


def test_a_callable_on_the_logits_may_return_any_form():
    assert _resolve(lambda z: z.argmin(dim=1)).indices.tolist() == [[2], [1], [2]]
    assert _resolve(lambda z: z > 0.3).indices.tolist() == [[0, 1], [0, 3], [3, -1]]
    assert _resolve(lambda z: z.topk(2, dim=1).indices).indices.tolist() == [
        [1, 0],
        [0, 3],
        [3, 1],
    ]


def test_positive_is_every_label_the_multilabel_head_predicts():
    t = _resolve("positive", task="multilabel")
    predicted = TASKS["multilabel"].predict(LOGITS)  # sigmoid >= 0.5, i.e. logit >= 0
    for n in range(3):
        assert t.indices[n][t.valid[n]].tolist() == predicted[n].nonzero().flatten().tolist()
    thresholds = torch.tensor([0.99, 0.5, 0.5, 0.5])
    t = _resolve("positive", task="multilabel", predict=lambda z: z.sigmoid() >= thresholds)
    assert t.indices[1][t.valid[1]].tolist() == [2, 3]  # sigmoid(3) = 0.95 < 0.99: not label 0


def test_positive_for_multiclass_and_binary_heads():
    assert _resolve("positive").indices.tolist() == [[1], [0], [3]]
    binary = torch.tensor([[1.0], [-2.0], [0.5]])
    t = _resolve("positive", task="binary", logits=binary)
    assert t.indices.tolist() == [[0], [-1], [0]] and not t.single
    assert _resolve("predicted", task="binary", logits=binary).indices.tolist() == [[0]] * 3


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (7, "out of range for a model with 4 outputs"),
        (-1, "out of range"),
        ([0, 1], "one entry per input (3)"),
        (torch.tensor([0, 1]), "shape (3,)"),
        (torch.tensor([[0, 9]] * 3), "out of range"),
        (torch.ones(3, 5, dtype=torch.bool), "(3, 4)"),
        (torch.tensor([0.0, 1.0, 2.0]), "multi-hot mask and must be (3, 4)"),
        (torch.zeros(2, 2, 2, dtype=torch.long), "shape (2, 2, 2)"),
        (True, "bool"),
        ("zebra", "no class names are known"),
        (1.5, "not understood"),
        ([[0], [1.5], [2]], "class indices or label names"),
    ],
)
def test_wrong_targets_raise_a_config_error_naming_the_expected_shape(target, message):
    with pytest.raises(XaikitConfigError, match=None) as info:
        _resolve(target)
    assert message in str(info.value)


def test_unknown_label_names_suggest_close_ones():
    with pytest.raises(XaikitConfigError, match="did you mean 'dog'"):
        _resolve("dgo", class_names=NAMES)


def test_a_binary_head_has_only_the_positive_logit():
    with pytest.raises(XaikitConfigError, match="positive logit"):
        _resolve(1, task="binary", logits=torch.zeros(3, 1))


def test_target_errors_come_before_any_backward_pass(zoo_multiclass, images, monkeypatch):
    # layer="auto" chooses once per model and input shape with one dry backward pass of one
    # sample (cached); the explanation's own backward is what the targets must precede.
    X.explain(zoo_multiclass, images, target=1)
    calls = []
    real_grad = torch.autograd.grad

    def spy(*args, **kwargs):
        calls.append(1)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    with pytest.raises(XaikitConfigError, match="out of range"):
        X.explain(zoo_multiclass, images, target=[0, 1, 2, 99])
    with pytest.raises(XaikitConfigError, match=r"\(4, 5\)"):
        X.explain(zoo_multiclass, images, target=torch.ones(4, 3, dtype=torch.bool))
    assert calls == []
    X.explain(zoo_multiclass, images, target=1)
    assert len(calls) == 1  # one backward for the whole batch


# -- K targets from one pass ---------------------------------------------------------------

METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]


def test_k_targets_equal_k_single_target_calls(zoo_multiclass, images):
    many = X.explain(zoo_multiclass, images, method=METHODS, target=[[0, 3, 4, 1]] * 4)
    for name in METHODS:
        assert many[name].shape == (4, 4, 16, 16)
        for k, cls in enumerate([0, 3, 4, 1]):
            single = X.explain(zoo_multiclass, images, method=name, target=cls)
            torch.testing.assert_close(many[name][:, k], single, atol=1e-5, rtol=1e-4)


def test_k_targets_use_one_forward_and_one_backward(zoo_multiclass, images, monkeypatch):
    X.explain(zoo_multiclass, images)  # layer="auto" traces the model once, then caches
    forwards, grads = [], []
    real_grad = torch.autograd.grad
    monkeypatch.setattr(
        torch.autograd, "grad", lambda *a, **k: grads.append(1) or real_grad(*a, **k)
    )
    handle = zoo_multiclass.register_forward_hook(lambda *_: forwards.append(1))
    try:
        X.explain(zoo_multiclass, images, method=["gradcam", "layercam"], target="all")
    finally:
        handle.remove()
    assert forwards == [1] and grads == [1]


def test_batched_equals_per_sample(zoo_multilabel, images):
    batched = X.explain(zoo_multilabel, images, method=METHODS, target=[[0, 5]] * 4)
    for n in range(4):
        alone = X.explain(zoo_multilabel, images[n : n + 1], method=METHODS, target=[[0, 5]])
        for name in METHODS:
            torch.testing.assert_close(batched[name][n], alone[name][0], atol=1e-5, rtol=1e-4)


def test_positive_through_explain_returns_exactly_the_predicted_labels(zoo_multilabel, images):
    result = X.explain(zoo_multilabel, images, target="positive", return_result=True)
    with torch.no_grad():
        predicted = zoo_multilabel.head.predict(zoo_multilabel(images))
    assert result.maps.shape[:2] == result.targets.shape
    for n in range(4):
        chosen = result.targets[n][result.valid[n]].tolist()
        assert chosen == predicted[n].nonzero().flatten().tolist()
        assert result.maps[n][~result.valid[n]].abs().sum() == 0  # padding is zero
    assert result.scores[~result.valid].abs().sum() == 0
    assert result.valid.sum() >= 5  # the biases make several labels positive


def test_a_binary_head_explains_its_positive_logit(images):
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=1, task="binary", widths=(8, 16)).eval()
    result = X.explain(model, images, return_result=True)
    assert result.heatmap.shape == (4, 16, 16) and result.targets.tolist() == [[0]] * 4
    with torch.no_grad():
        logit = model(images)
    torch.testing.assert_close(result.scores, logit)
    torch.testing.assert_close(result.probabilities, logit.sigmoid())
    with pytest.raises(XaikitConfigError, match="positive logit"):
        X.explain(model, images, target=1)


def test_no_positive_label_anywhere_gives_k_zero_and_a_warning(zoo_multilabel, images):
    with torch.no_grad():
        zoo_multilabel.head.fc.bias.fill_(-50.0)
    with pytest.warns(X.ExplainWarning, match="no targets"):
        result = X.explain(
            zoo_multilabel,
            images,
            method=["gradcam", "scorecam"],
            target="positive",
            return_result=True,
        )
    assert result["gradcam"].maps.shape == (4, 0, 16, 16)
    assert result["scorecam"].targets.shape == (4, 0)


def test_label_names_come_from_class_names_or_the_model(zoo_multiclass, images):
    names = ["circle", "square", "triangle", "cross", "star"]
    by_option = X.explain(zoo_multiclass, images, target="cross", class_names=names)
    torch.testing.assert_close(by_option, X.explain(zoo_multiclass, images, target=3))
    zoo_multiclass.class_names = names
    result = X.explain(zoo_multiclass, images, target=["star", "circle", 2, 1], return_result=True)
    assert result.targets.flatten().tolist() == [4, 0, 2, 1]
    assert [row[0] for row in result.target_names] == ["star", "circle", "triangle", "square"]
