"""Token and channels-last models through the command line: `--reshape`, `layers --why`,
and refusals that are one line, exit 2 and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit.cli import main

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def token_checkpoint(tmp_path_factory) -> str:
    """A tiny timm ViT (class token, 4x4 patches of a 32-px input) saved as a checkpoint."""
    torch.manual_seed(0)
    model = xaikit.create_model(
        "timm:vit_tiny_patch16_224",
        num_classes=3,
        img_size=32,
        patch_size=8,
        embed_dim=16,
        depth=2,
        num_heads=2,
    )
    folder = tmp_path_factory.mktemp("vit")
    xaikit.save_model(model, folder / "model", input_shape=[3, 32, 32], class_names=list("abc"))
    return str(folder)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    pixels = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype("uint8")
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


def test_a_vit_is_explained_at_its_last_block_with_the_layout_recorded(
    token_checkpoint, image, tmp_path
):
    out = tmp_path / "out"
    argv = ["explain", str(image), "--model", token_checkpoint, "--out", str(out), "-q"]
    assert main([*argv, "--method", "gradcam,attention-rollout", "--target", "all"]) == 0
    results = json.loads((out / "results.json").read_text())
    text = json.dumps(results)
    assert '"blocks.1.norm1"' in text
    maps = sorted(p.name for p in out.rglob("gradcam.*.npy") if ".raw." not in p.name)
    assert len(maps) == 3  # one per class
    raw = np.load(next(out.rglob("gradcam.0-a.raw.npy")))
    assert raw.shape == (4, 4)  # the patch grid, the class token dropped


def test_a_layer_read_in_the_wrong_layout_is_one_line_exit_2_and_writes_nothing(
    token_checkpoint, image, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["explain", str(image), "--model", token_checkpoint, "--out", str(out), "-q"]
    assert main([*argv, "--layer", "blocks.1.norm1", "--reshape", "nhwc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not read as nhwc" in err[0] and "tokens 1+4x4" in err[0]
    assert "Traceback" not in err[0] and not out.exists()


def test_layers_marks_the_choice_and_says_why_others_are_passed_over(token_checkpoint, capsys):
    assert main(["layers", "--model", token_checkpoint, "--why"]) == 0
    lines = capsys.readouterr().out.splitlines()
    chosen = [line for line in lines if "<- default" in line]
    assert len(chosen) == 1 and chosen[0].split()[0] == "blocks.1.norm1"
    assert "tokens 1+4x4" in chosen[0]
    by_name = {line.split()[0]: line for line in lines if line.strip()}
    assert "zero gradient on its map" in by_name["norm"]  # only the class token reaches the head
    assert "attention internals" in by_name["blocks.1.attn.qkv"]
