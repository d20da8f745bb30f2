"""Quickstart: explain a reference CNN's predictions on shapes test images.

Loads the shipped ``shapes-multiclass`` model (or any checkpoint given with ``--model``),
takes a few test images of the built-in ``shapes`` data set, and writes

* ``gradcam_<i>.png`` - Grad-CAM over each image, titled with the prediction;
* ``methods.png``     - five methods side by side, computed from one call;
* ``gradcam/explanation.npz`` + ``.json`` - the raw maps, targets and scores for later use.

Run: ``python examples/quickstart.py --out quickstart`` (add ``--fast`` for a quick check).
Everything is offline and headless.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import xaikit
from xaikit.data import load
from xaikit.explain import explain
from xaikit.viz import save_figure, save_overlay_figure
from xaikit.viz.report_figures import method_grid_figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="quickstart-out", help="output folder")
    parser.add_argument("--model", default="shapes-multiclass", help="reference name or path")
    parser.add_argument("--fast", action="store_true", default=os.environ.get("XAIKIT_FAST") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    count = 2 if args.fast else 6

    # 1. A model and its card: class names, input shape, normalization, metrics.
    model, card = xaikit.load_model(args.model)
    size = card["input_shape"][-1]
    print(f"{args.model}: {card['architecture']}, classes {card['class_names']}")

    # 2. Test images from the built-in generator (with ground-truth masks), at the model's size.
    test = load("shapes", "test", n=count, size=size)
    images = torch.stack([test[i][0] for i in range(count)])  # (N, 3, H, W) in [0, 1]
    masks = torch.stack([test[i][2][int(test.targets[i])] for i in range(count)])  # (N, H, W)

    # 3. One method: a tensor (N, H, W) in [0, 1]; with return_result, scores and targets too.
    result = explain(model, images, method="gradcam", target="predicted", return_result=True)
    for i in range(count):
        label = card["class_names"][int(result.targets[i, 0])]
        title = f"{label} (p={float(result.probabilities[i, 0]):.2f})"
        path = save_overlay_figure(
            out / f"gradcam_{i}.png", images[i], result.heatmap[i], title=title
        )
        print("wrote", path)
    print("wrote", result.save(out / "gradcam"))

    # 4. Several methods from one call: {method: (N, H, W)}.
    methods = ["gradcam", "gradcam++", "layercam", "saliency", "ig"]
    maps = explain(model, images, method=methods[:3] if args.fast else methods)
    figure = method_grid_figure(images, maps, masks=masks, title="white: the shape's true mask")
    print("wrote", save_figure(figure, out / "methods.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
