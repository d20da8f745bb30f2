"""Explain a torchvision classifier: ResNet-18, its layer found automatically, offline.

``xaikit.load_model("torchvision:resnet18")`` builds the network with random weights (pass
``weights="DEFAULT"`` to ``xaikit.create_model`` for ImageNet weights when you have a
network). Nothing here depends on the weights: it shows the plumbing on a stock model with
ImageNet normalization, and writes

* ``layers.txt``        - the top-level modules whose output is a spatial map, the default
  CAM layer (``layer="auto"``) marked with ``*``;
* ``resnet18.png``      - Grad-CAM, Grad-CAM++, LayerCAM and saliency of the top class for a few
  generated 224x224 images, side by side;
* ``resnet18_layer3.png`` - Grad-CAM at an earlier layer, chosen by name (finer maps);
* ``top5.json``         - each image's five highest-scoring ImageNet class indices.

Run: ``python examples/explain_torchvision.py --out resnet`` (``--fast``: fewer, smaller images).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import xaikit
from xaikit.data import load, normalize
from xaikit.explain import explain
from xaikit.explain.layers import auto_layer, trace_layers
from xaikit.io import atomic_write_json, atomic_write_text
from xaikit.viz import save_figure
from xaikit.viz.report_figures import method_grid_figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="torchvision-out", help="output folder")
    parser.add_argument("--model", default="torchvision:resnet18", help="torchvision:<name>")
    parser.add_argument("--fast", action="store_true", default=os.environ.get("XAIKIT_FAST") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    count, size = (2, 112) if args.fast else (4, 224)
    torch.manual_seed(0)  # the random weights of this demonstration model

    model, card = xaikit.load_model(args.model)
    images = torch.stack([item[0] for item in load("shapes", "test", n=count, size=size)])
    x = normalize(images, card["normalization"])  # the model expects ImageNet statistics

    default = auto_layer(model, x[:1])
    lines = [
        f"{'*' if row.name == default else ' '} {row.name:<12} {row.type:<12} {row.output_shape}"
        for row in trace_layers(model, x[:1])
        if row.output_shape is not None and len(row.output_shape) == 4 and "." not in row.name
    ]
    atomic_write_text(out / "layers.txt", "\n".join(lines) + "\n")
    print("wrote", out / "layers.txt", f"(default CAM layer: {default})")

    methods = ["gradcam", "gradcam++", "layercam", "saliency"]
    maps = explain(model, x, method=methods, target="predicted")
    figure = method_grid_figure(images, maps, title=f"{args.model}: top class, layer {default}")
    print("wrote", save_figure(figure, out / "resnet18.png"))

    earlier = explain(model, x, method="gradcam", layer="layer3")
    figure = method_grid_figure(images, {"gradcam @ layer3": earlier}, title="a layer by name")
    print("wrote", save_figure(figure, out / "resnet18_layer3.png"))

    with torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices.tolist()
    atomic_write_json(out / "top5.json", {"layer": default, "top5": top5})
    print("wrote", out / "top5.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
