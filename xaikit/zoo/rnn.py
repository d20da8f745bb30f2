"""Recurrent sequence classifiers: ``lstm`` (Hochreiter & Schmidhuber, 1997), with ``gru``
(Cho et al., 2014) and a plain ``rnn`` (tanh) beside it for comparison.

``(N, T, F) -> (N, num_classes)``: ``features`` runs the recurrent layers and returns every
step's hidden state ``(N, T, H)`` (``2H`` when bidirectional); the head pools over time
(last step, mean or max) and applies a linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.zoo.base import ZooModel
from xaikit.zoo.heads import ClassifierHead

CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class TimePool(nn.Module):
    """``(N, T, H) -> (N, H)``: the last step, the mean or the max over time.

    For a bidirectional encoder ``last`` joins the forward direction's last step with the
    backward direction's first step, the two states that have seen the whole sequence.
    """

    def __init__(self, mode: str = "last", bidirectional: bool = False) -> None:
        super().__init__()
        if mode not in ("last", "mean", "max"):
            raise XaikitConfigError(f"time pooling must be 'last', 'mean' or 'max', got {mode!r}")
        self.mode = mode
        self.bidirectional = bidirectional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "max":
            return x.amax(dim=1)
        if self.bidirectional:
            half = x.shape[-1] // 2
            return torch.cat([x[:, -1, :half], x[:, 0, half:]], dim=-1)
        return x[:, -1]

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def chrono_init_(lstm: nn.LSTM, max_length: int, generator: torch.Generator | None = None) -> None:
    """Chrono initialization of an LSTM's gate biases (Tallec & Ollivier, 2018, "Can recurrent
    neural networks warp time?"): forget bias ``log(U(1, max_length - 1))``, input bias its
    negative, so the cell keeps information for up to ``max_length`` steps from the start.

    With PyTorch's default initialization forget gates start near 0.5 and a marker seen 90
    steps earlier has faded long before the end; this is what lets an LSTM learn the
    ``recall`` task at T = 100 (a plain RNN cannot).
    """
    if max_length < 3:
        raise XaikitConfigError(f"chrono_init needs a length of at least 3, got {max_length}")
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if not name.startswith("bias_ih"):
                continue
            uniform = torch.rand(hidden, generator=generator) * (max_length - 2) + 1
            forget = torch.log(uniform).to(bias)
            bias[:hidden] = -forget  # input gate
            bias[hidden : 2 * hidden] = forget  # forget gate
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_hh"):
                bias[: 2 * hidden] = 0.0


class RecurrentEncoder(nn.Module):
    """``(N, T, F) -> (N, T, H * directions)``: the recurrent layers, batch first.

    The torch module is ``self.rnn`` (so ``features.rnn`` is the layer to inspect for LSTM
    gates and cell states).
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        chrono_init: int | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise XaikitConfigError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        if chrono_init is not None:
            if cell != "lstm":
                raise XaikitConfigError("chrono_init applies to LSTM gates; use cell='lstm'")
            chrono_init_(self.rnn, chrono_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise XaikitConfigError(
                f"a recurrent model takes sequences shaped (N, T, F); got shape {tuple(x.shape)}"
            )
        out, _ = self.rnn(x)
        return out


class RecurrentClassifier(ZooModel):
    """A recurrent encoder, pooling over time and a linear head.

    Args:
        in_channels: features per time step ``F``.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        pooling: ``"last"``, ``"mean"`` or ``"max"`` over time.
        chrono_init: for an LSTM, the longest dependency (in steps) to initialize the gate
            biases for (:func:`chrono_init_`); ``None`` keeps PyTorch's initialization.
    """

    def __init__(
        self,
        num_classes: int = 10,
        task: str = "multiclass",
        in_channels: int = 1,
        *,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        chrono_init: int | None = None,
    ) -> None:
        super().__init__(in_channels)
        self.sample_dims = 2
        self.channel_axis = -1
        if hidden_size < 1 or num_layers < 1:
            raise XaikitConfigError("hidden_size and num_layers must be positive")
        self.features = RecurrentEncoder(
            cell,
            in_channels,
            hidden_size,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            chrono_init=chrono_init,
        )
        width = hidden_size * (2 if bidirectional else 1)
        self.head = ClassifierHead(
            width,
            num_classes,
            task,
            pool=TimePool(pooling, bidirectional),
            dropout=dropout,
        )
