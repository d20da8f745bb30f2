"""``xaikit explain --method-option KEY=VALUE``: method options reach ``explain`` and the run's
settings; an option no method takes is refused before any file is written."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

import xaikit
from xaikit.cli import main


def _image(path):
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(path)
    return path


def test_a_composite_given_on_the_command_line_is_the_one_explained(tmp_path, capsys):
    image = _image(tmp_path / "x.png")
    model, _card = xaikit.load_model("shapes-multiclass")
    x = xaikit.data.load_image(image, channels=3, size=(64, 64))[None]
    raws = {}
    for composite in ("epsilon-plus", "epsilon-gamma-box"):
        out = tmp_path / composite
        args = ["explain", str(image), "--model", "shapes-multiclass", "--method", "lrp"]
        args += ["--method-option", f"composite={composite}", "--out", str(out), "-q"]
        assert main(args) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["run"]["options"] == {"composite": composite}
        (raw,) = sorted(out.glob("x.png/lrp.*.raw.npy"))
        raws[composite] = np.load(raw)
        direct = xaikit.explain(model, x, method="lrp", composite=composite, return_result=True)
        np.testing.assert_allclose(raws[composite], direct.raw[0, 0].numpy(), rtol=1e-5, atol=1e-7)
    assert not np.allclose(raws["epsilon-plus"], raws["epsilon-gamma-box"])


def test_an_option_no_method_takes_is_one_line_and_writes_nothing(tmp_path, capsys):
    image = _image(tmp_path / "x.png")
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", "shapes-multiclass", "--method", "gradcam,lrp"]
    assert main([*args, "--method-option", "bogus=1", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown option(s) bogus" in err[0]
    assert not out.exists()
    assert main([*args, "--method-option", "novalue", "--out", str(out), "-q"]) == 2
    assert "--method-option takes KEY=VALUE" in capsys.readouterr().err
