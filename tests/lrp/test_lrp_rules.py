"""LRP rules on a tiny network with set weights: hand-computed relevances, conservation,
K targets in one call, and the ``explain(method="lrp")`` integration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit.explain as X
from xaikit.errors import XaikitConfigError
from xaikit.lrp import (
    AlphaBeta,
    Composite,
    Epsilon,
    Flat,
    Gamma,
    Pass,
    WSquare,
    ZBox,
    ZPlus,
    lrp,
    relevance_at,
    stabilize,
)


def tiny_net() -> nn.Module:
    """x (2) -> Linear(2, 3) -> ReLU -> Linear(3, 1), no biases.

    W1 = [[1, 1], [2, -3], [-1, 1]], W2 = [[2, 1, -1]]. For x = [1, 2]:
    z1 = W1 x = [3, -4, 1], a = relu(z1) = [3, 0, 1], y = W2 a = 6 + 0 - 1 = 5.
    """
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -3.0], [-1.0, 1.0]]))
        net[2].weight.copy_(torch.tensor([[2.0, 1.0, -1.0]]))
    return net.eval().double()


X0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
#: A stabilizer too small to show in float64 results (the default 1e-6 would).
TINY = 1e-15


def relevance(rules: dict, x: torch.Tensor = X0) -> torch.Tensor:
    return lrp(tiny_net(), x, 0, composite=Composite(rules)).relevance[0, 0]


def test_stabilize_matches_zennit_formula() -> None:
    z = torch.tensor([-2.0, 0.0, 3.0])
    # z + eps * sign(z), sign(0) = +1
    assert torch.equal(stabilize(z, 0.5), torch.tensor([-2.5, 0.5, 3.5]))


def test_epsilon_by_hand() -> None:
    # R_out = y = 5. Layer 2, eps = 0.5: s = 5 + 0.5 = 5.5, R_a = a * w * R / s
    #   = [6, 0, -1] * 5 / 5.5 = [60/11, 0, -10/11]; ReLU passes it on.
    # Layer 1: s = z1 + 0.5 sign(z1) = [3.5, -4.5, 1.5], c = R / s = [120/77, 0, -20/33],
    #   R_x = x * (W1^T c) = [1 * (120/77 + 20/33), 2 * (120/77 - 20/33)]
    #       = [500/231, 440/231]
    r = relevance({nn.Linear: Epsilon(0.5)})
    torch.testing.assert_close(r, torch.tensor([500 / 231, 440 / 231], dtype=torch.float64))
    # eps absorbs relevance: the total is below y = 5
    assert float(r.sum()) == pytest.approx(940 / 231)


def test_zplus_by_hand() -> None:
    # Layer 2: only a_j w_j^+ > 0 counts: [6, 0, 0] / 6 * 5 = [5, 0, 0].
    # Layer 1, neuron 1 (w = [1, 1]): x w^+ = [1, 2], z+ = 3: R_x = [5/3, 10/3].
    r = relevance({nn.Linear: ZPlus(TINY)})
    torch.testing.assert_close(r, torch.tensor([5 / 3, 10 / 3], dtype=torch.float64))
    assert float(r.sum()) == pytest.approx(5.0, rel=1e-9)  # conserved


def test_alpha2_beta1_by_hand() -> None:
    # Layer 2: positive parts [6, 0, 0] (z+ = 6), negative parts [0, 0, -1] (z- = -1):
    #   R_a = 5 * (2 * [6, 0, 0] / 6 - 1 * [0, 0, -1] / -1) = [10, 0, -5].
    # Layer 1, neuron 1 (w = [1, 1], R = 10): contributions [1, 2], no negative part:
    #   2 * 10 * [1, 2] / 3 = [20/3, 40/3].
    # Neuron 3 (w = [-1, 1], R = -5): positive [0, 2] (z+ = 2), negative [-1, 0] (z- = -1):
    #   -5 * (2 * [0, 2] / 2 - [-1, 0] / -1) = -5 * [-1, 2] = [5, -10].
    # R_x = [20/3 + 5, 40/3 - 10] = [35/3, 10/3].
    r = relevance({nn.Linear: AlphaBeta(2, 1, TINY)})
    torch.testing.assert_close(r, torch.tensor([35 / 3, 10 / 3], dtype=torch.float64))


def test_gamma_then_zplus_by_hand() -> None:
    # Layer 2, gamma = 0.25, z = 5 > 0: weights w + 0.25 w^+ = [2.5, 1.25, -1],
    #   contributions a * w' = [7.5, 0, -1] (sum 6.5): R_a = 5 * [7.5, 0, -1] / 6.5
    #   = [75/13, 0, -10/13].
    # Layer 1 (z+): neuron 1: [1, 2] / 3 * 75/13 = [25/13, 50/13]; neuron 3 (w = [-1, 1]):
    #   positive parts [0, 2] / 2 * (-10/13) = [0, -10/13]. R_x = [25/13, 40/13].
    r = relevance({"0": ZPlus(TINY), "2": Gamma(0.25, TINY)})
    torch.testing.assert_close(r, torch.tensor([25 / 13, 40 / 13], dtype=torch.float64))


def test_flat_and_wsquare_first_layer_by_hand() -> None:
    # Layer 2 epsilon 0.5: R_a = [60/11, 0, -10/11] (see test_epsilon_by_hand).
    # Flat: every input of a neuron gets R_k / 2: [(60/11 - 10/11) / 2] * 2 = [25/11] * 2.
    flat = relevance({"0": Flat(TINY), "2": Epsilon(0.5)})
    torch.testing.assert_close(flat, torch.tensor([25 / 11, 25 / 11], dtype=torch.float64))
    # W^2: neuron 2 has w^2 = [4, 9] but R = 0; neurons 1 and 3 have w^2 = [1, 1]: the same.
    ws = relevance({"0": WSquare(TINY), "2": Epsilon(0.5)})
    torch.testing.assert_close(ws, torch.tensor([25 / 11, 25 / 11], dtype=torch.float64))
    # first= gives the same rule to the first linear layer only
    first = lrp(tiny_net(), X0, 0, composite=Composite({nn.Linear: Epsilon(0.5)}, first=Flat(TINY)))
    torch.testing.assert_close(first.relevance[0, 0], flat)


def test_zbox_by_hand() -> None:
    # One layer y = w x, w = [1, -2], x = [0.5, 0.25], bounds l = 0, h = 1:
    #   z = 0.5 - 0.5 = 0 ... use x = [0.5, 0.1]: z = 0.5 - 0.2 = 0.3 = R_out.
    #   l w^+ = 0, h w^- = -2: s = z - (0 + -2) = 2.3.
    #   R_x = (x w - l w^+ - h w^-) * R / s = ([0.5, -0.2] - [0, 0] - [0, -2]) * 0.3 / 2.3
    #       = [0.5, 1.8] * 0.3 / 2.3
    net = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
    x = torch.tensor([[0.5, 0.1]], dtype=torch.float64)
    r = lrp(net, x, 0, composite=Composite({nn.Linear: ZBox(0.0, 1.0, TINY)})).relevance[0, 0]
    torch.testing.assert_close(r, torch.tensor([0.5, 1.8], dtype=torch.float64) * 0.3 / 2.3)


def test_pass_and_norm_on_average_pooling() -> None:
    # avg-pool of [1, 3] (kernel 2) = 2 -> Linear(1 -> 1, w = 1); R_out = 2.
    # Norm: R_i = a_i / (sum_i a_i / 2) * R / 2 = [1, 3] / 4 * 2 = [0.5, 1.5]
    # (the plain gradient would give the uniform [1, 1]).
    net = nn.Sequential(nn.AvgPool1d(2), nn.Flatten(), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        net[2].weight.fill_(1.0)
    x = torch.tensor([[[1.0, 3.0]]], dtype=torch.float64)
    r = lrp(net, x, 0, composite="epsilon-plus", epsilon=TINY, stabilizer=TINY).relevance
    torch.testing.assert_close(r[0, 0, 0], torch.tensor([0.5, 1.5], dtype=torch.float64))
    # max-pooling: winner takes all (its gradient)
    net[0] = nn.MaxPool1d(2)
    r = lrp(net, x, 0, composite="epsilon-plus", epsilon=TINY).relevance[0, 0, 0]
    torch.testing.assert_close(r, torch.tensor([0.0, 3.0], dtype=torch.float64))
    # Pass: relevance goes through an activation untouched
    net = nn.Sequential(nn.Tanh(), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    out = lrp(net, x, 0, composite=Composite({nn.Tanh: Pass(), nn.Linear: Epsilon(1e-12)}))
    t = torch.tanh(x[0])
    torch.testing.assert_close(out.relevance[0, 0], t)  # R_j = a_j w_j * y / y


class ReluNet(nn.Module):
    """conv -> ReLU -> max-pool -> conv -> ReLU -> avg-pool -> linear, no biases."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.fc = nn.Linear(32, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@pytest.mark.parametrize("composite", ["epsilon-plus", "epsilon-alpha2-beta1"])
def test_conservation_without_biases(composite: str) -> None:
    torch.manual_seed(0)
    net = ReluNet().eval()
    x = torch.randn(4, 3, 12, 12)
    out = lrp(net, x, [[0, 1, 2]] * 4, composite=composite, epsilon=1e-9, stabilizer=1e-9)
    logits = net(x)
    assert out.scores.shape == (4, 3)
    torch.testing.assert_close(out.scores, logits[:, :3].detach())
    # input relevance sums to the explained logit
    err = (out.total - out.scores).abs().max()
    assert float(err) < 1e-5 * max(1.0, float(out.scores.abs().max()))
    assert float(out.relevance.abs().sum()) > 0


def test_k_targets_in_one_forward_equal_single_calls() -> None:
    torch.manual_seed(1)
    net = ReluNet().eval()
    x = torch.randn(3, 3, 12, 12)
    calls = []
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    targets = torch.tensor([[0, 4, 2], [1, 1, 3], [4, 0, 2]])
    many = lrp(net, x, targets, composite="epsilon-alpha2-beta1").relevance
    assert len(calls) == 1  # one forward pass for 3 x 3 targets
    handle.remove()
    assert many.shape == (3, 3, 3, 12, 12)
    for k in range(3):
        one = lrp(net, x, targets[:, k], composite="epsilon-alpha2-beta1").relevance[:, 0]
        torch.testing.assert_close(many[:, k], one, rtol=1e-5, atol=1e-7)
    # the same class twice gives the same map; different classes differ
    torch.testing.assert_close(many[1, 0], many[1, 1])
    assert not torch.allclose(many[0, 0], many[0, 1])


def test_relevance_at_layer_is_per_channel() -> None:
    torch.manual_seed(2)
    net = ReluNet().eval()
    x = torch.randn(2, 3, 12, 12)
    at = relevance_at(net, x, "features.4", [[0, 1]] * 2, composite="epsilon-plus", epsilon=1e-9)
    assert at.relevance.shape == (2, 2, 8, 6, 6)
    assert at.channels.shape == (2, 2, 8)
    torch.testing.assert_close(at.channels.sum(-1), at.total)
    # relevance is conserved down to the layer too (no biases)
    torch.testing.assert_close(at.total, at.scores, rtol=1e-5, atol=1e-6)
    # relevance at the layer is its output times the layer-level ratio: zero where ReLU is 0
    act = net.features[:5](x)
    assert bool((at.relevance[:, 0][act == 0] == 0).all())


def test_explain_method_lrp() -> None:
    torch.manual_seed(3)
    net = ReluNet().eval()
    x = torch.randn(2, 3, 12, 12)
    result = X.explain(
        net,
        x,
        method="lrp",
        target=[[0, 2], [1, 3]],
        composite="epsilon-plus",
        epsilon=1e-9,
        return_result=True,
    )
    assert result.maps.shape == (2, 2, 12, 12) and result.raw.shape == (2, 2, 12, 12)
    direct = lrp(net, x, [[0, 2], [1, 3]], composite="epsilon-plus", epsilon=1e-9)
    torch.testing.assert_close(result.raw, direct.map)  # channels summed
    assert result.conservation is not None
    torch.testing.assert_close(result.conservation, result.scores, rtol=1e-5, atol=1e-6)
    assert "conservation" in result.to_numpy()
    # intermediate layer through explain
    layered = X.explain(net, x, method="lrp", layer="features.4", return_result=True)
    assert layered.raw.shape == (2, 1, 6, 6) and layered.maps.shape == (2, 1, 12, 12)
    assert layered.layer == "features.4" and result.layer is None  # where relevance was taken
    # options are checked
    with pytest.raises(XaikitConfigError, match="unknown option"):
        X.explain(net, x, method="lrp", alpha=3)
    with pytest.raises(XaikitConfigError, match="unknown LRP composite 'eps'"):
        X.explain(net, x, method="lrp", composite="eps")


def test_explain_lrp_chunked_matches_one_call() -> None:
    torch.manual_seed(4)
    net = ReluNet().eval()
    x = torch.randn(5, 3, 12, 12)
    whole = X.explain(net, x, method="lrp", target=[[0, 1]] * 5, return_result=True)
    chunked = X.explain(
        net, x, method="lrp", target=[[0, 1]] * 5, memory_budget="60K", return_result=True
    )
    torch.testing.assert_close(chunked.raw, whole.raw, rtol=1e-5, atol=1e-7)
    assert chunked.conservation is not None and chunked.conservation.shape == (5, 2)
    torch.testing.assert_close(chunked.conservation, whole.conservation)


def test_bad_rule_parameters_are_refused() -> None:
    with pytest.raises(XaikitConfigError, match="alpha - beta must be 1"):
        AlphaBeta(3, 1)
    with pytest.raises(XaikitConfigError, match="unknown LRP rule"):
        Composite({nn.Linear: "epsilonn"})
    with pytest.raises(XaikitConfigError, match="unknown layer"):
        lrp(tiny_net(), X0, 0, composite={"fc9": "zplus"})
    with pytest.raises(XaikitConfigError, match="needs the input's bounds"):
        lrp(ReluNet(), torch.randn(1, 3, 8, 8) * 3, 0, composite="epsilon-gamma-box")
    with pytest.raises(XaikitConfigError, match="out of range"):
        lrp(tiny_net(), X0, 3)


def test_relevance_at_takes_predicted_and_refuses_other_words() -> None:
    torch.manual_seed(5)
    net = ReluNet().eval()
    x = torch.randn(3, 3, 12, 12)
    predicted = net(x).argmax(dim=1)
    by_word = relevance_at(net, x, "features.4", target="predicted")
    by_index = relevance_at(net, x, "features.4", target=predicted)
    torch.testing.assert_close(by_word.relevance, by_index.relevance, rtol=0, atol=0)
    assert by_word.channels.shape == (3, 1, by_word.relevance.shape[2])
    with pytest.raises(XaikitConfigError, match="use xaikit.explain"):
        relevance_at(net, x, "features.4", target="positive")
