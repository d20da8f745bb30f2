"""Size and type limits checked before a model is built (xaikit.zoo.limits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_files import save_tiny

import xaikit
from xaikit.errors import CheckpointError, XaikitConfigError
from xaikit.zoo.limits import MAX_PARAMS_ENV, check_input_shape, estimate_zoo

ZOO_CONFIGS = [
    ("simple_cnn", 10, "multiclass", 3, {}),
    ("simple_cnn", 6, "multilabel", 1, {"widths": [4, 8, 16, 32], "kernel_size": 5}),
    ("simple_cnn", 2, "binary", 3, {"widths": [3, 5], "batchnorm": False, "pools": 0}),
    ("simple_cnn1d", 4, "multiclass", 2, {"widths": [4, 6, 8]}),
    ("vgg_small", 10, "multiclass", 3, {}),
    ("vgg_small", 7, "multiclass", 1, {"widths": [4, 8], "convs_per_stage": 3}),
    ("vgg_small", 5, "multiclass", 3, {"widths": [4], "batchnorm": False, "input_size": 8}),
    ("resnet_small", 10, "multiclass", 3, {}),
    ("resnet_small", 3, "multiclass", 1, {"widths": [8, 8, 16, 16], "blocks_per_stage": 2}),
    ("resnet_small", 2, "binary", 3, {"widths": [4, 8], "input_size": 128, "batchnorm": False}),
    ("resnet_small", 4, "multiclass", 3, {"widths": [4, 8, 8], "input_size": 4}),
    ("lstm", 10, "multiclass", 1, {}),
    ("lstm", 3, "multiclass", 5, {"hidden_size": 7, "num_layers": 3, "bidirectional": True}),
    ("gru", 4, "multilabel", 2, {"hidden_size": 9, "num_layers": 2}),
    ("rnn", 2, "binary", 3, {"hidden_size": 5, "bidirectional": True}),
]


@pytest.mark.parametrize(("name", "classes", "task", "channels", "config"), ZOO_CONFIGS)
def test_estimate_is_exact_for_zoo_models(name, classes, task, channels, config) -> None:
    model = xaikit.create_model(
        name, num_classes=classes, task=task, in_channels=channels, **config
    )
    estimate = estimate_zoo(name, classes, task, channels, config)
    assert estimate is not None
    assert estimate[0] == sum(p.numel() for p in model.parameters())


def test_numpy_ints_are_ints() -> None:
    np = pytest.importorskip("numpy")
    model = xaikit.create_model("simple_cnn", num_classes=np.int64(3), widths=[np.int64(4), 8])
    assert model.head.fc.out_features == 3


def test_every_zoo_architecture_has_a_formula() -> None:
    for name in xaikit.list_models():
        assert estimate_zoo(name, 10, "multiclass", 3, {}) is not None, name


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"widths": [16, 12000, 12000]}, "widths"),
        ({"num_classes": 20_000_000}, "num_classes"),
        ({"kernel_size": 6000}, "kernel_size"),
        ({"widths": [4096, 4096, 4096], "kernel_size": 31}, "widths"),
    ],
)
def test_huge_zoo_configs_are_refused_before_allocation(config, field, monkeypatch) -> None:
    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", no_build)
    with pytest.raises(XaikitConfigError, match=field) as info:
        xaikit.create_model("simple_cnn", **config)
    assert "\n" not in str(info.value)


def test_deep_resnet_and_activation_limits() -> None:
    with pytest.raises(XaikitConfigError, match="blocks_per_stage"):
        xaikit.create_model("resnet_small", blocks_per_stage=3000)
    with pytest.raises(XaikitConfigError, match="activations"):
        xaikit.create_model("simple_cnn", widths=[256, 256], input_size=4096, pools=0)


def test_limit_can_be_raised_and_lowered_by_env(monkeypatch) -> None:
    monkeypatch.setenv(MAX_PARAMS_ENV, "100")
    with pytest.raises(XaikitConfigError, match=MAX_PARAMS_ENV):
        xaikit.create_model("simple_cnn", widths=[4, 8])
    monkeypatch.setenv(MAX_PARAMS_ENV, "not-a-number")
    with pytest.raises(XaikitConfigError, match=MAX_PARAMS_ENV):
        xaikit.create_model("simple_cnn", widths=[4, 8])
    monkeypatch.setenv(MAX_PARAMS_ENV, "1000000")
    xaikit.create_model("simple_cnn", widths=[4, 8])


@pytest.mark.parametrize(
    ("name", "kwargs", "field"),
    [
        ("simple_cnn", {"widths": "abc"}, "widths"),
        ("simple_cnn", {"widths": [4, "8"]}, "widths"),
        ("simple_cnn", {"widths": [4, 0]}, "widths"),
        ("simple_cnn", {"num_classes": 2.5}, "num_classes"),
        ("simple_cnn", {"num_classes": True}, "num_classes"),
        ("simple_cnn", {"kernel_size": 3.0}, "kernel_size"),
        ("resnet_small", {"blocks_per_stage": "3"}, "blocks_per_stage"),
        ("lstm", {"hidden_size": -1}, "hidden_size"),
        ("torchvision:resnet18", {"num_classes": 2.5}, "num_classes"),
    ],
)
def test_wrong_types_name_the_field(name, kwargs, field) -> None:
    with pytest.raises(XaikitConfigError, match=field) as info:
        xaikit.create_model(name, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (["a"], "list of 2 to 4 positive ints"),
        ("3x16x16", "list of 2 to 4 positive ints"),
        ([3, 16, 16, 1, 1], "list of 2 to 4 positive ints"),
        ([3, 0, 16], "list of 2 to 4 positive ints"),
        ([1, 5000, 8], "per side"),
        ([64, 4096, 4096], "elements"),
    ],
)
def test_input_shape_checks(shape, message) -> None:
    with pytest.raises(XaikitConfigError, match=message):
        check_input_shape(shape)


def test_good_input_shapes_pass() -> None:
    assert check_input_shape(None) is None
    assert check_input_shape([3, 224, 224]) == [3, 224, 224]
    assert check_input_shape((40, 1)) == [40, 1]


def test_torchvision_absurd_option_refused_by_meta_count(monkeypatch) -> None:
    pytest.importorskip("torchvision")
    # 1,000,000 classes is a legal num_classes, but vgg11's 4096-wide classifier then has
    # ~4.2 G parameters: only the meta-device count finds it.
    with pytest.raises(XaikitConfigError, match="parameters") as info:
        xaikit.create_model("torchvision:vgg11", num_classes=1_000_000)
    assert "\n" not in str(info.value)
    with pytest.raises(XaikitConfigError, match="num_classes"):
        xaikit.create_model("torchvision:resnet18", num_classes=100_000_000)
    with pytest.raises(XaikitConfigError, match="image_size"):
        xaikit.create_model("torchvision:vit_b_16", image_size=8192)
    monkeypatch.setenv(MAX_PARAMS_ENV, "1000")
    with pytest.raises(XaikitConfigError, match="parameters"):
        xaikit.create_model("torchvision:resnet18", num_classes=10)


def _planted(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "m"
    folder.mkdir(parents=True)
    save_tiny(folder / "model")
    card_path = folder / "model.json"
    card = json.loads(card_path.read_text())
    for key, value in changes.items():
        if key == "input_shape":
            card["input_shape"] = value
        else:
            card["config"][key] = value
    card_path.write_text(json.dumps(card))
    return folder


def test_card_with_huge_widths_is_refused_by_load_model(tmp_path) -> None:
    folder = _planted(tmp_path, widths=[16, 12000, 12000])
    with pytest.raises(CheckpointError, match="widths"):
        xaikit.load_model(folder)


def test_card_with_bad_input_shape_is_refused(tmp_path) -> None:
    folder = _planted(tmp_path, input_shape=[1, 4000, 4000, 8])
    with pytest.raises(CheckpointError, match="input_shape"):
        xaikit.load_model(folder)
    folder2 = _planted(tmp_path / "b", input_shape=["a"])
    with pytest.raises(CheckpointError, match="input_shape"):
        xaikit.load_model(folder2)


def test_ten_billion_parameter_card_refused_in_subprocess_within_300_mb(tmp_path) -> None:
    # simple_cnn with widths [16, 35000, 35000]: 35000^2 * 9 ~ 11 G parameters (44 GB).
    folder = _planted(tmp_path / "b", widths=[16, 35000, 35000])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(MAX_PARAMS_ENV, None)
    command = [sys.executable, "-m", "xaikit", "layers", "--model", str(folder)]
    code, stderr, peak_kib = _peak_rss(command, env)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "widths" in lines[0] and "parameters" in lines[0]
    # The command line refuses the card before torch is imported (`import torch` alone peaks
    # at ~640 MiB with this CUDA build; the unchecked build needed > 40 GB).
    assert peak_kib < 300 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert "torch" not in stderr


def test_the_early_refusal_reads_as_the_loaders(tmp_path) -> None:
    """The torch-free check in front of the command line and ``load_model`` say the same."""
    from xaikit._model_limits import precheck_checkpoint

    folder = _planted(tmp_path / "c", widths=[16, 35000, 35000])
    with pytest.raises(CheckpointError) as early:
        precheck_checkpoint(str(folder))
    with pytest.raises(CheckpointError) as full:
        xaikit.load_model(folder)
    assert str(early.value) == str(full.value)
    assert "parameters" in str(early.value)
    small = _planted(tmp_path / "d", widths=[8, 8])
    precheck_checkpoint(str(small))  # within the limits: left to the loader, which finds
    with pytest.raises(CheckpointError, match="do not fit"):  # the planted weights' shapes
        xaikit.load_model(small)


def _peak_rss(command: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """``(exit code, stderr, peak RSS in KiB)`` of ``command``, run from a fresh parent whose
    only child it is, so that parent's ``RUSAGE_CHILDREN.ru_maxrss`` is the command's peak."""
    runner = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", runner, *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return proc.returncode, proc.stderr, int(proc.stdout.strip().splitlines()[-1])


def test_the_early_check_follows_the_loaders_bare_name_rule(tmp_path, monkeypatch) -> None:
    """A bare name is the reference model whatever the folder holds (as `load_model`); a
    bare name that is no reference model is a path and is checked."""
    from xaikit._model_limits import precheck_checkpoint

    huge = _planted(tmp_path / "here", widths=[16, 35000, 35000])
    monkeypatch.chdir(tmp_path / "here")
    huge.rename("digits-cnn")
    precheck_checkpoint("digits-cnn")  # the shipped model, within the limits
    assert xaikit.load_model("digits-cnn")[1]["architecture"] != ""
    (tmp_path / "here" / "digits-cnn").rename("mine")
    with pytest.raises(CheckpointError, match="parameters"):
        precheck_checkpoint("mine")
