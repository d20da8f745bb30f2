"""Train on your own image folder, then explain the model and write its report.

Your data is a folder with one subfolder per class (optionally inside ``train/`` and
``test/``): ``imagefolder:<dir>`` loads it. To run offline this example first writes such a
folder from the built-in shapes generator into a temporary directory (or ``--folder``), then

* trains a ``simple_cnn`` on it with the same recipe machinery as ``xaikit train``
  (``run/model.safetensors`` + model card, ``run/history.csv``, ``run/curves.png``);
* explains a few test images with three methods (``heatmaps.png``);
* writes the model's self-contained HTML report on the folder's test split (``report.html``).

Run: ``python examples/train_on_image_folder.py --out folder-run`` (``--fast``: 1 epoch).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image

from xaikit.data import load
from xaikit.explain import explain
from xaikit.train.recipe import Recipe, train_recipe
from xaikit.viz import save_figure
from xaikit.viz.report import build_report
from xaikit.viz.report_figures import method_grid_figure


def write_image_folder(folder: Path, per_split: dict[str, int], size: int) -> Path:
    """Save generated shapes as ``folder/<split>/<class>/<index>.png``; returns ``folder``."""
    for split, count in per_split.items():
        shapes = load("shapes", split, n=count, size=size, seed=0)
        for index in range(count):
            name = shapes.classes[int(shapes.targets[index])]
            target = folder / split / name / f"{index:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels = shapes.images[index].permute(1, 2, 0).numpy()  # (H, W, 3) uint8
            Image.fromarray(pixels).save(target)
    return folder


def run(folder: Path, out: Path, fast: bool) -> None:
    size = 32 if fast else 48
    write_image_folder(folder, {"train": 120 if fast else 1500, "test": 24 if fast else 300}, size)
    data = f"imagefolder:{folder}"

    recipe = Recipe(
        data=data,
        model="simple_cnn",
        epochs=1 if fast else 6,
        data_options={"size": size},
        train_options={"optimizer": "adam", "lr": 3e-3, "batch_size": 32, "seed": 0},
    )
    result = train_recipe(recipe, out / "run", device="cpu", quiet=True)
    print(f"trained: test accuracy {result.metrics['test_accuracy']:.3f} -> {result.checkpoint}")

    # The model was trained on inputs normalized by the train split's statistics (as the
    # card records): explain those, and draw the raw pixels.
    test = load(data, "test", size=size, normalize=True)
    pictures = load(data, "test", size=size)
    picks = torch.linspace(0, len(test) - 1, 4 if fast else 8).long().tolist()
    inputs = torch.stack([test[i][0] for i in picks])
    images = torch.stack([pictures[i][0] for i in picks])
    maps = explain(result.model, inputs, method=["gradcam", "layercam", "saliency"])
    with torch.no_grad():
        predicted = result.model(inputs).argmax(dim=1).tolist()
    captions = [
        f"{test.classes[int(test.targets[i])]} -> {test.classes[p]}"
        for i, p in zip(picks, predicted)
    ]
    figure = method_grid_figure(images, maps, captions=captions, title="true -> predicted")
    print("wrote", save_figure(figure, out / "heatmaps.png"))

    report = build_report(
        result.checkpoint,
        data,
        out / "report.html",
        n=6 if fast else 24,
        eval_n=6 if fast else 48,
        eval_steps=4 if fast else 16,
        atlas_steps=8 if fast else 64,
        atlas_channels=3 if fast else 8,
        quiet=True,
    )
    print("wrote", report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="folder-run", help="output folder")
    parser.add_argument("--folder", help="where to write the image folder (default: a temp dir)")
    parser.add_argument("--fast", action="store_true", default=os.environ.get("XAIKIT_FAST") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.folder:
        run(Path(args.folder), out, args.fast)
    else:
        with tempfile.TemporaryDirectory(prefix="xaikit-images-") as tmp:
            run(Path(tmp), out, args.fast)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
