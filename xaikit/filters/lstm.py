"""LSTM gates and cell states per time step, recomputed exactly from an ``nn.LSTM``'s weights.

``nn.LSTM`` runs as one fused kernel, so its gates cannot be hooked; they are recomputed here
from ``weight_ih_l{k}``, ``weight_hh_l{k}`` and the biases, in PyTorch's gate order
``i, f, g, o`` (Hochreiter & Schmidhuber, 1997, "Long Short-Term Memory"; with the forget
gate of Gers et al., 2000):

    i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)         candidate cell values
    o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
    c_t = f_t * c_{t-1} + i_t * g_t                           cell state
    h_t = o_t * tanh(c_t)            (times ``weight_hr`` when ``proj_size > 0``)

Every layer and both directions are computed (a layer's input is the previous layer's
hidden states of both directions), from zero initial states, as in evaluation mode (no
dropout between layers). The backward direction reads the sequence from its end; its states
are stored at the time step they belong to. The inputs are fed to the LSTM itself: for a
model, ``sequences`` must be what its LSTM receives (true of xaikit's recurrent classifiers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from matplotlib.figure import Figure
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.state import borrowed
from xaikit.filters._plot import new_figure

DIRECTIONS = ("forward", "backward")


@dataclass
class LSTMStates:
    """One layer and direction of an LSTM, per time step; every tensor is ``(N, T, H)``
    (``hidden`` is ``(N, T, proj_size)`` for a projected LSTM).

    Attributes:
        inputs: ``(N, T, F)``: what this layer read (the sequences, or the previous layer's
            hidden states of both directions).
        input_gate, forget_gate, cell_gate, output_gate: ``i, f, g, o`` after their
            non-linearities (``g`` is the candidate cell value, in ``[-1, 1]``).
        cell: ``c_t``; hidden: ``h_t``.
        layer: the layer index; direction: 0 forward, 1 backward.
    """

    inputs: torch.Tensor
    input_gate: torch.Tensor
    forget_gate: torch.Tensor
    cell_gate: torch.Tensor
    output_gate: torch.Tensor
    cell: torch.Tensor
    hidden: torch.Tensor
    layer: int
    direction: int

    def figure(self, sample: int = 0, units: list[int] | None = None) -> Figure:
        """Heatmaps (unit x time) of one sequence: input, i, f, g, o, cell and hidden state."""
        pick = slice(None) if units is None else units
        rows = [
            ("input", self.inputs[sample], "viridis", None),
            ("input gate i", self.input_gate[sample, :, pick], "viridis", (0, 1)),
            ("forget gate f", self.forget_gate[sample, :, pick], "viridis", (0, 1)),
            ("candidate g", self.cell_gate[sample, :, pick], "RdBu_r", (-1, 1)),
            ("output gate o", self.output_gate[sample, :, pick], "viridis", (0, 1)),
            ("cell c", self.cell[sample, :, pick], "RdBu_r", "symmetric"),
            ("hidden h", self.hidden[sample, :, pick], "RdBu_r", "symmetric"),
        ]
        fig = new_figure(9, 1.4 * len(rows) + 0.8)
        axes = fig.subplots(len(rows), 1, sharex=True)
        for ax, (label, values, cmap, limits) in zip(axes, rows):
            data = values.detach().float().cpu().T.numpy()  # (units, T)
            if limits == "symmetric":
                bound = float(abs(data).max()) or 1.0
                limits = (-bound, bound)
            low, high = limits if limits is not None else (None, None)
            image = ax.imshow(
                data, aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest"
            )
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=6)
            fig.colorbar(image, ax=ax, pad=0.01)
        axes[-1].set_xlabel("time step")
        fig.suptitle(
            f"LSTM layer {self.layer} {DIRECTIONS[self.direction]}, sequence {sample}",
            fontsize=10,
        )
        return fig

    @cached_property
    def summary(self) -> dict[str, float]:
        """Mean of each gate over all sequences, steps and units (a quick health check:
        forget gates near 1 keep memory, near 0 forget every step)."""
        return {
            "input_gate": float(self.input_gate.mean()),
            "forget_gate": float(self.forget_gate.mean()),
            "output_gate": float(self.output_gate.mean()),
        }


def find_lstm(model_or_lstm: nn.Module) -> nn.LSTM:
    """The ``nn.LSTM`` itself, or the only one inside a model."""
    if isinstance(model_or_lstm, nn.LSTM):
        return model_or_lstm
    found = [(n, m) for n, m in model_or_lstm.named_modules() if isinstance(m, nn.LSTM)]
    if len(found) == 1:
        return found[0][1]
    if not found:
        raise XaikitConfigError(
            "this model has no nn.LSTM; lstm_states explains LSTMs (not GRUs or plain RNNs)"
        )
    names = ", ".join(n for n, _ in found)
    raise XaikitConfigError(f"this model has several LSTMs ({names}); pass the one to inspect")


def _direction(lstm: nn.LSTM, layer: int, direction: int, inputs: torch.Tensor) -> LSTMStates:
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    w_ih = getattr(lstm, "weight_ih" + suffix)
    w_hh = getattr(lstm, "weight_hh" + suffix)
    w_hr = getattr(lstm, "weight_hr" + suffix) if lstm.proj_size > 0 else None
    batch, steps, _ = inputs.shape
    from_input = inputs @ w_ih.T  # (N, T, 4H): the input part of every step at once
    if lstm.bias:
        from_input = (
            from_input + getattr(lstm, "bias_ih" + suffix) + getattr(lstm, "bias_hh" + suffix)
        )
    size = lstm.hidden_size
    h = inputs.new_zeros(batch, w_hh.shape[1])
    c = inputs.new_zeros(batch, size)
    gates_i, gates_f, gates_g, gates_o, cells, hiddens = ([None] * steps for _ in range(6))
    order = range(steps - 1, -1, -1) if direction else range(steps)
    for t in order:
        i, f, g, o = (from_input[:, t] + h @ w_hh.T).chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        if w_hr is not None:
            h = h @ w_hr.T
        gates_i[t], gates_f[t], gates_g[t], gates_o[t], cells[t], hiddens[t] = i, f, g, o, c, h
    stacked = [torch.stack(v, dim=1) for v in (gates_i, gates_f, gates_g, gates_o, cells, hiddens)]
    return LSTMStates(inputs, *stacked, layer, direction)


def _run(lstm: nn.LSTM, sequences: torch.Tensor, layers: int) -> dict[tuple[int, int], LSTMStates]:
    x = sequences if sequences.dim() == 3 else sequences.unsqueeze(0)
    if x.dim() != 3 or x.shape[-1] != lstm.input_size:
        raise XaikitConfigError(
            f"the LSTM takes sequences (N, T, {lstm.input_size}); got shape "
            f"{tuple(sequences.shape)} (sequences are fed to the LSTM itself)"
        )
    x = x.to(device=lstm.weight_ih_l0.device, dtype=lstm.weight_ih_l0.dtype)
    directions = 2 if lstm.bidirectional else 1
    states: dict[tuple[int, int], LSTMStates] = {}
    with borrowed(lstm):
        for layer in range(layers):
            for direction in range(directions):
                states[(layer, direction)] = _direction(lstm, layer, direction, x)
            x = torch.cat([states[(layer, d)].hidden for d in range(directions)], dim=-1)
    return states


def lstm_states_all(
    model_or_lstm: nn.Module, sequences: torch.Tensor
) -> dict[tuple[int, int], LSTMStates]:
    """Gates and states of every layer and direction: ``{(layer, direction): LSTMStates}``.

    ``(N, T, F)`` sequences (batch first, whatever the LSTM's ``batch_first``; a single
    ``(T, F)`` sequence is taken as ``N = 1``) -> tensors ``(N, T, H)``.
    """
    lstm = find_lstm(model_or_lstm)
    return _run(lstm, sequences, lstm.num_layers)


def lstm_states(
    model_or_lstm: nn.Module,
    sequences: torch.Tensor,
    *,
    layer: int = 0,
    direction: int | str = 0,
) -> LSTMStates:
    """Gates, cell and hidden states of one layer and direction of an LSTM, per step.

    ``(N, T, F)`` sequences -> :class:`LSTMStates` of ``(N, T, H)`` tensors, equal to what
    ``nn.LSTM`` computes (its outputs are the top layer's ``hidden``; ``c_n`` is ``cell`` at
    the last step of the forward direction and the first of the backward one).

    Args:
        model_or_lstm: an ``nn.LSTM``, or a model holding exactly one.
        sequences: the LSTM's input, batch first.
        layer: which layer (0 reads the sequences).
        direction: 0 / ``"forward"`` or 1 / ``"backward"`` (bidirectional LSTMs).

    Raises:
        XaikitConfigError: no or several LSTMs, a wrong input shape, a layer or direction the
            LSTM does not have.
    """
    lstm = find_lstm(model_or_lstm)
    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise XaikitConfigError(f"direction must be 'forward' or 'backward', got {direction!r}")
        direction = DIRECTIONS.index(direction)
    if not 0 <= layer < lstm.num_layers or direction not in range(1 + lstm.bidirectional):
        raise XaikitConfigError(
            f"this LSTM has {lstm.num_layers} layer(s) and "
            f"{1 + lstm.bidirectional} direction(s); got layer={layer}, direction={direction}"
        )
    return _run(lstm, sequences, layer + 1)[(layer, direction)]
