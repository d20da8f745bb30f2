"""MACO: the parametrization equals horama's, the spectrum estimator finds a known power law,
optimization raises the objective, and the transparency map follows the gradient."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from xaikit.filters import maximize, spectrum_from
from xaikit.filters.maco import MacoCrops, MacoImage, maco_image, maco_rgba
from xaikit.filters.objectives import Objective
from xaikit.filters.spectrum import default_spectrum, fit_spectrum, image_spectrum

horama_maco = pytest.importorskip("horama.maco_fv")

BLOCK2 = "features.block2"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIKIT_CACHE", str(tmp_path / "cache"))


def test_the_parametrization_equals_horamas_preconditioner():
    gen = torch.Generator().manual_seed(0)
    magnitude = torch.rand(3, 48, 25, generator=gen) * 10 + 0.1
    phase = torch.randn(3, 48, 25, generator=gen)
    theirs = horama_maco.maco_preconditioner(magnitude, phase, (0.0, 1.0), "cpu")
    ours = maco_image(magnitude, phase[None])[0]
    assert theirs.shape == ours.shape == (3, 48, 48)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # horama's value range is an affine map of the same sigmoid
    wide = horama_maco.maco_preconditioner(magnitude, phase, (-2.5, 2.5), "cpu")
    torch.testing.assert_close(ours * 5 - 2.5, wide, rtol=0, atol=5e-5)
    # the batched parametrization draws its phase from each element's generator
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    param = MacoImage(gens, 3, 48, 48, magnitude=magnitude)
    for b, s in enumerate((1, 2)):
        start = torch.randn(3, 48, 25, generator=torch.Generator().manual_seed(s))
        expected = horama_maco.maco_preconditioner(magnitude, start, (0.0, 1.0), "cpu")
        torch.testing.assert_close(param()[b].detach(), expected, rtol=0, atol=1e-5)


def test_the_spectrum_is_resized_as_horama_does(tmp_path, monkeypatch):
    template = torch.rand(3, 40, 21, generator=torch.Generator().manual_seed(3)).numpy()
    monkeypatch.chdir(tmp_path)
    np.save(horama_maco.MACO_SPECTRUM_FILENAME, template)  # no download: the file is there
    theirs, _ = horama_maco.init_maco_buffer((64, 64))
    torch.testing.assert_close(fit_spectrum(torch.from_numpy(template), 64, 64), theirs)


def _power_law_images(alpha: float, n: int = 6, size: int = 64) -> torch.Tensor:
    """Grey images whose amplitude spectrum is exactly ``f ** -alpha`` (random phase)."""
    gen = torch.Generator().manual_seed(int(alpha * 10))
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    f = (fx**2 + fy**2).sqrt()
    amplitude = torch.where(f > 0, f.clamp(min=1e-9) ** -alpha, torch.zeros(()))
    phase = torch.rand(n, 1, size, size // 2 + 1, generator=gen) * 2 * torch.pi
    images = torch.fft.irfft2(torch.polar(amplitude.expand_as(phase), phase), s=(size, size))
    images = images / images.abs().amax() * 0.4 + 0.5
    return images.double()


def _slope(magnitude: torch.Tensor) -> float:
    size = magnitude.shape[-2]
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    f = (fx**2 + fy**2).sqrt().expand_as(magnitude[0])
    keep = (f > 2 / size) & (f < 0.4)
    x, y = f[keep].log().numpy(), magnitude[0][keep].log().numpy()
    return float(np.polyfit(x, y, 1)[0])


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_the_spectrum_estimator_recovers_a_known_power_law(alpha, tmp_path):
    images = _power_law_images(alpha)
    magnitude = spectrum_from(images, 64, channels=1)
    assert magnitude.shape == (1, 64, 33)
    assert _slope(magnitude) == pytest.approx(-alpha, abs=0.02)
    # cached on disk under $XAIKIT_CACHE, keyed by data and size; read back equal
    files = sorted((tmp_path / "cache" / "spectra").glob("*.npy"))
    assert len(files) == 1 and files[0].with_suffix(".json").is_file()
    torch.testing.assert_close(spectrum_from(images, 64, channels=1), magnitude)
    spectrum_from(images, 32, channels=1)
    spectrum_from(images[:3], 64, channels=1)
    assert len(list((tmp_path / "cache" / "spectra").glob("*.npy"))) == 3


def test_a_folder_and_the_default_spectrum(tmp_path):
    from PIL import Image

    images = _power_law_images(1.5, n=2)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, image in enumerate(images):
        array = (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).convert("RGB").save(folder / f"{i}.png")
    from_folder = spectrum_from(folder, 64, channels=1)
    assert _slope(from_folder) == pytest.approx(-1.5, abs=0.05)
    # the offline default: natural-image statistics, roughly 1/f (matplotlib's photograph)
    default = default_spectrum(64)
    assert default.shape == (3, 64, 33) and (default > 0).all()
    assert -2.2 < _slope(default) < -0.8
    # MACO's decorrelated colour space whitens colour: the three axes carry comparable
    # energy (in RGB the channels of a photo are almost the same signal)
    energy = default.sum(dim=(1, 2))
    assert energy.max() / energy.min() < 2.0
    assert image_spectrum(images, 64).shape == (1, 64, 33)


def test_maco_raises_the_channel_and_returns_the_transparency(striped):
    model, _, _, norm = striped
    common = dict(steps=24, seed=0, normalization=norm, quiet=True, param="maco")
    result = maximize(model, BLOCK2, [0, 3, 5], **common)
    assert result.param == "maco" and result.images.shape == (3, 3, 64, 64)  # 4x canvas
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (result.gain > 1.0).all() and not result.flat.any(), result.summary()
    assert result.transparency.shape == result.images.shape
    assert (result.transparency >= 0).all() and (result.transparency.sum((1, 2, 3)) > 0).all()
    # per-element randomness: a unit optimized alone is the same
    alone = maximize(model, BLOCK2, [3], **common)
    torch.testing.assert_close(alone.images[0], result.images[1], rtol=0, atol=1e-5)
    assert isinstance(result.figure, Figure)


def test_the_transparency_is_where_the_gradient_is(striped):
    model, _, _, norm = striped
    # an objective that reads only the left half of the image: no gradient on the right
    left = Objective(lambda ctx: ctx.images[..., : ctx.images.shape[-1] // 2].mean((1, 2, 3)))
    result = maximize(
        model,
        None,
        [0, 1],
        objective=left,
        steps=5,
        param="maco",
        canvas=16,
        transforms=None,
        normalization=norm,
        quiet=True,
    )
    t = result.transparency
    assert t.shape == (2, 3, 16, 16)
    assert (t[..., 8:] == 0).all() and (t[..., :8] > 0).all()
    assert (result.gain > 0).all()


def test_crops_and_the_rgba_drawing():
    crops = MacoCrops(16, count=4, noise=0.0)
    canvas = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    u = torch.rand(2, crops.n_random, generator=torch.Generator().manual_seed(1))
    out = crops(canvas, u)
    assert out.shape == (8, 3, 16, 16)
    boxes = crops.boxes(u, 2, canvas)
    assert ((boxes[:, 2] >= 0.25) & (boxes[:, 2] <= 0.30)).all()
    centre = crops(canvas, None)  # the scoring crop: centred, middle side
    assert centre.shape == (2, 3, 16, 16)
    # a constant canvas crops to the same constant
    flat = crops(torch.full((1, 3, 64, 64), 0.3), u[:1])
    torch.testing.assert_close(flat, torch.full_like(flat, 0.3), rtol=0, atol=1e-5)
    alpha = torch.arange(8.0).expand(3, 8, 8)  # grows to the right
    rgba = maco_rgba(torch.rand(3, 8, 8), alpha)
    assert rgba.shape == (8, 8, 4) and rgba.min() >= 0 and rgba.max() <= 1
    # clipped at the 80th percentile (column 6 of 0..7), then divided by the max
    np.testing.assert_allclose(rgba[0, :, 3], [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1])


def test_the_cli_renders_maco_with_a_spectrum_from_a_folder(tmp_path, monkeypatch):
    from PIL import Image

    import xaikit
    from xaikit import cli
    from xaikit.zoo.checkpoint import save_model

    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=12, widths=(4, 6))
    checkpoint = save_model(
        model.eval(),
        tmp_path / "model",
        input_shape=[3, 12, 12],
        normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
    )
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(2):
        array = np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"{i}.png")
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["filters"])
    out = tmp_path / "out"
    argv = [
        "filters",
        "--model",
        str(checkpoint),
        "--mode",
        "maximize",
        "--out",
        str(out),
        "--param",
        "maco",
        "--spectrum-from",
        str(folder),
        "--channels",
        "0,1",
        "--steps",
        "4",
        "--quiet",
    ]
    assert cli.main(argv) == 0
    index = json.loads((out / "index.json").read_text())
    assert "maximize/channel_0001_maco.png" in index["files"]
    transparency = np.load(out / "maximize/channel_0001.transparency.npy")
    image = np.load(out / "maximize/channel_0001.npy")
    assert transparency.shape == image.shape == (3, 48, 48) and (transparency >= 0).all()
    # the spectrum was estimated from the folder and cached
    assert len(list((tmp_path / "cache" / "spectra").glob("*.npy"))) == 1


def test_the_fourier_magnitude_stays_fixed_while_the_phase_moves(striped, monkeypatch):
    """Through a whole MACO optimization (maximize's own loop, NAdam at lr 1) the modulus of
    the parametrized spectrum equals the magnitude to 1e-6 (relative); only the phase
    changes."""
    import importlib

    maximize_module = importlib.import_module("xaikit.filters.maximize")
    model, _, _, norm = striped
    made = []

    class Recorded(MacoImage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
            self.start_phase = self.phase.detach().clone()
            self.start_modulus = self.spectrum().abs().detach().clone()
            self.start_magnitude = self.magnitude.detach().clone()

    monkeypatch.setattr(maximize_module, "MacoImage", Recorded)
    result = maximize(
        model, BLOCK2, [0, 3], steps=12, seed=0, normalization=norm, quiet=True, param="maco"
    )
    (image,) = made
    assert image.parameters == [image.phase]  # only the phase is optimized
    torch.testing.assert_close(image.magnitude, image.start_magnitude, rtol=0, atol=0)
    magnitude = image.start_magnitude.expand_as(image.phase)
    after = image.spectrum().abs().detach()
    # to 1e-6 relative (float32: the magnitude reaches ~1e3, its rounding is ~1e-7 of it)
    assert float((image.start_modulus / magnitude - 1).abs().max()) < 1e-6
    assert float((after / magnitude - 1).abs().max()) < 1e-6
    moved = (image.phase.detach() - image.start_phase).abs()
    assert float(moved.mean()) > 0.1 and (moved.flatten(1).amax(1) > 1.0).all()
    assert (result.gain > 0).all()  # and the optimization did its job
    # the image's own spectrum changed with the phase
    first = torch.fft.rfft2(maco_image(image.magnitude, image.start_phase))
    last = torch.fft.rfft2(result.images)
    assert float((first.angle() - last.angle()).abs().mean()) > 0.1
