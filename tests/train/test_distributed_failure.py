"""A rank that fails inside ``fit`` under torchrun ends the run (no hang), in one message.

One launch of two ranks: this file, run as a script under ``torch.distributed.run``, first
checks where the batch size is refused (a Dataset the trainer shards: yes; a DataLoader with
a DistributedSampler of its own: no), then trains on data of which rank 1's shard has a
corrupt item mid-epoch, inside :func:`xaikit.distributed.guard` as the command line runs it.
Rank 0 then waits in DistributedDataParallel's gradient all-reduce, which the guard's
``agree`` would not match: rank 1 must end its process instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import xaikit
from xaikit.errors import DataError, XaikitConfigError
from xaikit.train import Trainer

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
MESSAGE = "item of the test shard is corrupt"


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)


def _model() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return xaikit.create_model(
            "simple_cnn", num_classes=4, in_channels=1, widths=(4, 8), input_size=8,
            batchnorm=False,
        )  # fmt: skip


class _Corrupt(Dataset):
    """The pair ``(x, y)``, whose 21st item fetched on ``rank`` raises a DataError (the third
    batch of 8 of that rank's shard)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rank: int) -> None:
        self.x, self.y, self.rank, self.served = x, y, rank, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from xaikit import distributed

        self.served += 1
        if distributed.current().rank == self.rank and self.served > 20:
            raise DataError(MESSAGE)
        return self.x[index], self.y[index]


def _worker(out: Path) -> None:
    from xaikit import distributed

    torch.set_num_threads(1)
    group = distributed.init_from_env()
    x, y = _data()
    report: dict[str, str | int] = {}
    try:  # the trainer shards a Dataset: a batch of 7 cannot be split over 2 ranks
        Trainer(_model(), batch_size=7, quiet=True).fit((x, y), epochs=1)
        report["refused"] = ""
    except XaikitConfigError as err:
        report["refused"] = str(err)
    # A DataLoader with its own DistributedSampler keeps its own batch size: 7 is irrelevant.
    dataset = TensorDataset(x, y)
    loader = DataLoader(dataset, batch_size=8, sampler=DistributedSampler(dataset, seed=0))
    report["own_loader_epochs"] = len(
        Trainer(_model(), batch_size=7, quiet=True).fit(loader, epochs=1)
    )
    (out / f"report{group.rank}.json").write_text(json.dumps(report))

    # As `xaikit train` runs: other ranks' stdout / stderr go to /dev/null, and the guard
    # would tell the others of an error with an agree.
    with distributed.quiet_unless_main(group), distributed.guard(group):
        Trainer(_model(), batch_size=16, quiet=True).fit(_Corrupt(x, y, rank=1), epochs=2)
    (out / f"finished{group.rank}").write_text("")  # never reached


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux; torchrun starts each rank in a session of its own,
    so killing the launcher's process group does not reach them)."""
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [child, *_descendants(child)]
    return found


def _torchrun(args: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, str, float]:
    """``(returncode or None after a timeout, stdout, stderr, seconds)`` of a 2-rank launch;
    on a timeout the launcher and its ranks are killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "XAIKIT_QUIET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={WORLD}", *args,
    ]  # fmt: skip
    # Files, not pipes: a rank left behind cannot keep the reads waiting.
    out, err = cwd / "launch.stdout", cwd / "launch.stderr"
    start = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(process.pid), process.pid]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()
            code = None
    return code, out.read_text(), err.read_text(), time.monotonic() - start


def test_a_rank_failing_inside_fit_ends_the_run_with_its_message_once(tmp_path):
    code, stdout, stderr, seconds = _torchrun([__file__, str(tmp_path)], tmp_path, timeout=60)
    both = stdout + stderr
    assert code is not None, f"the launch hung (killed after {seconds:.0f} s):\n{both[-3000:]}"
    assert code != 0, both[-3000:]
    assert both.count(MESSAGE) == 1, both[-3000:]
    assert f"xaikit: error: rank 1: {MESSAGE}" in stderr, stderr[-3000:]
    assert not list(tmp_path.glob("finished*"))

    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in range(WORLD)]
    for report in reports:
        assert "batch_size 7 cannot be split evenly over the 2 processes" in report["refused"]
        assert report["own_loader_epochs"] == 1


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
