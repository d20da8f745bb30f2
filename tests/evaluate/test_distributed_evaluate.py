"""``xaikit evaluate`` under ``torchrun``: two ranks write the figures one process writes.

Each rank scores its chunks of the inputs (``--batch-size`` consecutive images), the
per-sample values are put back in input order and the means, bootstrap intervals, per-class
figures and sanity checks are computed from them as in one process; random draws (the random
baseline, the noise of the catalogue metrics) are seeded per chunk. Both runs use one thread
(``OMP_NUM_THREADS=1``): thread counts change float bits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# torchrun's own parser reads `--n` as an ambiguous abbreviation of its options: the number
# of images goes through --data-option instead. Chunks of 3 over 8 images: 3 chunks, the
# last one short, dealt 2 / 1 over two ranks.
COMMON = ["evaluate", "-m", "shapes-multiclass", "-d", "shapes", "--data-option", "n=8"]
COMMON += ["--batch-size", "3", "--steps", "4", "--method", "gradcam", "-q"]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XAIKIT_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _run(prefix: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *prefix, "-m", "xaikit", *argv]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


TORCHRUN = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="suite-with-sanity-checks"),
        pytest.param(
            [
                "--metrics",
                "deletion_auc,pointing_game,faithfulness_correlation,max_sensitivity,"
                "sensitivity_n,attribution_localisation",
                "--metric-option",
                "nr_samples=2",
                "--baselines",
                "random",
            ],
            id="catalogue-metrics",
        ),
    ],
)
def test_two_ranks_write_the_figures_one_process_writes(tmp_path, extra):
    one = _run([], [*COMMON, *extra, "--out", "one.json"], tmp_path)
    assert one.returncode == 0, one.stderr
    two = _run(TORCHRUN, [*COMMON, *extra, "--out", "two.json"], tmp_path)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote two.json") == 1  # rank 0 alone prints and writes
    assert two.stdout.split("wrote")[0] == one.stdout.split("wrote")[0]  # the same table
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    assert a == b  # every figure, exactly (the JSON holds no device, time or rank count)
    assert a["settings"]["n"] == 8 and a["scores"]
