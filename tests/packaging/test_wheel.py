"""The wheel is the product: built, installed into a fresh venv and run from an empty folder, it
has its reference models (``xaikit zoo``, ``load_model(name)``, ``xaikit demo --fast``).

The venv uses ``--system-site-packages`` so torch and the other dependencies come from this
environment, which also holds the editable install of this checkout. The wheel goes into the
venv's own site-packages, which comes first on ``sys.path`` (the editable install is a
meta-path finder appended after the path finder), and every check asserts that ``xaikit`` and
the models it loads come from the venv, never from this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REFERENCE_MODELS = (
    "digits-cnn",
    "mnist1d-cnn",
    "mnist1d-lstm",
    "recall-lstm",
    "shapes-multiclass",
    "shapes-multilabel",
)
# What setuptools reads to build the wheel; copied so the build (build/, *.egg-info) happens in a
# temporary folder, not in the shared checkout where another test run may be building too.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE")
TIMEOUT = 300


def _run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``args``; on failure, fail the test with its output (not a bare exit status)."""
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of a copy of this checkout; the wheel path."""
    src = dest / "src"
    src.mkdir(parents=True)
    for name in BUILD_INPUTS:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "xaikit",
        src / "xaikit",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    wheels = dest / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run(
        [*pip_wheel, "-q", "-w", str(wheels), str(src)],
        cwd=dest,
        env=_clean_env(),
    )
    (wheel,) = wheels.glob("xaikit-*.whl")
    return wheel


def install_in_venv(wheel: Path, venv: Path) -> tuple[Path, Path]:
    """A ``--system-site-packages`` venv with ``wheel`` installed; its ``bin`` and purelib."""
    # No pip in the venv (ensurepip is slow): this environment's pip, imported through the
    # system site-packages, installs into the venv because the venv's python runs it.
    _run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        cwd=venv.parent,
    )
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    env = _clean_env(bindir)
    pip_install = [str(python), "-m", "pip", "install", "--no-deps", "--no-index"]
    _run(
        [*pip_install, "--force-reinstall", "--no-compile", "-q", str(wheel)],
        cwd=venv.parent,
        env=env,
    )
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=venv.parent,
        env=env,
    ).stdout.strip()
    return bindir, Path(purelib).resolve()


def _clean_env(bindir: Path | None = None) -> dict[str, str]:
    """The environment without anything that would point Python or xaikit at this checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "XAIKIT_MODELS_DIR", "VIRTUAL_ENV")
    }
    env.update(
        PYTHONNOUSERSITE="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        XAIKIT_QUIET="1",
    )
    if bindir is not None:
        env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(bindir.parent)
    return env


def _inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(bin, purelib, empty cwd)`` of a venv holding the freshly built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(root)
    bindir, purelib = install_in_venv(wheel, root / "venv")
    cwd = root / "elsewhere"
    cwd.mkdir()
    return bindir, purelib, cwd


def test_the_wheel_holds_the_reference_models(installed):
    _bindir, purelib, _cwd = installed
    shipped = purelib / "xaikit" / "models"
    for name in REFERENCE_MODELS:
        for suffix in (".safetensors", ".json", ".toml", ".curves.png"):
            assert (shipped / f"{name}{suffix}").is_file(), f"{name}{suffix} not in the wheel"
    assert (shipped / "README.md").is_file()


def test_the_wheel_holds_the_explorers_page(installed):
    """``xaikit serve`` serves its page from the package: nothing to build or download."""
    _bindir, purelib, _cwd = installed
    static = purelib / "xaikit" / "serve" / "static"
    source = Path(__file__).resolve().parents[2] / "xaikit" / "serve" / "static"
    names = sorted(p.name for p in source.iterdir())
    assert names == ["app.js", "index.html", "style.css"]
    for name in names:
        assert (static / name).read_bytes() == (source / name).read_bytes(), name


def test_installed_zoo_lists_the_reference_models(installed):
    bindir, purelib, cwd = installed
    out = _run([str(bindir / "xaikit"), "zoo"], cwd=cwd, env=_clean_env(bindir)).stdout
    header = next(line for line in out.splitlines() if line.startswith("Reference models ("))
    folder = header[len("Reference models (") : -len("):")]
    assert _inside(folder, purelib), f"xaikit zoo lists models from {folder}, not the wheel's"
    listed = [name for name in REFERENCE_MODELS if f"  {name} " in out]
    assert len(listed) >= 5, out


def test_installed_load_model_uses_the_wheels_files(installed):
    bindir, purelib, cwd = installed
    code = (
        "import json, xaikit\n"
        "from xaikit.zoo.checkpoint import resolve_checkpoint\n"
        "m, c = xaikit.load_model('shapes-multiclass')\n"
        "print(json.dumps({'file': xaikit.__file__, 'architecture': c['architecture'],\n"
        "    'weights': str(resolve_checkpoint('shapes-multiclass').resolve()),\n"
        "    'source': c.get('source'), 'params': sum(p.numel() for p in m.parameters())}))\n"
    )
    proc = _run([str(bindir / "python"), "-c", code], cwd=cwd, env=_clean_env(bindir))
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert _inside(info["file"], purelib), f"imported {info['file']}, not the wheel's xaikit"
    assert not _inside(info["file"], REPO)
    assert _inside(info["weights"], purelib)
    assert info["architecture"] == "simple_cnn" and info["params"] > 0
    if info["source"] is not None:  # recorded by load_model (see tests/zoo/...reference_names)
        assert info["source"]["path"] == info["weights"]


def test_installed_demo_runs_from_an_empty_folder(installed):
    bindir, purelib, cwd = installed
    out = cwd / "D"
    _run(
        [str(bindir / "xaikit"), "demo", "--fast", "--out", str(out), "-q"],
        cwd=cwd,
        env=_clean_env(bindir),
    )
    for name in ("index.json", "report.html"):
        assert (out / name).is_file(), f"the demo wrote no {name}"
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert index["models"], index
    for name, path in index["models"].items():
        assert _inside(path, purelib), f"the demo used {name} from {path}, not the wheel's"
        assert Path(f"{path}.safetensors").is_file()
    assert not any(cwd.glob("*.safetensors"))  # nothing was fetched into the working folder
