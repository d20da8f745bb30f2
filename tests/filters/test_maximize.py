"""Activation maximization: it works (quality, sign), and batching / stopping change nothing."""

from __future__ import annotations

import copy

import pytest
import torch

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.explain.hooks import hook_count
from xaikit.filters import activations, channel, class_logit, maximize, tv
from xaikit.filters.maximize import Maximization

BLOCK1, BLOCK2 = "features.block1", "features.block2"


def _channel_means(model, images, layer, norm) -> torch.Tensor:
    """``(N, C)``: mean activation of each channel for each image."""
    return activations(model, images, layer, normalization=norm)[layer].flatten(2).mean(2)


@pytest.mark.parametrize("layer", [BLOCK1, BLOCK2])
def test_every_channel_beats_the_data_set_and_noise(striped, layer):
    model, images, _, norm = striped
    result = maximize(model, layer, steps=128, lr=0.1, seed=0, normalization=norm, quiet=True)
    channels = _channel_means(model, images, layer, norm).shape[1]
    assert isinstance(result, Maximization)
    assert result.images.shape == (channels, 3, 16, 16) and result.units == list(range(channels))
    assert result.images.min() >= 0 and result.images.max() <= 1
    own = _channel_means(model, result.images, layer, norm)[range(channels), range(channels)]
    best_data = _channel_means(model, images, layer, norm).amax(dim=0)
    gen = torch.Generator().manual_seed(1)  # noise with the data set's mean and spread
    noise = (images.mean() + images.std() * torch.randn(64, 3, 16, 16, generator=gen)).clamp(0, 1)
    noise_mean = _channel_means(model, noise, layer, norm).mean(dim=0)
    assert (own >= 2 * best_data).all(), (own / best_data).tolist()
    assert (own >= 5 * noise_mean).all(), (own / noise_mean).tolist()
    # the reported score is the same measurement; every channel gained and none is flat
    torch.testing.assert_close(result.score, own, rtol=1e-4, atol=1e-5)
    assert (result.gain > 0).all() and not result.flat.any()


def test_maximizing_raises_and_minimizing_lowers_the_channel(striped):
    model, _, _, norm = striped
    layer = "features.block2.bn"  # before the ReLU, so it can go down as well as up
    common = dict(steps=48, lr=0.1, seed=0, normalization=norm, quiet=True)
    up = maximize(model, layer, [2, 5], **common)
    down = maximize(model, layer, [2, 5], objective=-channel(layer), **common)
    start = up.initial_score
    # the same start (same seed and units), scored with the opposite sign
    torch.testing.assert_close(down.initial_score, -start)
    lowered = _channel_means(model, down.images, layer, norm)[[0, 1], [2, 5]]
    assert (up.score > start + 1).all() and (lowered < start - 1).all()


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_a_channel_optimized_in_a_batch_equals_the_channel_alone(striped, dtype, atol):
    model, _, _, norm = striped
    model = copy.deepcopy(model).to(dtype)
    common = dict(steps=40, seed=7, normalization=norm, quiet=True)
    batch = maximize(model, BLOCK2, [0, 3, 6, 9, 12, 15], **common)
    assert batch.images.dtype == dtype
    for row, unit in [(1, 3), (4, 12)]:
        alone = maximize(model, BLOCK2, [unit], **common)
        torch.testing.assert_close(batch.images[row], alone.images[0], rtol=0, atol=atol)
        torch.testing.assert_close(batch.score[row], alone.score[0], rtol=atol, atol=atol)
    chunked = maximize(model, BLOCK2, [0, 3, 6, 9, 12, 15], batch_size=4, **common)
    torch.testing.assert_close(chunked.images, batch.images, rtol=0, atol=atol)


def test_stopping_the_forward_at_the_layer_changes_nothing(striped, monkeypatch):
    model, _, _, norm = striped
    common = dict(steps=24, seed=3, normalization=norm, quiet=True)
    full = maximize(model, BLOCK1, [0, 1, 2, 7], stop=False, **common)
    calls = []
    original = model.features.block2.forward
    monkeypatch.setattr(model.features.block2, "forward", lambda x: calls.append(1) or original(x))
    truncated = maximize(model, BLOCK1, [0, 1, 2, 7], **common)
    assert not calls  # nothing after block1 ran
    torch.testing.assert_close(truncated.images, full.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(truncated.score, full.score, rtol=0, atol=1e-6)


def test_seeded_reproducible_and_the_global_rng_untouched(striped):
    model, _, _, norm = striped
    state = torch.random.get_rng_state()
    a = maximize(model, BLOCK1, [1, 4], steps=10, seed=5, normalization=norm, quiet=True)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = maximize(model, BLOCK1, [1, 4], steps=10, seed=5, normalization=norm, quiet=True)
    c = maximize(model, BLOCK1, [1, 4], steps=10, seed=6, normalization=norm, quiet=True)
    assert torch.equal(a.images, b.images)
    assert not torch.allclose(a.images, c.images)


def test_model_state_is_given_back(striped):
    model, _, _, norm = striped
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        maximize(model, BLOCK2, [0], steps=5, normalization=norm, quiet=True)
        assert model.training and hook_count(model) == 0
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key  # BatchNorm statistics too
    finally:
        model.eval()


def test_a_channel_without_gradient_is_flagged_flat():
    torch.manual_seed(0)
    model = xaikit.create_model(
        "simple_cnn", num_classes=2, input_size=16, widths=(4, 4), batchnorm=False
    ).eval()
    with torch.no_grad():
        model.features.block1.conv.weight[2] = 0.0
        model.features.block1.conv.bias[2] = 0.5
    result = maximize(model, "features.block1.conv", steps=20, quiet=True)
    assert result.flat.tolist() == [False, False, True, False]
    assert result.gain[2] == 0 and result.summary()[2]["flat"] is True


def test_composed_objectives_score_what_they_say(striped):
    model, _, _, norm = striped
    objective = channel(BLOCK2, 4) - 0.5 * tv()
    assert objective.layers == {BLOCK2} and "tv()" in objective.name
    result = maximize(
        model,
        channels=[0, 1],
        objective=objective,
        steps=30,
        seed=2,
        normalization=norm,
        quiet=True,
    )
    images = result.images
    act = _channel_means(model, images, BLOCK2, norm)[:, 4]
    total_variation = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1) + (
        images[..., 1:, :] - images[..., :-1, :]
    ).abs().flatten(1).mean(1)
    torch.testing.assert_close(result.score, act - 0.5 * total_variation, rtol=1e-4, atol=1e-5)
    summed = sum(channel(BLOCK2, c) for c in (1, 2)) / 2
    assert summed.layers == {BLOCK2}


def test_class_logits_need_and_get_the_full_forward(striped):
    model, images, _, norm = striped
    result = maximize(
        model,
        channels=[0, 2],
        objective=class_logit(),
        steps=40,
        lr=0.1,
        normalization=norm,
        quiet=True,
    )
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    with torch.no_grad():
        logits = model((result.images - mean) / std)
        data_logits = model((images - mean) / std)
    torch.testing.assert_close(result.score, logits[[0, 1], [0, 2]], rtol=1e-4, atol=1e-4)
    assert (logits[[0, 1], [0, 2]] > data_logits[:, [0, 2]].amax(0)).all()


def test_signals_are_optimized_as_1d_inputs():
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn1d", num_classes=3, in_channels=2, widths=(4, 6))
    result = maximize(model.eval(), "features.block2", [0, 5], steps=20, quiet=True)
    assert result.images.shape == (2, 2, 40)
    assert (result.gain > 0).all()


def test_bad_requests_raise_clear_errors(striped):
    model = striped[0]
    with pytest.raises(XaikitConfigError, match="out of range"):
        maximize(model, BLOCK2, [16], steps=1, quiet=True)
    with pytest.raises(XaikitConfigError, match="pass a layer"):
        maximize(model, steps=1, quiet=True)
    with pytest.raises(XaikitConfigError, match="param"):
        maximize(model, BLOCK2, [0], param="cppn", quiet=True)
    with pytest.raises(xaikit.errors.DataError, match="channel"):
        maximize(model, BLOCK2, [0], steps=1, normalization={"mean": [0.5, 0.5], "std": [0.1, 0.2]})


def test_in_place_operations_after_the_layer_do_not_change_what_is_maximized():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Conv2d(4, 2, 3)
    ).eval()
    common = dict(steps=15, size=12, seed=0, objective=-channel("0"), quiet=True)
    stopped = maximize(model, channels=[0, 1, 2, 3], **common)
    full = maximize(model, channels=[0, 1, 2, 3], stop=False, **common)
    assert (stopped.score > 0).any()  # minimizing a conv output: it goes negative, not 0
    torch.testing.assert_close(full.images, stopped.images, rtol=0, atol=1e-6)


def test_redirected_relu_only_helps_elements_without_any_ordinary_gradient():
    from xaikit.filters._relu import RedirectedReLU

    x = torch.tensor([[-1.0, 2.0, -3.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    weights = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 0.5]])
    with RedirectedReLU():
        out = torch.relu(x)
    torch.testing.assert_close(out, x.detach().clamp(min=0))
    score = (out * weights).sum()
    (grad,) = torch.autograd.grad(-score, x)  # the loss maximize descends
    # row 0 has an ordinary gradient (x > 0 at index 1): plain ReLU backward. Row 1 is all
    # negative: the gradient passes where ascent raises the score (d(score)/d(out) > 0).
    assert (-grad).tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.5]]


@pytest.mark.parametrize(
    "relu",
    [
        lambda t: t.relu_(),
        lambda t: torch.relu_(t),
        lambda t: torch.nn.functional.relu(t, inplace=True),
        lambda t: torch.nn.functional.relu_(t),
        lambda t: torch.nn.ReLU(inplace=True)(t),
    ],
)
def test_the_redirected_relu_keeps_an_in_place_relu_in_place(relu):
    """An in-place ReLU rectifies its tensor under the redirect too (code that keeps using
    the tensor sees the ReLU), with the same redirected gradient as the out-of-place one."""
    from xaikit.filters._relu import RedirectedReLU

    x = torch.tensor([[-1.0, 2.0, -3.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    weights = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 0.5]])
    with RedirectedReLU():
        hidden = x * 1.0  # a computed tensor (a leaf cannot change in place)
        relu(hidden)  # the return value is ignored on purpose
    torch.testing.assert_close(hidden, x.detach().clamp(min=0))
    (grad,) = torch.autograd.grad(-(hidden * weights).sum(), x)
    assert (-grad).tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.5]]


def test_the_redirected_relu_reads_a_channels_last_gradient_without_copying_it():
    """Which images have an ordinary gradient is read from the gradient in its memory
    order (a channels-last one is not copied); the redirected gradient is the same as for
    the contiguous tensor, image by image."""
    from xaikit.filters._relu import RedirectedReLU, _rows

    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6)
    x[1] = -x[1].abs() - 0.1  # image 1 all negative: no ordinary gradient anywhere
    weights = torch.randn(3, 4, 5, 6)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        leaf = x.contiguous(memory_format=layout).requires_grad_(True)
        with RedirectedReLU():
            out = torch.relu(leaf * 1.0)
        (grad,) = torch.autograd.grad(-(out * weights).sum(), leaf)
        grads.append(grad)
    assert torch.equal(grads[0], grads[1])
    assert bool((grads[0][1] != 0).any())  # the redirect let some through for image 1
    assert torch.equal(grads[0][1] != 0, (weights[1] > 0))  # where ascent raises the score

    last = x.contiguous(memory_format=torch.channels_last)
    rows = _rows(last)
    assert rows.data_ptr() == last.data_ptr() and rows.shape == (3, 120)
    for image in range(3):
        assert torch.equal(rows[image].sort().values, x[image].flatten().sort().values)
