"""Multi-label heatmaps: one map per label a multi-label model predicts, from one call.

Loads the shipped ``shapes-multilabel`` model (images hold 1-3 shapes, an independent
sigmoid per label), explains every label it predicts (``target="positive"``) and, to compare,
every label the image really carries (a multi-hot target), and writes

* ``labels.png``         - per image, one Grad-CAM map per predicted label (title: p, truth);
* ``true_labels.png``    - the same for the true labels, each with its ground-truth mask;
* ``labels.json``        - per image: labels, probabilities, and the share of each map's energy
  inside the label's own mask (the energy pointing game).

Run: ``python examples/multilabel_heatmaps.py --out multilabel`` (``--fast`` for a quick check).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import xaikit
from xaikit.data import load
from xaikit.evaluate import energy_pointing_game
from xaikit.explain import explain
from xaikit.io import atomic_write_json
from xaikit.viz import save_figure
from xaikit.viz.report_figures import label_grid_figure


def _titles(result, names, truth) -> list[list[str | None]]:
    """Cell titles ``"circle p=0.93 (true)"``; ``None`` for padding of ragged targets."""
    rows = []
    for i, (targets, valid) in enumerate(zip(result.targets.tolist(), result.valid.tolist())):
        row = []
        for k, (cls, ok) in enumerate(zip(targets, valid)):
            if not ok:
                row.append(None)
                continue
            mark = "true" if bool(truth[i, cls]) else "false alarm"
            row.append(f"{names[cls]} p={float(result.probabilities[i, k]):.2f} ({mark})")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="multilabel-out", help="output folder")
    parser.add_argument("--model", default="shapes-multilabel", help="reference name or path")
    parser.add_argument("--method", default="gradcam", help="heatmap method (default gradcam)")
    parser.add_argument("--fast", action="store_true", default=os.environ.get("XAIKIT_FAST") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    count = 3 if args.fast else 8

    model, card = xaikit.load_model(args.model)
    names = card["class_names"]
    test = load("shapes-multilabel", "test", n=count, size=card["input_shape"][-1])
    images = torch.stack([test[i][0] for i in range(count)])
    truth = test.targets  # (N, K) 0/1
    masks = test.masks(slice(0, count))  # (N, K, H, W): one mask per label

    # Every label the head predicts (its thresholds): ragged, padded, (N, K, H, W) maps.
    predicted = explain(model, images, method=args.method, target="positive", return_result=True)
    figure = label_grid_figure(images, predicted.maps, _titles(predicted, names, truth))
    print("wrote", save_figure(figure, out / "labels.png"))

    # The true labels, as a multi-hot mask; each map shown with that label's ground truth.
    true = explain(model, images, method=args.method, target=truth.bool(), return_result=True)
    label_masks = masks.gather(1, true.targets.clamp(min=0)[..., None, None].expand_as(true.maps))
    energy = energy_pointing_game(true.maps, label_masks)  # (N, K); NaN for padding
    figure = label_grid_figure(images, true.maps, _titles(true, names, truth), masks=label_masks)
    print("wrote", save_figure(figure, out / "true_labels.png"))

    summary = []
    for i in range(count):
        rows = [
            {
                "label": names[cls],
                "probability": round(float(true.probabilities[i, k]), 4),
                "energy_in_mask": round(float(energy[i, k]), 4),
            }
            for k, cls in enumerate(true.targets[i].tolist())
            if bool(true.valid[i, k])
        ]
        summary.append({"image": i, "true_labels": rows})
    path = out / "labels.json"
    atomic_write_json(path, summary)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
