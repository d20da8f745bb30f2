"""A fast start: ``xaikit --version``, ``--help`` and every ``<command> --help`` import no torch.

Each command line runs in a fresh interpreter through a tiny wrapper that reports, at exit,
which heavy libraries ended up in ``sys.modules``. Speed itself is measured by
``benchmarks/bench_startup.py``, never asserted here. The names the help text shows come
from :mod:`xaikit._names`; the last tests check them against the modules that use them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import xaikit
from xaikit import _names
from xaikit.cli import COMMAND_MODULES, build_parser

# What a start-up must not import: each costs tenths of a second to seconds.
HEAVY = (
    "torch",
    "torchvision",
    "captum",
    "matplotlib",
    "sklearn",
    "PIL",
    "numpy",
    "tqdm",
    "safetensors",
    "timm",
)
MARKER = "XAIKIT-STARTUP-MODULES "
# `python -c WRAPPER ARGS...` runs `python -m xaikit ARGS...` and prints, after the command
# is done, the heavy top-level packages that were imported (one marked line on stderr).
WRAPPER = f"""
import json, runpy, sys
sys.argv = ["xaikit", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("xaikit", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))
print({MARKER!r} + json.dumps(heavy), file=sys.stderr)
sys.exit(code)
"""


def _start(*args: str) -> tuple[str, list[str]]:
    """``xaikit ARGS`` in a fresh interpreter: its stdout and the heavy packages it imported."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    marked = [line for line in done.stderr.splitlines() if line.startswith(MARKER)]
    assert len(marked) == 1, done.stderr
    return done.stdout, json.loads(marked[0][len(MARKER) :])


def test_version_prints_the_package_version_and_imports_no_heavy_library():
    out, heavy = _start("--version")
    assert out.strip() == f"xaikit {xaikit.__version__}"
    assert heavy == []


def test_python_m_xaikit_version_shows_no_heavy_import_in_importtime():
    """The literal check of the issue: ``python -X importtime -m xaikit --version``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xaikit", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"xaikit {xaikit.__version__}"
    # "import time:  self [us] | cumulative | imported package" (nested ones indented)
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "xaikit" in imported  # the parse worked: it did see xaikit's own imports
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_help_lists_every_command_and_imports_no_heavy_library():
    out, heavy = _start("--help")
    assert heavy == []
    assert out.startswith("usage: xaikit")
    for module in COMMAND_MODULES:
        assert f"    {module} " in out, f"{module} missing from xaikit --help"


@pytest.mark.parametrize("command", COMMAND_MODULES)
def test_command_help_imports_no_heavy_library(command):
    out, heavy = _start(command, "--help")
    assert heavy == []
    assert out.startswith(f"usage: xaikit {command}")


def test_explain_help_lists_every_built_in_method():
    from xaikit.explain.engine import METHODS

    out, _ = _start("explain", "--help")
    listed = out.split("methods: ", 1)[1].replace("\n", " ").split(", ")
    assert [name.strip() for name in listed] == list(METHODS)


def test_import_xaikit_imports_no_heavy_library():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, xaikit; print(sorted(set({HEAVY!r}) & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_lazy_public_api_is_the_eager_one():
    import xaikit.explain.api
    import xaikit.train
    import xaikit.zoo.checkpoint
    import xaikit.zoo.registry
    from xaikit import create_model, load_model

    assert create_model is xaikit.zoo.registry.create_model
    assert load_model is xaikit.load_model is xaikit.zoo.checkpoint.load_model
    assert xaikit.Trainer is xaikit.train.Trainer
    assert xaikit.explain is sys.modules["xaikit.explain"]  # the callable package
    for name in xaikit.__all__:
        assert getattr(xaikit, name) is not None
    assert set(xaikit.__all__) <= set(dir(xaikit))
    namespace: dict[str, object] = {}
    exec("from xaikit import *", namespace)
    assert set(xaikit.__all__) <= set(namespace)
    assert xaikit.zoo is sys.modules["xaikit.zoo"]  # any sub-package, as before
    with pytest.raises(AttributeError, match="no_such_name"):
        xaikit.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        from xaikit import no_such_name  # noqa: F401


def test_xaikit_explain_is_still_callable_and_gives_what_the_function_gives():
    model = xaikit.create_model("simple_cnn", num_classes=3).eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = xaikit.explain(model, images, method="gradcam", target=1)
    assert maps.shape == (2, 16, 16)
    torch.testing.assert_close(maps, xaikit.explain.api.explain(model, images, target=1))


def test_names_of_the_help_text_are_the_library_s():
    from xaikit.demo import DEMO_MODELS
    from xaikit.evaluate.perturbation import BASELINES, DEFAULT_STEPS
    from xaikit.evaluate.suite import DEFAULT_BASELINES
    from xaikit.explain.cam import CAM_METHODS
    from xaikit.explain.engine import METHODS
    from xaikit.explain.files import JOURNAL, RESULTS
    from xaikit.explain.layouts import RESHAPE_CHOICES
    from xaikit.viz.report import DEFAULT_METHODS, SEQUENCE_METHODS

    # Computed by the library from its CAM registry: written out by hand in _names.
    assert _names.METHODS == METHODS
    assert tuple(CAM_METHODS)[: len(_names.CAM_NAMES)] == _names.CAM_NAMES
    # Defined once, in _names, and imported by their modules: nobody re-defined them there.
    assert RESHAPE_CHOICES is _names.RESHAPE_CHOICES
    assert (RESULTS, JOURNAL) == (_names.RESULTS, _names.JOURNAL)
    assert BASELINES is _names.DELETION_BASELINES and DEFAULT_STEPS == _names.DEFAULT_STEPS
    assert DEFAULT_BASELINES is _names.DEFAULT_BASELINES
    assert DEFAULT_METHODS is _names.REPORT_METHODS
    assert SEQUENCE_METHODS is _names.REPORT_SEQUENCE_METHODS
    assert DEMO_MODELS is _names.DEMO_MODELS


def _choices(command: str, flag: str) -> tuple[str, ...]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)


def test_choices_written_in_the_parsers_are_the_library_s():
    from xaikit.evaluate.perturbation import BASELINES
    from xaikit.train.optim import OPTIMIZERS, SCHEDULERS

    assert _choices("train", "--optimizer") == OPTIMIZERS
    assert _choices("train", "--scheduler") == (*SCHEDULERS, "none")
    assert _choices("evaluate", "--deletion-baseline") == BASELINES
