"""Model sources: zoo, ``torchvision:``, ``timm:``; random weights seeded, pretrained weights
from the caches (faked here: nothing touches the network)."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import xaikit
from xaikit.errors import CheckpointError, XaikitConfigError
from xaikit.zoo import sources

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
R18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


def _equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    loaded = model.state_dict()
    return sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """No download can happen: torch.hub's downloader raises URLError (and records the URL);
    torchvision's own (unsafe) loaders must never be called at all."""
    asked: list[str] = []

    def refuse(url, *_args, **_kwargs):
        asked.append(url)
        raise urllib.error.URLError("network is unreachable")

    def forbidden(*_args, **_kwargs):
        raise AssertionError("torchvision's own weight loader was called")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbidden)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", forbidden)
    return asked


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    assert folder == tmp_path / "torch-home" / "hub" / "checkpoints"
    return folder


def _plant_resnet18(hub: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    state = torchvision.models.resnet18().state_dict()
    hub.mkdir(parents=True, exist_ok=True)
    torch.save(state, hub / os.path.basename(R18.url))
    return state


# -- timm and the registry ----------------------------------------------------------------


def test_create_model_builds_a_timm_model_and_records_its_spec():
    model = xaikit.create_model("timm:vit_tiny_patch16_224", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    assert model.spec == {
        "name": "timm:vit_tiny_patch16_224",
        "num_classes": 5,
        "task": "multiclass",
        "in_channels": 3,
    }


def test_unknown_names_mention_both_prefixes():
    with pytest.raises(XaikitConfigError, match="'torchvision:<name>' or 'timm:<name>'"):
        xaikit.create_model("no_such_net")
    with pytest.raises(XaikitConfigError, match=r"timm has no model 'nope_net'.*list_models"):
        xaikit.load_model("timm:nope_net")


def test_missing_timm_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    for call in (
        lambda: xaikit.create_model("timm:resnet18"),
        lambda: xaikit.load_model("timm:resnet18"),
    ):
        with pytest.raises(XaikitConfigError) as err:
            call()
        assert str(err.value) == "timm is not installed; pip install 'xaikit[timm]'"


def test_timm_random_card_has_the_pretrained_configs_input():
    model, card = xaikit.load_model("timm:test_convnext")
    assert card["weights"] == "random" and card["seed"] == 0
    assert card["num_classes"] == 1000 and card["class_names"] is None
    assert card["input_shape"] == [3, 160, 160]
    assert card["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert not model.training


# -- random weights -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [("simple_cnn", {"widths": [4, 8]}), ("torchvision:resnet18", {}), ("timm:test_convnext", {})],
)
def test_random_weights_are_seeded_and_leave_the_global_rng_alone(name, options):
    state = torch.get_rng_state()
    first, card = xaikit.load_model(name, options=options)
    again, _ = xaikit.load_model(name, options=options)
    other, _ = xaikit.load_model(name, options=options, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert _equal(first, again.state_dict())
    assert not _equal(first, other.state_dict())
    assert card["weights"] == "random" and card["seed"] == 0 and card["source"] is None


def test_a_zoo_architecture_loads_with_a_card():
    model, card = xaikit.load_model("lstm", options={"num_classes": 4})
    assert card["architecture"] == "lstm" and card["num_classes"] == 4
    assert card["input_shape"] == [40, 1] and card["task"] == "multiclass"
    assert not model.training


def test_pretrained_is_refused_where_there_is_none(tmp_path):
    with pytest.raises(XaikitConfigError, match="no pretrained weights"):
        xaikit.load_model("simple_cnn", pretrained=True)
    xaikit.save_model(xaikit.create_model("simple_cnn", widths=(4, 8)), tmp_path / "m")
    with pytest.raises(XaikitConfigError, match="own weights"):
        xaikit.load_model(tmp_path / "m", pretrained=True)
    with pytest.raises(XaikitConfigError, match="not both"):
        xaikit.load_model("torchvision:resnet18", pretrained=True, weights=tmp_path / "m.pt")


# -- torchvision pretrained ---------------------------------------------------------------


def test_torchvision_pretrained_from_the_hub_cache(hub, offline):
    state = _plant_resnet18(hub)
    model, card = xaikit.load_model("torchvision:resnet18", pretrained=True)
    assert _equal(model, state)
    assert offline == []  # found in the cache: no download was tried
    names = card["class_names"]
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish"
    assert card["normalization"] == IMAGENET
    assert card["input_shape"] == [3, 224, 224]
    assert card["weights"] == "pretrained:ResNet18_Weights.IMAGENET1K_V1"
    cached = hub / os.path.basename(R18.url)
    assert card["weights_sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert card["source"]["path"] == str(cached.resolve())


def test_create_model_weights_default_takes_the_same_safe_path(hub, offline):
    state = _plant_resnet18(hub)
    model = xaikit.create_model("torchvision:resnet18", num_classes=1000, weights="DEFAULT")
    assert _equal(model, state)
    assert model.spec["weights"] == "IMAGENET1K_V1"


def test_torchvision_pretrained_downloads_into_the_cache_when_missing(hub, monkeypatch):
    torch.manual_seed(8)
    published = torchvision.models.resnet18().state_dict()

    def download(url, dst, hash_prefix=None, progress=True):
        assert url == R18.url and hash_prefix == "f37072fd"
        torch.save(published, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    model, _card = xaikit.load_model("torchvision:resnet18", pretrained=True)
    assert _equal(model, published)
    assert (hub / os.path.basename(R18.url)).is_file()


def test_offline_with_an_empty_cache_is_one_line(hub, offline):
    with pytest.raises(CheckpointError) as err:
        xaikit.load_model("torchvision:resnet18", pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert f"no network and not in the cache at {hub / os.path.basename(R18.url)}" in message
    assert offline == [R18.url]


def test_a_hostile_file_in_the_hub_cache_is_refused(hub, offline, tmp_path):
    from test_weights_files import _hostile

    marker = tmp_path / "marker"
    hub.mkdir(parents=True)
    (hub / os.path.basename(R18.url)).write_bytes(_hostile(marker, "torch-zip"))
    with pytest.raises(CheckpointError, match="refused"):
        xaikit.load_model("torchvision:resnet18", pretrained=True)
    assert not marker.exists()


def test_pretrained_with_another_class_count_is_a_config_error(hub, offline):
    with pytest.raises(XaikitConfigError, match="have 1000 classes"):
        xaikit.load_model("torchvision:resnet18", pretrained=True, options={"num_classes": 10})


def test_an_official_file_given_by_hand_gets_its_class_names(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / os.path.basename(R18.url))
    _model, card = xaikit.load_model(
        "torchvision:resnet18", weights=tmp_path / os.path.basename(R18.url)
    )
    assert card["class_names"][0] == "tench" and card["num_classes"] == 1000


# -- timm pretrained ----------------------------------------------------------------------


def _plant_hf(cache: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_timm_pretrained_from_the_hugging_face_cache(hf_cache):
    import timm

    torch.manual_seed(9)
    state = timm.create_model("test_convnext").state_dict()
    planted = _plant_hf(hf_cache, "timm/test_convnext.r160_in1k", state)
    model, card = xaikit.load_model("timm:test_convnext", pretrained=True)
    assert _equal(model, state)
    assert card["weights"] == "pretrained:timm/test_convnext.r160_in1k"
    assert card["source"]["path"] == str(planted.resolve())
    assert card["input_shape"] == [3, 160, 160]
    assert card["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert len(card["class_names"]) == 1000 and card["class_names"][0] == "tench"


def test_timm_pretrained_not_in_the_cache_is_one_line(hf_cache):
    with pytest.raises(CheckpointError) as err:
        xaikit.load_model("timm:test_convnext", pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert "timm/test_convnext.r160_in1k/model.safetensors" in message
    assert str(hf_cache) in message and "downloads no timm weights" in message


def test_source_kind():
    assert sources.source_kind("torchvision:resnet18") == "torchvision"
    assert sources.source_kind("timm:resnet18") == "timm"
    assert sources.source_kind("simple_cnn") == "zoo"
    assert sources.source_kind("runs/a/model") == "checkpoint"
