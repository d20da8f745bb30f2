"""Bad input to the Python API: one documented error class naming the file or value and the
reason, raised before any work is done.

``xaikit.data.load_image`` / ``read_image`` -> :class:`~xaikit.DataError`; ``xaikit.data.load``
-> :class:`~xaikit.DataError`; ``xaikit.load_model`` -> :class:`~xaikit.CheckpointError` (see
``test_bad_input_cli.py``); ``xaikit.explain`` -> :class:`~xaikit.XaikitConfigError`.
"""

from __future__ import annotations

import json
import resource

import pytest
import torch
from PIL import Image, ImageFile
from reliability_files import BAD_IMAGE_CASES, bad_image, write_image, write_mode_image

import xaikit
from xaikit.data import load_image, read_image


@pytest.mark.parametrize("case", sorted(BAD_IMAGE_CASES))
@pytest.mark.parametrize("reader", [load_image, read_image])
def test_bad_image_file_raises_data_error_naming_file_and_reason(tmp_path, reader, case):
    path = bad_image(tmp_path, case)
    with pytest.raises(xaikit.DataError, match=BAD_IMAGE_CASES[case]) as info:
        reader(path)
    assert str(path) in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(xaikit.DataError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    """A 20000x20000 RGB header (1.2 GB of pixels) with 64 bytes of data: refused before any
    pixel is decoded, so neither time nor memory is spent on it."""
    path = bad_image(tmp_path, "bomb-20000x20000")
    decoded = []
    original = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(3):
        with pytest.raises(xaikit.DataError, match="refused before decoding"):
            load_image(path)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert decoded == []
    assert growth_mb < 100


def test_a_header_over_xaikits_own_limit_is_refused_before_decoding(tmp_path):
    """Below PIL's bomb limit, above ``max_pixels``: xaikit's own check refuses it."""
    path = write_image(tmp_path / "big.png", 40, 50)
    with pytest.raises(xaikit.DataError, match="claims 50x40 pixels"):
        load_image(path, max_pixels=1999)
    assert load_image(path, max_pixels=2000).shape == (3, 40, 50)


def test_one_pixel_image_loads_and_resizes(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(path)
    assert torch.equal(load_image(path), torch.tensor([1.0, 0.0, 0.0]).reshape(3, 1, 1))
    resized = load_image(path, size=16)
    assert resized.shape == (3, 16, 16)
    assert torch.allclose(resized[0], torch.ones(16, 16))


@pytest.mark.parametrize(
    "mode, channels", [("L", 1), ("LA", 1), ("RGBA", 3), ("P", 3), ("I;16", 1), ("1", 1)]
)
def test_every_image_mode_loads_into_0_1(tmp_path, mode, channels):
    image = load_image(write_mode_image(tmp_path / "x.png", mode))
    assert image.shape == (channels, 20, 20) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


@pytest.mark.parametrize(
    "name, split, options, reason",
    [
        ("nope", "train", {}, "unknown data set 'nope'; known: shapes"),
        ("shapes", "valid", {}, "unknown split 'valid'"),
        ("shapes", "train", {"colour": 1}, "has no option colour; its options are"),
        ("imagefolder:", "train", {}, "needs a folder"),
        ("imagefolder:/nonexistent/xaikit", "train", {}, "does not exist"),
    ],
)
def test_data_load_bad_names_and_options_raise_data_error(name, split, options, reason):
    with pytest.raises(xaikit.DataError, match=reason):
        xaikit.data.load(name, split, **options)


def test_image_folder_with_a_bad_file_names_it_when_read(tmp_path):
    for label in ("cats", "dogs"):
        for name in ("a", "b", "c"):  # one image per split at least
            write_image(tmp_path / label / f"{name}.png", seed=1)
    broken = bad_image(tmp_path / "dogs", "text-named-png")
    errors = []
    for split in ("train", "val", "test"):  # the broken file is in one of them
        dataset = xaikit.data.load(f"imagefolder:{tmp_path}", split, size=16)
        for i in range(len(dataset)):
            try:
                assert dataset[i][0].shape == (3, 16, 16)
            except xaikit.DataError as err:
                errors.append(str(err))
    assert len(errors) == 1 and str(broken) in errors[0]


def test_explain_wrong_layer_lists_valid_names(model, images):
    with pytest.raises(xaikit.XaikitConfigError, match="no layer named 'features.blockX'") as e:
        xaikit.explain(model, images, layer="features.blockX")
    assert "features.block2" in str(e.value) and "xaikit layers" in str(e.value)


def test_explain_target_out_of_range_names_the_range(model, images):
    with pytest.raises(xaikit.XaikitConfigError, match="out of range") as info:
        xaikit.explain(model, images, target=3)
    assert "0..2" in str(info.value)


def test_load_model_of_a_checkpoint_whose_weights_do_not_fit_names_the_parameter(tmp_path):
    torch.manual_seed(0)
    wide = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 16), input_size=16)
    xaikit.save_model(wide, tmp_path / "m", input_shape=[3, 16, 16])
    card = json.loads((tmp_path / "m.json").read_text())
    card["config"]["widths"] = [4, 8]
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(xaikit.CheckpointError, match="do not fit") as info:
        xaikit.load_model(tmp_path / "m")
    assert "features.block2" in str(info.value) and "m.safetensors" in str(info.value)
