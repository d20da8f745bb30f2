"""Temporal heatmaps for recurrent classifiers: they find the step that decides the label, match
captum's InputXGradient summed over features, keep padding at exactly zero and answer K targets
like K single-target calls."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, Occlusion

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.explain.temporal import (
    TEMPORAL_METHODS,
    explain_sequence,
    gradxinput_over_time,
    ig_over_time,
    normalize_maps,
    occlusion_over_time,
)

STEPS, CLASSES = 12, 3


def recall_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every step shows a random class (one-hot); one step carries a marker (feature 0) and
    the label is the class shown at that step. Returns sequences (n, T, 1 + C), labels, marked
    steps."""
    g = torch.Generator().manual_seed(seed)
    shown = torch.randint(CLASSES, (n, STEPS), generator=g)
    x = torch.cat([torch.zeros(n, STEPS, 1), F.one_hot(shown, CLASSES).float()], dim=-1)
    marked = torch.randint(STEPS, (n,), generator=g)
    rows = torch.arange(n)
    x[rows, marked, 0] = 1.0
    return x, shown[rows, marked], marked


@pytest.fixture(scope="module")
def recall_lstm() -> torch.nn.Module:
    """A small LSTM trained to solve the recall task (about two CPU seconds)."""
    torch.manual_seed(0)
    model = xaikit.create_model(
        "lstm", num_classes=CLASSES, in_channels=1 + CLASSES, hidden_size=24
    )
    x, y, _ = recall_task(2048, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster and steadier
    try:
        for _ in range(15):
            order = torch.randperm(len(x))
            for i in range(0, len(x), 128):
                batch = order[i : i + 128]
                loss = F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def tiny_lstm(pooling: str = "last", bidirectional: bool = False) -> torch.nn.Module:
    torch.manual_seed(4)
    return xaikit.create_model(
        "lstm",
        num_classes=4,
        in_channels=3,
        hidden_size=8,
        pooling=pooling,
        bidirectional=bidirectional,
    ).eval()


def test_the_recall_lstm_solves_its_task(recall_lstm):
    x, y, _ = recall_task(400, seed=2)
    with torch.no_grad():
        accuracy = (recall_lstm(x).argmax(dim=1) == y).float().mean()
    assert accuracy >= 0.97


@pytest.mark.parametrize("method", sorted(TEMPORAL_METHODS))
def test_the_temporal_map_peaks_at_the_marked_step(recall_lstm, method):
    x, _, marked = recall_task(300, seed=2)
    opts = {"occlusion": {"window": 1}, "ig": {"steps": 16}}.get(method, {})
    heat = explain_sequence(recall_lstm, x, method=method, target="predicted", **opts)
    assert heat.shape == (300, STEPS)
    assert heat.min() >= 0 and heat.max() <= 1
    hits = (heat.argmax(dim=1) == marked).float().mean()
    assert hits >= 0.95


def test_gradxinput_is_captum_input_x_gradient_summed_over_features():
    model = tiny_lstm()
    x = torch.randn(5, 9, 3)
    t = torch.tensor([0, 3, 1, 2, 2])
    ours = gradxinput_over_time(model, x, t)
    ref = InputXGradient(model).attribute(x.clone().requires_grad_(), target=t).sum(dim=-1)
    assert ours.shape == (5, 1, 9)
    torch.testing.assert_close(ours[:, 0], ref)
    raw = explain_sequence(model, x, "gradxinput", target=t, normalize=None)
    torch.testing.assert_close(raw, ref)
    per_feature = gradxinput_over_time(model, x, t, feature_reduce="none")
    assert per_feature.shape == (5, 1, 9, 3)
    torch.testing.assert_close(per_feature.sum(dim=-1), ours)


def test_occlusion_over_time_is_captum_occlusion_of_time_windows():
    model = tiny_lstm()
    x = torch.randn(4, 12, 3)
    t = torch.tensor([1, 0, 3, 2])
    ours = occlusion_over_time(model, x, t, window=3, stride=2)
    ref = Occlusion(model).attribute(x, sliding_window_shapes=(3, 3), strides=(2, 3), target=t)
    torch.testing.assert_close(ours[:, 0], ref.mean(dim=-1), rtol=1e-4, atol=1e-6)


def test_ig_over_time_is_complete():
    model = tiny_lstm()
    x = torch.randn(3, 10, 3)
    t = torch.tensor([[0, 1], [2, 3], [1, 1]])
    attr = ig_over_time(model, x, t, steps=64)
    with torch.no_grad():
        expected = (model(x) - model(torch.zeros_like(x))).gather(1, t)
    total = attr.sum(dim=-1)
    assert torch.all((total - expected).abs() <= 0.01 * expected.abs() + 1e-5)


@pytest.mark.parametrize("method", sorted(TEMPORAL_METHODS))
def test_k_targets_equal_single_targets(method):
    model = tiny_lstm()
    x = torch.randn(3, 8, 3)
    many = explain_sequence(model, x, method, target=[0, 2, 3])
    assert many.shape == (3, 3, 8)
    for k, cls in enumerate((0, 2, 3)):
        torch.testing.assert_close(many[:, k], explain_sequence(model, x, method, target=cls))


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("method", sorted(TEMPORAL_METHODS))
def test_padding_gets_zero_and_real_steps_match_the_unpadded_sequence(method, pooling):
    model = tiny_lstm(pooling=pooling, bidirectional=pooling == "mean")
    lengths = [7, 3, 7, 5]
    padded = torch.randn(4, 9, 3) * 5  # large padding values would leak if the model saw them
    got = explain_sequence(model, padded, method, target=1, lengths=lengths, normalize=None)
    assert got.shape == (4, 9)
    for i, size in enumerate(lengths):
        assert torch.all(got[i, size:] == 0)
        alone = explain_sequence(model, padded[i : i + 1, :size], method, target=1, normalize=None)
        torch.testing.assert_close(got[i, :size], alone[0], rtol=1e-5, atol=1e-6)
    normalized = explain_sequence(model, padded, method, target=1, lengths=lengths)
    assert torch.all(normalized[1, 3:] == 0) and normalized.max() <= 1


def test_a_baseline_tensor_is_cut_like_the_padded_sequences():
    model = tiny_lstm()
    padded = torch.randn(3, 8, 3)
    lengths = [8, 4, 6]
    default = explain_sequence(model, padded, "ig", target=2, lengths=lengths, normalize=None)
    for baseline in (torch.zeros(8, 3), torch.zeros(3, 8, 3)):
        got = explain_sequence(
            model, padded, "ig", target=2, lengths=lengths, normalize=None, baseline=baseline
        )
        torch.testing.assert_close(got, default)
    shifted = explain_sequence(
        model, padded, "ig", target=2, lengths=lengths, normalize=None, baseline=0.5
    )
    assert torch.all(shifted[1, 4:] == 0) and not torch.allclose(shifted, default)


def test_normalize_maps_modes():
    maps = torch.tensor([[[-2.0, 1.0, 0.5, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
    torch.testing.assert_close(normalize_maps(maps, "abs")[0, 0], torch.tensor([1, 0.5, 0.25, 0]))
    torch.testing.assert_close(normalize_maps(maps, "positive")[0, 0], torch.tensor([0, 1, 0.5, 0]))
    valid = torch.tensor([True, True, True, False]).reshape(1, 1, 4)
    torch.testing.assert_close(
        normalize_maps(maps, "minmax", valid)[0, 0], torch.tensor([0, 1, 2.5 / 3, 0])
    )
    assert torch.equal(normalize_maps(maps, "abs")[1], torch.zeros(1, 4))  # no NaN


def test_model_is_left_in_train_mode_with_its_flags():
    model = tiny_lstm().train()
    model.head.fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 6, 3)
    original = x.clone()
    for method in TEMPORAL_METHODS:
        explain_sequence(model, x, method, target=0)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(x, original) and not x.requires_grad


def test_probability_score_saturates_where_the_logit_does_not(recall_lstm):
    x, y, _ = recall_task(50, seed=5)
    logit = explain_sequence(recall_lstm, x, "gradxinput", target=y, normalize=None)
    prob = explain_sequence(recall_lstm, x, "gradxinput", target=y, normalize=None, score="prob")
    assert prob.abs().sum() < 0.5 * logit.abs().sum()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "saliency"}, "unknown temporal method"),
        ({"target": "positive"}, "unknown target"),
        ({"target": torch.tensor([0, 1])}, "(3,) or (3, K)"),
        ({"target": 7}, "target index 7"),
        ({"lengths": [3, 0, 2]}, "between 1 and"),
        ({"lengths": [3, 2]}, "one integer length per sequence"),
        ({"normalize": "max"}, "unknown normalize"),
        ({"score": "softmax"}, "unknown score"),
        ({"method": "occlusion", "window": 20}, "between 1 and the sequence length"),
    ],
)
def test_misconfiguration_raises_a_clear_config_error(kwargs, message):
    with pytest.raises(XaikitConfigError) as info:
        explain_sequence(tiny_lstm(), torch.randn(3, 6, 3), **kwargs)
    assert message in str(info.value)


def test_sequences_must_be_batch_first_3d():
    with pytest.raises(XaikitConfigError, match=r"\(N, T, F\)"):
        explain_sequence(tiny_lstm(), torch.randn(6, 3))
