"""Training on several processes (``torchrun``): the same run as one process, exact resume,
rank 0 alone writes, one error line.

A launch costs seconds of process start-up (torchrun's agent and two ranks each import
torch), so the tests launch once: this file, run as a script under ``torch.distributed.run``
(``python -m torch.distributed.run --nproc-per-node 2 tests/train/test_distributed_train.py
OUT``), does every scenario on the two ranks, the ``xaikit train`` command line included
(called as ``python -m xaikit`` calls it, :func:`xaikit.cli.main`), and leaves its results
in ``OUT`` for the tests to check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import xaikit
from xaikit.train import Trainer

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
#: The equivalence run: SGD with momentum and a cosine schedule, global batch 16 (8 a rank).
OPTIONS = dict(
    optimizer="sgd", lr=0.05, momentum=0.9, scheduler="cosine", batch_size=16, seed=5, quiet=True
)
#: The resume run: dropout and Adam, so every rank's random state and the moments matter.
DROPOUT_OPTIONS = dict(optimizer="adamw", lr=1e-2, batch_size=16, seed=3, quiet=True)
#: ``xaikit train`` on a tiny shapes set, one epoch (add ``--batch-size`` and ``-o``).
CLI = [
    "train", "-d", "shapes", "-m", "simple_cnn", "--data-option", "n=40", "--size", "16",
    "--model-option", "widths=[4,8]", "--model-option", "batchnorm=False", "--epochs", "1",
    "--device", "cpu", "-q",
]  # fmt: skip


def _data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """64 training and 37 validation 1x8x8 images of 4 classes (a bright quadrant)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(101, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (101,), generator=g)
    for k in range(4):
        rows, cols = divmod(k, 2)
        x[y == k, :, rows * 4 : rows * 4 + 4, cols * 4 : cols * 4 + 4] += 1.5
    return (x[:64], y[:64]), (x[64:], y[64:])


def _model(dropout: float = 0.0, init_seed: int = 1) -> torch.nn.Module:
    """A small CNN without BatchNorm (on CPU each rank would normalize its own half batch)."""
    with torch.random.fork_rng():
        torch.manual_seed(init_seed)
        return xaikit.create_model(
            "simple_cnn", num_classes=4, in_channels=1, widths=(8, 16), input_size=8,
            batchnorm=False, dropout=dropout,
        )  # fmt: skip


def _history(trainer: Trainer) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in trainer.history]


def _worker(out: Path) -> None:
    """What every rank runs; rank 0 writes the results into ``out``."""
    from xaikit import distributed

    torch.set_num_threads(1)
    group = distributed.init_from_env()
    train, val = _data()

    # 1. The run to compare with one process.
    same = Trainer(_model(), **OPTIONS)
    same.fit(train, val, epochs=2)
    metrics = same.evaluate(val)  # 37 items: batches 0 and 2 on rank 0, batch 1 on rank 1
    small = same.evaluate((val[0][:10], val[1][:10]))  # one batch: rank 1 has none

    # 2. Dropout, uninterrupted; 3. the same stopped after epoch 1, resumed by new objects.
    straight = Trainer(_model(0.3), **DROPOUT_OPTIONS, checkpoint_dir=out / "straight")
    straight.fit(train, val, epochs=2)
    Trainer(_model(0.3), **DROPOUT_OPTIONS, checkpoint_dir=out / "resumed").fit(
        train, val, epochs=1
    )
    resumed = Trainer(_model(0.3, init_seed=9), **DROPOUT_OPTIONS, checkpoint_dir=out / "resumed")
    resumed.fit(train, val, epochs=2, resume=out / "resumed")

    # 4. A checkpoint of one process (written by the test before the launch) is refused.
    try:
        Trainer(_model(0.3), **DROPOUT_OPTIONS, checkpoint_dir=out / "single").fit(
            train, val, epochs=2, resume=out / "single"
        )
        refused = ""
    except xaikit.errors.XaikitConfigError as err:
        refused = str(err)

    # 5. Each rank is given a folder of its own: rank 1 must leave its own untouched.
    own = out / f"own{group.rank}"
    writer = Trainer(_model(), **OPTIONS, checkpoint_dir=own)
    writer.fit(train, val, epochs=1)
    writer.save_history(own)

    mine = {f"{k}": v.detach().clone() for k, v in same.model.state_dict().items()}
    states = group.agree(mine)  # every rank's weights: DDP keeps them equal
    if group.is_main:
        tensors = {f"same/{k}": v for k, v in mine.items()}
        tensors.update({f"rank1/{k}": v for k, v in states[1].items()})
        tensors.update({f"straight/{k}": v for k, v in straight.model.state_dict().items()})
        tensors.update({f"resumed/{k}": v for k, v in resumed.model.state_dict().items()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "weights.safetensors"))
        report = {
            "same_history": _history(same),
            "metrics": metrics,
            "small": small,
            "straight_history": _history(straight),
            "resumed_history": _history(resumed),
            "refused": refused,
        }
        (out / "report.json").write_text(json.dumps(report))

    # 6. The command line: a batch the ranks cannot share (each rank fails, rank 0 prints
    # one line), then a run. `main` leaves the process group at its end: only the last may.
    from unittest import mock

    from xaikit.cli import main

    codes = {}
    with mock.patch.object(distributed, "shutdown", lambda: None):
        codes["bad"] = main([*CLI, "--batch-size", "7", "-o", str(out / "bad")])
    codes["cli"] = main([*CLI, "--batch-size", "8", "-o", str(out / "cli")])
    (out / f"codes{group.rank}.json").write_text(json.dumps(codes))


def _torchrun(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2 ARGS`` on CPU, one thread a rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "XAIKIT_QUIET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # --standalone: the launcher binds a free port itself (no race for a port picked here).
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={WORLD}", *args,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One launch of :func:`_worker` on two ranks: ``(out, the finished launch)``."""
    out = tmp_path_factory.mktemp("ranks")
    train, val = _data()
    Trainer(_model(0.3), **DROPOUT_OPTIONS, checkpoint_dir=out / "single").fit(train, val, epochs=1)
    done = _torchrun([__file__, str(out)], cwd=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done


@pytest.fixture(scope="module")
def two_ranks(launch) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """``(out, report, weights)`` of the Trainer scenarios."""
    out, _ = launch
    return (
        out,
        json.loads((out / "report.json").read_text()),
        load_file(out / "weights.safetensors"),
    )


def _part(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(prefix + "/")}


def _one_process_reference() -> Trainer:
    """One process on the same global batches: DistributedSampler(num_replicas=1) with the
    run's seed draws the epoch permutation the ranks share, and a batch of 16 holds the 8
    items of each rank's step."""
    train, val = _data()
    dataset = TensorDataset(*train)
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, seed=OPTIONS["seed"])
    loader = DataLoader(dataset, batch_size=16, sampler=sampler)
    trainer = Trainer(_model(), **OPTIONS)
    trainer.fit(loader, val, epochs=2)
    return trainer


def test_two_ranks_train_the_weights_one_process_does_on_the_same_global_batch(two_ranks):
    _, report, weights = two_ranks
    reference = _one_process_reference()
    ranks = _part(weights, "same")
    expected = reference.model.state_dict()
    worst = max(float((ranks[k] - expected[k]).abs().max()) for k in expected)
    print(f"max abs weight difference, 2 ranks vs 1 process: {worst:.3g}")
    assert worst <= 1e-5, worst
    rank1 = _part(weights, "rank1")
    assert all(torch.equal(ranks[k], rank1[k]) for k in ranks)  # the ranks agree bit for bit
    # The epoch records: losses and metrics over all 64 / 37 items, not rank 0's half.
    for mine, theirs in zip(report["same_history"], _history(reference), strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_evaluation_on_two_ranks_equals_one_process_exactly(two_ranks):
    _, report, weights = two_ranks
    model = _model()
    model.load_state_dict(_part(weights, "same"))
    _, val = _data()
    one = Trainer(model, **OPTIONS)
    # Every figure bit for bit (compared as JSON text: nan, a class without examples, too).
    assert json.dumps(report["metrics"]) == json.dumps(one.evaluate(val))
    assert json.dumps(report["small"]) == json.dumps(one.evaluate((val[0][:10], val[1][:10])))
    assert sum(map(sum, report["metrics"]["confusion_matrix"])) == 37


def test_resume_on_two_ranks_continues_exactly(two_ranks):
    out, report, weights = two_ranks
    straight, resumed = _part(weights, "straight"), _part(weights, "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert report["resumed_history"] == report["straight_history"]
    state = json.loads((out / "resumed" / "last.train.json").read_text())["state"]
    assert state["world_size"] == WORLD and len(state["ranks"]) == WORLD
    assert set(state["ranks"][1]) >= {"sampler", "cpu", "numpy", "python"}
    tensors = load_file(out / "resumed" / "last.train.safetensors")
    cpu = [tensors[r["cpu"]["__tensor__"]] for r in state["ranks"]]
    assert not torch.equal(cpu[0], cpu[1])  # each rank draws its own dropout masks
    card = json.loads((out / "resumed" / "last.json").read_text())
    assert card["world_size"] == WORLD and card["recipe"]["world_size"] == WORLD


def test_rank_0_alone_writes_checkpoints_and_histories(two_ranks):
    out, _, _ = two_ranks
    names = {p.name for p in (out / "own0").iterdir()}
    assert {"last.safetensors", "last.train.json", "best.json", "history.json"} <= names
    assert not (out / "own1").exists()


def test_a_checkpoint_of_another_number_of_processes_is_refused(two_ranks):
    out, report, _ = two_ranks
    assert "trained by 1 process and this run has 2" in report["refused"]
    assert "run it as one process (without torchrun)" in report["refused"]
    train, val = _data()
    trainer = Trainer(_model(0.3), **DROPOUT_OPTIONS, checkpoint_dir=out / "resumed")
    with pytest.raises(xaikit.errors.XaikitConfigError, match=r"trained by 2 processes.*has 1"):
        trainer.fit(train, val, epochs=2, resume=out / "resumed")


def test_a_batch_the_processes_cannot_share_is_one_line():
    from xaikit.errors import XaikitConfigError
    from xaikit.train.trainer import check_batch_size

    check_batch_size(16, 2)
    check_batch_size(7, 1)
    with pytest.raises(XaikitConfigError, match="batch_size 7 cannot be split evenly over the 2"):
        check_batch_size(7, 2)


# --- the command line --------------------------------------------------------------------


def test_xaikit_train_on_two_ranks_writes_once_and_records_the_world_size(launch, capsys):
    out, done = launch
    codes = [json.loads((out / f"codes{r}.json").read_text()) for r in range(WORLD)]
    assert [c["cli"] for c in codes] == [0, 0]
    assert done.stdout.count("checkpoint:") == 1  # rank 1 prints nothing
    run = out / "cli"
    names = {p.name for p in run.iterdir()}
    assert {"model.safetensors", "last.train.json", "history.json", "metrics.json"} <= names
    assert not any(n.startswith(".") for n in names)  # no lock, no staging left behind
    assert json.loads((run / "model.json").read_text())["world_size"] == WORLD
    state = json.loads((run / "last.train.json").read_text())["state"]
    assert state["world_size"] == WORLD and len(state["ranks"]) == WORLD

    from xaikit.cli import main

    capsys.readouterr()
    code = main([*CLI, "--batch-size", "8", "--epochs", "2", "-o", str(run), "--resume"])
    assert code == 2
    err = capsys.readouterr().err
    assert "trained by 2 processes" in err and "torchrun --nproc-per-node 2" in err


def test_a_config_error_on_two_ranks_is_one_line_printed_once_and_exit_2(launch):
    out, done = launch
    codes = [json.loads((out / f"codes{r}.json").read_text()) for r in range(WORLD)]
    assert [c["bad"] for c in codes] == [2, 2]
    line = "xaikit: error: batch_size 7 cannot be split evenly over the 2 processes"
    assert (done.stdout + done.stderr).count(line) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (out / "bad").exists()  # refused before any rank touched --out


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
