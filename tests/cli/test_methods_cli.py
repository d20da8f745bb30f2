"""``xaikit methods``: the catalogue on the command line."""

from __future__ import annotations

import json
import subprocess
import sys

from xaikit.cli import main
from xaikit.explain.catalogue import FAMILIES, method_catalogue


def test_the_table_names_every_method_under_its_family(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    headers = [line.split(":")[0] for line in lines if not line.startswith(" ")][:-1]
    assert headers == [f for f in FAMILIES if any(r.family == f for r in method_catalogue())]
    listed = {line.split()[0] for line in lines if line.startswith("  ") and line[2] != " "}
    assert listed == {row.name for row in method_catalogue()}


def test_json_and_family_filter(capsys):
    assert main(["methods", "--json", "--family", "gradient"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = [r for r in method_catalogue() if r.family == "gradient"]
    assert [r["name"] for r in rows] == [r.name for r in expected]
    assert [r["paper"] for r in rows] == [r.paper for r in expected]


def test_an_unknown_family_is_one_line_and_exit_2(capsys):
    assert main(["methods", "--family", "magic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown --family 'magic'" in err[0]


def test_a_reader_that_leaves_early_gets_no_traceback():
    """The pipe's reader is gone before the command writes (it imports for a second first)."""
    code = "import sys; from xaikit.cli import main; sys.exit(main(['methods']))"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    child.stdout.close()
    _, err = child.communicate(timeout=120)
    assert child.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
