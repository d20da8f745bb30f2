"""``xaikit report``: writes the page, says where; bad input is one line and exit code 2."""

from __future__ import annotations

import pytest
from html_checks import parse

from xaikit.cli import main
from xaikit.viz.report import SECTION_IDS


def test_report_command_writes_the_page(tiny_models, tmp_path, capsys):
    out = tmp_path / "sub" / "report.html"
    code = main(
        [
            "report",
            "--model",
            str(tiny_models / "shapes-multilabel"),
            "--data",
            "shapes-multilabel",
            "--out",
            str(out),
            "--n",
            "3",
            "--methods",
            "gradcam,saliency",
            "--eval-steps",
            "3",
            "--no-sanity",
            "--atlas-channels",
            "2",
            "--atlas-steps",
            "4",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "MB" in printed
    text = out.read_text(encoding="utf-8")
    assert parse(text).sections[: len(SECTION_IDS)] == list(SECTION_IDS)
    gallery = text.split('<section id="gallery">')[1].split("</section>")[0]
    assert "<th>gradcam</th><th>saliency</th>" in gallery and "gradcam++" not in gallery
    assert "Sanity checks" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "no-such-model", "--out", "r.html"], "no-such-model"),
        (["--model", "MODEL", "--out", "r.txt"], "must be an .html file"),
        (["--model", "MODEL", "--out", "r.html", "--n", "0"], "at least 1"),
        (["--model", "MODEL", "--out", "r.html", "--methods", ","], "--method is empty"),
        (["--model", "MODEL", "--data", "nope", "--out", "r.html"], "unknown data set 'nope'"),
        (["--model", "MODEL", "--out", "r.html", "--methods", "gradcm"], "unknown method(s)"),
        (["--model", "LSTM", "--out", "r.html", "--methods", "gradcam"], "temporal method(s)"),
    ],
)
def test_bad_input_is_exit_code_2_with_one_line(tiny_models, tmp_path, capsys, argv, message):
    names = {"MODEL": "shapes-multiclass", "LSTM": "recall-lstm"}
    argv = [str(tiny_models / names[a]) if a in names else a for a in argv]
    argv = [str(tmp_path / a) if a.startswith("r.") else a for a in argv]
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_help_explains_the_sections(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["report", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--model", "--data", "--out", "--method", "--layer", "#gallery"):
        assert needle in text


@pytest.mark.parametrize("flag", ["--layer", "--filter-layer"])
def test_a_wrong_layer_fails_before_any_section(tiny_models, tmp_path, capsys, flag):
    out = tmp_path / "r.html"
    model = str(tiny_models / "shapes-multiclass")
    assert main(["report", "--model", model, "--out", str(out), flag, "features.nope"]) == 2
    err = capsys.readouterr().err
    assert "'features.nope'" in err and "features.block3" in err and "xaikit layers" in err
    assert not out.exists()
