"""Every architecture x task builds and maps inputs of every supported size to the right shape."""

import pytest
import torch

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.zoo import ZooModel, arch_info, list_models

CNN_ARCHS = ["simple_cnn", "vgg_small", "resnet_small"]
TASKS = {"multiclass": (5, 5), "multilabel": (6, 6), "binary": (1, 1)}


def _outputs(task: str) -> tuple[int, int]:
    return TASKS[task]


@pytest.mark.parametrize("arch", CNN_ARCHS)
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("channels", [1, 3, 64])
def test_cnn_builds_for_every_task_and_channel_count(arch, task, channels):
    num_classes, outputs = _outputs(task)
    model = xaikit.create_model(
        arch, num_classes=num_classes, task=task, in_channels=channels, widths=(8, 16)
    ).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, channels, 32, 32))
    assert logits.shape == (2, outputs)
    assert model.task.name == task
    assert isinstance(model, ZooModel)


@pytest.mark.parametrize("arch", CNN_ARCHS)
@pytest.mark.parametrize("size", [8, 28, 32, 64, 224])
@pytest.mark.parametrize("channels", [1, 3, 64])
def test_cnn_takes_every_input_size(arch, size, channels):
    model = xaikit.create_model(
        arch, num_classes=4, in_channels=channels, input_size=size, widths=(4, 8)
    ).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, channels, size, size))
        logits = model.forward_head(features)
    assert logits.shape == (1, 4)
    # The CAM layer keeps a spatial map: never pooled below 2x2.
    assert features.dim() == 4 and min(features.shape[2:]) >= 2


def test_pooling_adapts_to_input_size():
    small = xaikit.create_model("simple_cnn", input_size=8, widths=(4, 8, 16))
    large = xaikit.create_model("simple_cnn", input_size=64, widths=(4, 8, 16))
    x8, x64 = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 64, 64)
    assert small.eval().forward_features(x8).shape == (1, 16, 2, 2)
    assert large.eval().forward_features(x64).shape == (1, 16, 16, 16)


@pytest.mark.parametrize(("pools", "side"), [(None, 8), (3, 8), (2, 16), (1, 32), (0, 64)])
def test_pools_sets_how_many_blocks_halve_the_map(pools, side):
    model = xaikit.create_model("simple_cnn", input_size=64, widths=(4, 8, 8, 16), pools=pools)
    x = torch.randn(2, 3, 64, 64)
    assert model.eval().forward_features(x).shape == (2, 16, side, side)
    pooled = [name for name, _ in model.features.named_modules() if name.endswith(".pool")]
    assert len(pooled) == (3 if pools is None else pools)
    assert model(x).shape == (2, 10)


def test_simple_cnn1d_maps_signals():
    model = xaikit.create_model("simple_cnn1d", num_classes=10, in_channels=2).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 2, 40)).shape == (3, 10)
        assert model.forward_features(torch.randn(3, 2, 40)).shape[:2] == (3, 128)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_recurrent_classifiers(cell, task, pooling):
    num_classes, outputs = _outputs(task)
    model = xaikit.create_model(
        cell, num_classes=num_classes, task=task, in_channels=3, hidden_size=8, pooling=pooling
    ).eval()
    with torch.no_grad():
        assert model(torch.randn(4, 17, 3)).shape == (4, outputs)
        assert model.forward_features(torch.randn(4, 17, 3)).shape == (4, 17, 8)


def test_bidirectional_last_pooling_joins_both_ends():
    model = xaikit.create_model(
        "lstm",
        num_classes=2,
        in_channels=1,
        hidden_size=5,
        bidirectional=True,
        num_layers=2,
        dropout=0.1,
    ).eval()
    x = torch.randn(2, 9, 1)
    with torch.no_grad():
        seq = model.forward_features(x)
        pooled = model.head.pool(seq)
    assert seq.shape == (2, 9, 10)
    assert torch.equal(pooled[:, :5], seq[:, -1, :5])
    assert torch.equal(pooled[:, 5:], seq[:, 0, 5:])


@pytest.mark.parametrize(
    "activation", ["relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid"]
)
@pytest.mark.parametrize("batchnorm", [True, False])
def test_conv_block_options(activation, batchnorm):
    block = xaikit.zoo.ConvBlock(3, 4, activation=activation, batchnorm=batchnorm, pool="avg")
    names = [name for name, _ in block.named_children()]
    assert names == (["conv", "bn", "act", "pool"] if batchnorm else ["conv", "act", "pool"])
    assert block(torch.randn(2, 3, 8, 8)).shape == (2, 4, 4, 4)
    assert (block.conv.bias is None) == batchnorm


def test_every_registered_architecture_runs_its_example_input():
    for name in list_models():
        info = arch_info(name)
        in_channels = (
            info.example_input[-1] if info.input_kind == "sequence" else info.example_input[0]
        )
        model = xaikit.create_model(name, num_classes=3, in_channels=in_channels).eval()
        with torch.no_grad():
            assert model(torch.randn(2, *info.example_input)).shape == (2, 3), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "simple_cnn", "input_size": 2}, "at least 4 pixels"),
        ({"name": "simple_cnn", "widths": (8,)}, "2 to 4 positive widths"),
        ({"name": "simple_cnn", "widths": (8, 8), "pools": 2}, "pools must be a whole number"),
        ({"name": "simple_cnn", "pools": -1}, "pools must be a whole number from 0 to 2"),
        ({"name": "simple_cnn", "pools": "two"}, "pools must be a whole number"),
        ({"name": "simple_cnn", "pools": 1.5}, "pools must be a whole number"),
        ({"name": "simple_cnn", "activation": "swish2"}, "unknown activation"),
        ({"name": "simple_cnn", "task": "regression"}, "unknown task"),
        ({"name": "simple_cnn", "task": "binary", "num_classes": 3}, "binary head"),
        ({"name": "lstm", "pooling": "first"}, "time pooling"),
        ({"name": "no_such_net"}, "unknown architecture"),
        ({"name": "simple_cnn", "colour": "red"}, "unexpected keyword"),
        ({"name": "torchvision:not_a_model"}, "torchvision has no classifier"),
    ],
)
def test_bad_configurations_raise_clear_errors(kwargs, message):
    with pytest.raises(XaikitConfigError, match=message):
        xaikit.create_model(**kwargs)


def test_wrong_input_is_refused_before_compute():
    model = xaikit.create_model("simple_cnn", in_channels=3, widths=(4, 8, 16), input_size=32)
    with pytest.raises(XaikitConfigError, match="built for 3 input channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(XaikitConfigError, match=r"\(N, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(XaikitConfigError, match="at least 4 pixels"):
        model(torch.randn(1, 3, 2, 2))
    lstm = xaikit.create_model("lstm", in_channels=2)
    with pytest.raises(XaikitConfigError, match="built for 2 input channels"):
        lstm(torch.randn(1, 10, 3))


def test_torchvision_models_are_reachable_with_random_weights():
    model = xaikit.create_model("torchvision:resnet18", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert model.spec["name"] == "torchvision:resnet18"


def test_pretrained_torchvision_without_network_fails_plainly(monkeypatch, tmp_path):
    import torch.hub

    def offline(*_args, **_kwargs):
        raise OSError("network is unreachable")

    # xaikit fetches the file itself (torch.hub's downloader) into an empty cache here.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(xaikit.CheckpointError, match="could not download pretrained weights"):
        xaikit.create_model("torchvision:resnet18", num_classes=1000, weights="DEFAULT")


def test_chrono_init_sets_lstm_gate_biases():
    torch.manual_seed(1)
    model = xaikit.create_model(
        "lstm", num_classes=4, in_channels=5, hidden_size=16, chrono_init=100
    )
    rnn = model.features.rnn
    forget = rnn.bias_ih_l0[16:32]
    assert torch.all(forget >= 0) and torch.all(forget <= torch.log(torch.tensor(99.0)))
    assert torch.equal(rnn.bias_ih_l0[:16], -forget)
    assert torch.count_nonzero(rnn.bias_hh_l0[:32]) == 0
    with pytest.raises(XaikitConfigError, match="chrono_init"):
        xaikit.create_model("gru", in_channels=1, chrono_init=100)
