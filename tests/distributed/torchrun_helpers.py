"""Launch xaikit commands with torchrun (gloo, CPU) and in one process, the same way; the
folder of images the distributed tests explain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def environment() -> dict[str, str]:
    """One thread per process: torchrun's default with several ranks; the single-process
    reference uses it too, since the thread count changes the bits of a convolution."""
    env = dict(os.environ, OMP_NUM_THREADS="1", XAIKIT_QUIET="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def command(args: list[str], ranks: int) -> list[str]:
    """``python -m xaikit ARGS`` for one rank, else the torchrun launch of ``ranks``."""
    if ranks == 1:
        return [sys.executable, "-m", "xaikit", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(ranks),
        "--standalone",
        "-m",
        "xaikit",
        *args,
    ]


def run(args: list[str], ranks: int, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(args, ranks),
        capture_output=True,
        text=True,
        env=environment(),
        timeout=timeout,
        cwd=Path(__file__).parent,
    )


def make_images(folder: Path, n: int = 40) -> Path:
    """``n`` seeded noise images of a few sizes, some in a subfolder, and two files that
    are not images (``bad.png``, ``sub/im06a.png``)."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        pixels = (rng.random((40 + i % 5, 44, 3)) * 255).astype("uint8")
        where = folder / "sub" if i % 3 == 0 else folder
        Image.fromarray(pixels).save(where / f"im{i:02d}.png")
    (folder / "bad.png").write_text("not an image")
    (folder / "sub" / "im06a.png").write_text("not an image either")
    return folder


def output_files(out: Path) -> dict[str, bytes]:
    """Every file a run wrote but its run-level records (times, world size differ)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("results.json", "results.jsonl")
    }
