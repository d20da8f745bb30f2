"""LSTM gates and states: equal to a hand-written cell step and to nn.LSTM's own outputs."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.filters import lstm_states, lstm_states_all


def _cell_step(x_t, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step written from the PyTorch documentation, gate by gate."""
    hidden = w_hh.shape[1]
    rows = [slice(k * hidden, (k + 1) * hidden) for k in range(4)]  # i, f, g, o

    def pre(k):
        return x_t @ w_ih[rows[k]].T + b_ih[rows[k]] + h @ w_hh[rows[k]].T + b_hh[rows[k]]

    i, f, g, o = (
        torch.sigmoid(pre(0)),
        torch.sigmoid(pre(1)),
        torch.tanh(pre(2)),
        torch.sigmoid(pre(3)),
    )
    c = f * c + i * g
    return i, f, g, o, c, o * torch.tanh(c)


def test_layer_zero_equals_a_hand_written_cell_step_by_step():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 6, 3)
    states = lstm_states(lstm, x)
    h, c = torch.zeros(2, 4), torch.zeros(2, 4)
    for t in range(6):
        i, f, g, o, c, h = _cell_step(
            x[:, t], h, c, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0
        )
        for name, expect in [
            ("input_gate", i),
            ("forget_gate", f),
            ("cell_gate", g),
            ("output_gate", o),
            ("cell", c),
            ("hidden", h),
        ]:
            got = getattr(states, name)[:, t]
            torch.testing.assert_close(got, expect, atol=1e-5, rtol=0, msg=f"{name} at {t}")
    assert states.input_gate.shape == (2, 6, 4) and not states.hidden.requires_grad


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_layers": 2, "bidirectional": True},
        {"num_layers": 2, "proj_size": 3},
        {"batch_first": True, "bidirectional": True},
    ],
)
def test_hidden_and_cell_states_equal_nn_lstm(options):
    torch.manual_seed(1)
    lstm = nn.LSTM(5, 6, **options)
    x = torch.randn(3, 7, 5)  # always batch first for lstm_states
    states = lstm_states_all(lstm, x)
    native_in = x if lstm.batch_first else x.transpose(0, 1)
    with torch.no_grad():
        output, (h_n, c_n) = lstm(native_in)
    output = output if lstm.batch_first else output.transpose(0, 1)
    layers, directions = lstm.num_layers, 2 if lstm.bidirectional else 1
    top = torch.cat([states[(layers - 1, d)].hidden for d in range(directions)], dim=-1)
    torch.testing.assert_close(top, output, atol=1e-5, rtol=0)
    for layer in range(layers):
        for d in range(directions):
            last = -1 if d == 0 else 0  # the backward direction ends at the first step
            s = states[(layer, d)]
            torch.testing.assert_close(
                s.hidden[:, last], h_n[layer * directions + d], atol=1e-5, rtol=0
            )
            torch.testing.assert_close(
                s.cell[:, last], c_n[layer * directions + d], atol=1e-5, rtol=0
            )


def test_every_steps_cell_state_equals_nn_lstm_on_the_prefix():
    torch.manual_seed(2)
    lstm = nn.LSTM(2, 3, batch_first=True)
    x = torch.randn(4, 5, 2)
    cell = lstm_states(lstm, x).cell
    for t in range(5):
        with torch.no_grad():
            _, (_, c_t) = lstm(x[:, : t + 1])
        torch.testing.assert_close(cell[:, t], c_t[0], atol=1e-5, rtol=0)


def test_the_lstm_is_found_inside_a_zoo_model_and_the_figure_draws():
    torch.manual_seed(0)
    model = xaikit.create_model("lstm", num_classes=2, in_channels=2, hidden_size=5).eval()
    x = torch.randn(3, 9, 2)
    states = lstm_states(model, x)
    with torch.no_grad():
        torch.testing.assert_close(states.hidden, model.features(x), atol=1e-5, rtol=0)
    fig = states.figure(sample=1)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.images]) == 7
    backward = lstm_states(nn.LSTM(2, 3, bidirectional=True), x, direction="backward")
    assert backward.direction == 1 and backward.cell.shape == (3, 9, 3)


def test_wrong_models_and_shapes_raise():
    with pytest.raises(XaikitConfigError, match="no nn.LSTM"):
        lstm_states(xaikit.create_model("gru", num_classes=2, in_channels=2), torch.randn(1, 4, 2))
    two = nn.Sequential(nn.LSTM(2, 3), nn.LSTM(3, 3))
    with pytest.raises(XaikitConfigError, match="several LSTMs"):
        lstm_states(two, torch.randn(1, 4, 2))
    with pytest.raises(XaikitConfigError, match=r"\(N, T, 2\)"):
        lstm_states(nn.LSTM(2, 3), torch.randn(1, 4, 5))
    with pytest.raises(XaikitConfigError, match="1 layer"):
        lstm_states(nn.LSTM(2, 3), torch.randn(1, 4, 2), layer=1)
