"""LSTM inspection: gates, cell state and temporal heatmaps on the long-range recall task.

In ``recall`` the label is a marker placed early in a long noisy sequence, so a model that
solves it must keep that step in memory until the end - and a faithful temporal heatmap must
point at it. For the shipped ``recall-lstm`` (or ``--model``), writes

* ``gates.png``      - input, forget and output gates, candidate, cell and hidden state of the
  first sequence over time;
* ``temporal.png``   - per method (gradient x input, integrated gradients, occlusion), which
  steps decided the output of every sequence; blue ticks mark the true marker step;
* ``sequence0.png``  - the first sequence with its attribution as a band behind the trace;
* ``hits.json``      - per method, how often the map peaks on the marker (a temporal
  pointing game), next to random maps, and the mean gate values.

Run: ``python examples/lstm_inspection.py --out lstm`` (``--fast`` for a quick check).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import xaikit
from xaikit.data import load
from xaikit.explain.temporal import explain_sequence
from xaikit.filters import lstm_states
from xaikit.io import atomic_write_json
from xaikit.viz import save_figure, signal_overlay
from xaikit.viz.report_figures import temporal_matrix_figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="lstm-out", help="output folder")
    parser.add_argument("--model", default="recall-lstm", help="reference name or path")
    parser.add_argument("--fast", action="store_true", default=os.environ.get("XAIKIT_FAST") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    count = 6 if args.fast else 32
    methods = ["inputxgrad", "occlusion"] if args.fast else ["inputxgrad", "ig", "occlusion"]

    model, card = xaikit.load_model(args.model)
    length, features = card["input_shape"]  # (T, F)
    test = load("recall", "test", n=count, length=length, num_classes=features - 1)
    sequences = torch.stack([test[i][0] for i in range(count)])  # (N, T, F)
    markers = test.positions  # (N,) the step that carries the label

    # Gates and states, recomputed step by step from the LSTM's own weights.
    states = lstm_states(model, sequences)
    print("wrote", save_figure(states.figure(sample=0), out / "gates.png"))

    # Temporal heatmaps: (N, T) per method, |attribution| scaled to [0, 1] per sequence.
    maps = {m: explain_sequence(model, sequences, method=m) for m in methods}
    figure = temporal_matrix_figure(maps, markers, title="blue: the marker step")
    print("wrote", save_figure(figure, out / "temporal.png"))

    with torch.no_grad():
        predicted = int(model(sequences[:1]).argmax())
    figure = signal_overlay(
        sequences[0],
        maps[methods[0]][0],
        channels_first=False,
        labels=[*test.classes, "noise"],
        title=f"sequence 0: {methods[0]}, predicted {test.classes[predicted]}",
    )
    figure.axes[0].axvline(int(markers[0]), color="tab:blue", linestyle="--")
    print("wrote", save_figure(figure, out / "sequence0.png"))

    generator = torch.Generator().manual_seed(0)
    maps["random"] = torch.rand(count, length, generator=generator)
    hits = {m: float((v.argmax(dim=1) == markers).float().mean()) for m, v in maps.items()}
    atomic_write_json(
        out / "hits.json",
        {"sequences": count, "marker_hit_rate": hits, "mean_gates": states.summary},
    )
    print("wrote", out / "hits.json", hits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
