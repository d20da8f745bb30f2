"""Speed and memory of ``xaikit explain`` on a folder (:func:`xaikit.explain.files.explain_files`).

Speed, as ratios measured in one run: the floor is reading the same images and calling
``explain`` on the same batches without writing anything; the pipeline adds the overlay
PNGs, ``.npy`` maps and the journal (``--no-figure``), then the titled figures. Memory: the
pipeline runs in a fresh process on N and on 4N images; with streaming, the peak resident
memory must not grow with the folder (goal: ratio <= 1.1).

    python benchmarks/bench_explain_folder.py --quick          # tiny CNN, 32 images
    python benchmarks/bench_explain_folder.py                  # ResNet-18 at 224 px, 64 images
    python benchmarks/bench_explain_folder.py --device cuda --n 256

Measured on one H100 (16 CPU cores), ResNet-18 at 224 px, 128 images of 120x160, batch 16:
read + explain 1.8 ms/image; with --no-figure 5.8 ms/image (9.9 without the writer
threads); with figures 40 ms/image (matplotlib); peak RSS 1599 MiB for 128 and for 512
images.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import xaikit
from xaikit.explain.adapter import ExplainWarning
from xaikit.explain.api import explain
from xaikit.explain.files import collect_images, explain_files, load_for_model
from xaikit.train.loaders import resolve_device

warnings.simplefilter("ignore", ExplainWarning)


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` random 120x160 images, half PNG and half JPEG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.{'png' if i % 2 else 'jpg'}")


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, list[int], dict | None]:
    device = resolve_device(args.device)
    if args.quick:
        torch.manual_seed(0)
        model = xaikit.create_model("simple_cnn", num_classes=10, widths=(8, 16, 32))
        return model.to(device).eval(), [3, 32, 32], None
    model, card = xaikit.load_model("torchvision:resnet18", device=device)
    return model, [3, args.size, args.size], card["normalization"]


def sync(model: torch.nn.Module) -> None:
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def floor(model, folder: Path, shape, norm, batch: int, methods: list[str]) -> float:
    """Seconds to read every image and explain it in batches, writing nothing."""
    paths = [s.path for s in collect_images([folder])]
    sync(model)
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        x = torch.stack([load_for_model(p, shape, norm)[0] for p in paths[i : i + batch]])
        res = explain(model, x, method=methods, return_result=True)
        _ = [r.maps.cpu() for r in res.values()]
    sync(model)
    return time.perf_counter() - start


def pipeline(
    model, folder: Path, out: Path, shape, norm, batch: int, methods, figures, workers=None
) -> float:
    sync(model)
    start = time.perf_counter()
    explain_files(
        model,
        [folder],
        out,
        method=methods,
        input_shape=shape,
        normalization=norm,
        batch_size=batch,
        figures=figures,
        quiet=True,
        workers=workers,
    )
    sync(model)
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    """Run the pipeline once in this process; print the peak resident memory in MiB."""
    model, shape, norm = build(args)
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp) / "imgs", args.child)
        pipeline(
            model,
            Path(tmp) / "imgs",
            Path(tmp) / "out",
            shape,
            norm,
            args.batch_size,
            args.methods.split(","),
            figures=False,
        )
    print(json.dumps({"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_memory(args: argparse.Namespace, n: int) -> float:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        "--device",
        args.device,
        "--size",
        str(args.size),
        "--batch-size",
        str(args.batch_size),
        "--methods",
        args.methods,
    ] + (["--quick"] if args.quick else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["maxrss_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny CNN at 32 px, 32 images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=None, help="images (default 64; 32 quick)")
    parser.add_argument("--size", type=int, default=224, help="ResNet-18 input size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--methods", default="gradcam")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    n = args.n or (32 if args.quick else 64)
    methods = args.methods.split(",")
    model, shape, norm = build(args)
    print(f"device {args.device}, input {shape}, {n} images of 120x160, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        make_images(folder, n)
        pipeline(model, folder, Path(tmp) / "warm", shape, norm, args.batch_size, methods, True)
        base = floor(model, folder, shape, norm, args.batch_size, methods)
        plain = pipeline(
            model, folder, Path(tmp) / "a", shape, norm, args.batch_size, methods, False
        )
        full = pipeline(model, folder, Path(tmp) / "b", shape, norm, args.batch_size, methods, True)
        serial = pipeline(
            model, folder, Path(tmp) / "c", shape, norm, args.batch_size, methods, False, 0
        )
    per = 1000 / n
    print(f"read + explain, no writes   {base * per:8.1f} ms/image")
    print(f"pipeline, --no-figure, no writer threads {serial * per:8.1f} ms/image")
    print(f"pipeline, --no-figure       {plain * per:8.1f} ms/image  ({plain / base:.2f}x floor)")
    print(f"pipeline, with figures      {full * per:8.1f} ms/image  ({full / base:.2f}x floor)")
    small, large = peak_memory(args, n), peak_memory(args, 4 * n)
    print(
        f"peak RSS: {n} images {small:.0f} MiB, {4 * n} images {large:.0f} MiB "
        f"(ratio {large / small:.2f}; goal <= 1.1: memory bounded by one batch)"
    )


if __name__ == "__main__":
    main()
