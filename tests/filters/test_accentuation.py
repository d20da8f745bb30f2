"""Feature accentuation: the parametrization and its gradient scaling equal horama's; the
result stays near the image, raises the target, and the penalty controls how near."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from xaikit.filters import maximize
from xaikit.filters.accentuation import AccentuationImage, fft_scale

horama_fa = pytest.importorskip("horama.feature_accentuation")

BLOCK2 = "features.block2"


def _seed_image() -> torch.Tensor:
    """A colour image spanning exactly [0, 1] (horama min-max stretches its seed)."""
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    image[0, 0, 0], image[1, 0, 1] = 0.0, 1.0
    return image


def test_the_parametrization_and_its_gradient_equal_horamas():
    seed = _seed_image()
    spectrum = horama_fa.inverse_image_spectrum(seed, "cpu").detach().requires_grad_(True)
    scaler = horama_fa.SpectrumBackwardScaler(horama_fa.get_fft_scale(32, 32, 1.5))
    theirs = horama_fa.fa_preconditionner(spectrum, scaler, (0.0, 1.0), "cpu")
    param = AccentuationImage(seed[None], decay_power=1.5)
    # the inverse of the start image (ours in float64, theirs in float32)
    torch.testing.assert_close(param().detach()[0], theirs.detach(), rtol=0, atol=1e-5)
    # the forward from the same spectrum: equal
    with torch.no_grad():
        param.spectrum.copy_(torch.view_as_real(spectrum.detach())[None])
    ours = param()
    torch.testing.assert_close(ours[0], theirs, rtol=0, atol=1e-5)
    # the start is reproduced (up to the logit's eps)
    assert (ours[0] - seed).abs().max() < 3e-3
    # the same loss gives the same (frequency-scaled) gradient on the spectrum
    weight = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    (theirs * weight).sum().backward()
    (ours[0] * weight).sum().backward()
    torch.testing.assert_close(
        param.spectrum.grad[0], torch.view_as_real(spectrum.grad), rtol=1e-4, atol=1e-4
    )
    horama_scale = horama_fa.get_fft_scale(32, 32, 1.5).real[0]
    torch.testing.assert_close(fft_scale(32, 32, 1.5), horama_scale)


def test_accentuation_stays_near_the_image_and_raises_the_channel(striped):
    model, images, _, norm = striped
    start = images[:4]
    common = dict(steps=24, seed=0, normalization=norm, quiet=True, start=start)
    result = maximize(model, BLOCK2, [1, 2, 7, 9], **common)
    assert result.param == "accentuation" and result.images.shape == start.shape
    torch.testing.assert_close(result.start, start, rtol=0, atol=3e-3)
    assert (result.gain > 1.0).all(), result.summary()
    assert (result.distance > 0.005).all() and (result.distance < 0.2).all()
    # a stronger penalty keeps it nearer (and gains less); no penalty wanders further
    near = maximize(model, BLOCK2, [1, 2, 7, 9], penalty=50.0, **common)
    free = maximize(model, BLOCK2, [1, 2, 7, 9], penalty=0.0, **common)
    assert (near.distance < result.distance).all() and (result.distance < free.distance).all()
    assert (near.gain < result.gain).all()
    # zero steps: the image itself
    same = maximize(model, BLOCK2, [1], steps=0, start=start[0], normalization=norm, quiet=True)
    assert float(same.distance[0]) == 0.0
    torch.testing.assert_close(same.images[0], start[0], rtol=0, atol=3e-3)
    assert isinstance(result.figure, Figure)
    assert result.summary()[0]["distance"] == pytest.approx(float(result.distance[0]))


def _accentuate_argv(checkpoint, out, *extra):
    return [
        "filters",
        "--model",
        str(checkpoint),
        "--mode",
        "accentuate",
        "--data",
        "striped",
        "--layer",
        BLOCK2,
        "--out",
        str(out),
        "--steps",
        "6",
        "--batch-size",
        "1",
        "--quiet",
        *extra,
    ]


def test_an_interrupted_accentuation_resumes_with_only_the_missing_renders(
    tmp_path, monkeypatch, striped_cli
):
    import json

    from xaikit.filters.accentuation_runs import JOURNAL

    cli, checkpoint = striped_cli(8)
    out = tmp_path / "out"
    argv = _accentuate_argv(checkpoint, out, "--n", "3")
    assert cli.main(argv) == 0
    names = [
        f"accentuate/{r:04d}_channel_{u:04d}.npy"
        for r, u in enumerate(
            row["unit"] for row in json.loads((out / "index.json").read_text())["channels"]
        )
    ]
    before = {name: (out / name).read_bytes() for name in names}
    # as a kill after the first render leaves it: one record, the others' files gone
    lines = (out / JOURNAL).read_text().splitlines()
    assert len(lines) == 1 + 3
    (out / JOURNAL).write_text("\n".join(lines[:2]) + "\n")
    for name in names[1:]:
        (out / name).unlink()
    kept = (out / names[0]).stat().st_mtime_ns
    calls = []
    import xaikit.filters.accentuation_runs as runs

    real = runs.maximize
    monkeypatch.setattr(runs, "maximize", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    assert cli.main([*argv, "--resume"]) == 0
    assert len(calls) == 2  # rows 1 and 2 rendered again, row 0 kept
    assert (out / names[0]).stat().st_mtime_ns == kept
    assert {name: (out / name).read_bytes() for name in names} == before  # the same images
    # a resume with other settings is refused
    assert cli.main([*_accentuate_argv(checkpoint, out, "--n", "2"), "--resume"]) == 2
    # a journal whose settings line is torn cannot vouch for anything: started again
    lines = (out / JOURNAL).read_text().splitlines()
    (out / JOURNAL).write_text('{"header": {"mod' + "\n" + "\n".join(lines[1:]) + "\n")
    calls.clear()
    assert cli.main([*argv, "--resume"]) == 0
    assert len(calls) == 3  # every render again
    head = json.loads((out / JOURNAL).read_text().splitlines()[0])
    assert head["header"]["images"] == 3 and len((out / JOURNAL).read_text().splitlines()) == 4


def test_an_accentuation_over_the_limits_is_refused(tmp_path, monkeypatch, striped_cli, capsys):
    cli, checkpoint = striped_cli(8)
    monkeypatch.setenv("XAIKIT_LIMIT_FILES", "4")
    out = tmp_path / "out"
    assert cli.main(_accentuate_argv(checkpoint, out, "--n", "3")) == 2
    err = capsys.readouterr().err
    assert "accentuate: 3 channels" in err and "9 files" in err and "--yes" in err
    assert not (out / "accentuate").exists()
    assert cli.main(_accentuate_argv(checkpoint, out, "--n", "3", "--yes")) == 0
    assert len(list((out / "accentuate").glob("*.png"))) == 3


def test_the_cli_accentuates_data_images(tmp_path, striped_cli):
    import json

    cli, checkpoint = striped_cli(8)
    out = tmp_path / "out"
    argv = _accentuate_argv(checkpoint, out, "--n", "2", "--channels", "3")
    assert cli.main(argv) == 0
    index = json.loads((out / "index.json").read_text())
    rows = index["channels"]
    assert [r["unit"] for r in rows] == [3, 3] and all(r["gain"] > 0 for r in rows)
    assert all(0 < r["distance"] < 0.2 for r in rows)
    assert "accentuate/0001_channel_0003.png" in index["files"]
