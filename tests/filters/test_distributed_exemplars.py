"""``xaikit filters --mode exemplars`` under ``torchrun``: two ranks give one process's files.

Each rank streams its chunks of the data set and the per-channel top-k are merged; the
results (indices, values, the figure) must be those of one process, byte for byte. Both runs
use one thread (``OMP_NUM_THREADS=1``): thread counts change float bits.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import xaikit
from xaikit.distributed import Group

exemplars_module = importlib.import_module("xaikit.filters.exemplars")

ARGS = ["filters", "-m", "shapes-multiclass", "--mode", "exemplars", "-d", "shapes"]
# torchrun's own parser reads `--n` as an ambiguous abbreviation of its options: the data set
# size goes through --data-option instead.
ARGS += ["--data-option", "n=20", "--batch-size", "4", "--k", "3", "--channels", "0-5", "-q"]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XAIKIT_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _one(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "xaikit", *argv]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _two(target: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", *target]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def test_two_ranks_write_what_one_process_writes(tmp_path):
    one = _one([*ARGS, "--out", "one"], tmp_path)
    assert one.returncode == 0, one.stderr
    two = _two(["-m", "xaikit", *ARGS, "--out", "two"], tmp_path)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote 2 files") == 1  # rank 0 alone prints
    a, b = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in b.iterdir()) == ["exemplars.png", "index.json"]
    assert json.loads((a / "index.json").read_text()) == json.loads((b / "index.json").read_text())
    assert (a / "exemplars.png").read_bytes() == (b / "exemplars.png").read_bytes()


def test_an_error_on_one_rank_fails_the_run_with_one_message(tmp_path):
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(
        textwrap.dedent(
            """
            import importlib, os, sys
            from xaikit import cli
            from xaikit.errors import DataError

            exemplars = importlib.import_module("xaikit.filters.exemplars")

            real = exemplars._fetch_range

            def fetch(dataset, lo, hi):
                if os.environ["RANK"] == "1":
                    raise DataError(f"item {lo} cannot be read")
                return real(dataset, lo, hi)

            exemplars._fetch_range = fetch
            sys.exit(cli.main(sys.argv[1:]))
            """
        )
    )
    run = _two([str(script), *ARGS, "--out", "out"], tmp_path)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert output.count("xaikit: error: rank 1: item 4 cannot be read") == 1, output
    assert not (tmp_path / "out" / "index.json").exists()


class _FakeRank(Group):
    """Rank ``rank`` of ``world`` in one process: its shard, without a process group."""

    @property
    def distributed(self) -> bool:
        return False

    def agree(self, payload=None, error=None):
        return [payload]


def test_states_saved_by_two_ranks_resume_in_one_process(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn", num_classes=3, input_size=12, widths=(4, 6)).eval()
    data = torch.rand(36, 3, 12, 12, generator=torch.Generator().manual_seed(1))

    def run(resume=False):
        return exemplars_module.exemplars(
            model, "features.block2", data, 3, batch_size=8, state_dir=tmp_path, resume=resume
        )

    whole = run()
    real_merge = exemplars_module._merge
    for rank, stop_at in ((0, 3), (1, 2)):  # rank 0 did [0, 8) and [16, 24); rank 1 [8, 16)
        calls: list[int] = []

        def merge(best, new, k, calls=calls, stop_at=stop_at):
            calls.append(new[0].shape[1])
            if len(calls) == stop_at:
                raise KeyboardInterrupt
            return real_merge(best, new, k)

        monkeypatch.setattr(exemplars_module, "_merge", merge)
        monkeypatch.setattr(exemplars_module, "current", lambda rank=rank: _FakeRank(rank, 2))
        with pytest.raises(KeyboardInterrupt):
            run()
    assert (tmp_path / "exemplars.state.r1.json").exists()
    monkeypatch.undo()
    calls: list[int] = []

    def counting(best, new, k):
        calls.append(new[0].shape[1])
        return real_merge(best, new, k)

    monkeypatch.setattr(exemplars_module, "_merge", counting)
    resumed = run(resume=True)
    assert calls == [8, 4]  # only [24, 36) was left
    assert torch.equal(resumed.values, whole.values)
    assert torch.equal(resumed.indices, whole.indices)
    assert torch.equal(resumed.crops, whole.crops)
    assert not list(tmp_path.glob("exemplars.state*"))  # removed once complete
