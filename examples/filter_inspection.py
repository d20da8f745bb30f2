"""Filter inspection: what the convolutions of a reference CNN learned to look for.

For the shipped ``shapes-multiclass`` model (or ``--model``), writes

* ``weights.png``      - the first convolution's kernels as RGB patches;
* ``feature_maps.png`` - one test image's feature maps at the last convolution block;
* ``maximize.png``     - images optimized to excite a few channels of that block;
* ``exemplars.png``    - the test images that excite the same channels most, cropped to the
  receptive field;
* ``atlas.html``       - kernel, maximization and exemplars per channel of the first
  convolution, one self-contained page;
* ``channels.json``    - the numbers behind them (scores, exemplar indices).

Run: ``python examples/filter_inspection.py --out filters`` (``--fast`` for a quick check).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import xaikit
from xaikit.data import load
from xaikit.filters import activations, atlas, exemplars, maximize, weights
from xaikit.io import atomic_write_json, atomic_write_text
from xaikit.viz import save_figure
from xaikit.viz.html import Section, page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="filters-out", help="output folder")
    parser.add_argument("--model", default="shapes-multiclass", help="reference name or path")
    parser.add_argument("--layer", default="auto", help="layer to inspect (default: last block)")
    parser.add_argument("--fast", action="store_true", default=os.environ.get("XAIKIT_FAST") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    pool, channels, steps = (48, [0, 1, 2], 24) if args.fast else (500, list(range(8)), 256)

    model, card = xaikit.load_model(args.model)
    normalization = card.get("normalization")
    test = load("shapes", "test", n=pool, size=card["input_shape"][-1])

    # Kernels: (C_out, C_in, k, k) weights as images, RGB for 3 input channels.
    kernels = weights(model)
    print("wrote", save_figure(kernels.figure, out / "weights.png"), f"({kernels.layer})")

    # Feature maps of one image: {layer: (N, C, h, w)}.
    maps = activations(model, test[0][0][None], args.layer, normalization=normalization)
    layer = next(iter(maps))
    print("wrote", save_figure(maps.figure(layer, 0), out / "feature_maps.png"), f"({layer})")

    # What input makes each channel fire? And which real images do?
    synthetic = maximize(model, layer, channels, steps=steps, seed=0, normalization=normalization)
    print("wrote", save_figure(synthetic.figure, out / "maximize.png"))
    real = exemplars(model, layer, test, k=6, channels=channels, normalization=normalization)
    print("wrote", save_figure(real.figure, out / "exemplars.png"))

    # All three views per channel of the first convolution, as a standalone HTML page.
    first = atlas(
        model, kernels.layer, test, channels, k=6, steps=steps, normalization=normalization
    )
    html = page(
        f"Filter atlas: {args.model}",
        f"layer {first.layer}, {len(channels)} channels, {pool} test images searched",
        [Section("atlas", "Atlas", first.html())],
    )
    atomic_write_text(out / "atlas.html", html)
    print("wrote", out / "atlas.html")

    atomic_write_json(
        out / "channels.json",
        {
            "layer": layer,
            "maximization": synthetic.summary(),
            "exemplars": {
                str(c): [int(i) for i in row]
                for c, row in zip(real.channels, real.indices.tolist())
            },
            "mean_activation_of_image_0": [
                round(float(v), 5) for v in maps.channel_means(layer, 0)
            ],
            "strongest_channels_of_image_0": maps.order(layer, 0)[:5].tolist(),
            "first_layer_kernel_norms": [
                round(float(v), 5) for v in torch.linalg.vector_norm(kernels.weight, dim=(1, 2, 3))
            ],
        },
    )
    print("wrote", out / "channels.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
