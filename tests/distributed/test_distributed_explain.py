"""``torchrun --nproc-per-node 2 -m xaikit explain``: the same bytes as one process, also
after a rank is killed and the run resumed with one or two ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from torchrun_helpers import command, environment, output_files, run

ARGS = ["--model", "shapes-multiclass", "--method", "gradcam,saliency", "--batch-size", "2"]


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    done = run(["explain", str(images), *ARGS, "--out", str(out)], ranks=1)
    assert done.returncode == 2, done.stderr  # bad.png: listed, the rest explained
    return out


def _records(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {"images": results["images"], "errors": results["errors"], **results["counts"]}


def test_two_ranks_write_the_same_bytes_as_one_process(
    images: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run(["explain", str(images), *ARGS, "--out", str(out)], ranks=2)
    assert done.returncode != 0  # rank 0 exits 2 for bad.png; torchrun reports it
    mine, theirs = output_files(out), output_files(reference)
    assert len(theirs) == 40 * 2 * 4  # 40 images x 2 methods x (overlay, figure, map, raw)
    assert sorted(set(mine) ^ set(theirs)) == []
    assert all(mine[name] == theirs[name] for name in theirs)  # byte for byte
    assert _records(out) == _records(reference)
    run_info = json.loads((out / "results.json").read_text())["run"]
    assert run_info["world_size"] == 2
    # rank 0 merged the rank journals into one results.jsonl and removed them
    assert not list(out.glob("results.rank*.jsonl"))
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 42
    # printed once, by rank 0: each bad file's line (one of them rank 1's) and the summary
    owners = _owners(images, batch_size=2, world=2)
    assert {owners["bad.png"], owners["im06a.png"]} == {0, 1}
    assert done.stderr.count("bad.png is not an image file") == 1
    assert done.stderr.count("im06a.png is not an image file") == 1
    assert done.stdout.count("explained 40 image(s), 2 bad input(s)") == 1


def _owners(images: Path, batch_size: int, world: int) -> dict[str, int]:
    """The rank that explains each input (by file name) in a run of ``world`` ranks."""
    from xaikit.distributed import Group
    from xaikit.explain.files import collect_images

    sources = collect_images([images])
    owner = {}
    for rank in range(world):
        for index in Group(rank, world, rank).shard(len(sources), batch_size):
            owner[sources[index].path.name] = rank
    return owner


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` that torchrun (``parent``) started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def _killed_run(images: Path, out: Path) -> None:
    """Start 2 ranks, SIGKILL rank 1 once it has journaled a few images, let torchrun stop
    rank 0."""
    args = ["explain", str(images), *ARGS, "--out", str(out)]
    launcher = subprocess.Popen(
        command(args, ranks=2),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = out / "results.rank1.jsonl"
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and launcher.poll() is None:
        lines = journal.read_text().count("\n") if journal.is_file() else 0
        if lines >= 4:  # the run line and a few images
            pid = _rank_pid(launcher.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    launcher.wait(timeout=120)
    assert killed, "rank 1 finished before it could be killed"
    assert launcher.returncode != 0
    assert not (out / "results.json").exists()  # the run did not finish


@pytest.fixture(scope="module")
def killed(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("killed") / "out"
    _killed_run(images, out)
    done_before = output_files(out)
    assert 0 < len(done_before) < 320, len(done_before)  # some images written, not all
    return out


@pytest.mark.parametrize("ranks", [1, 2])
def test_resume_after_a_killed_rank_completes_with_the_same_outputs(
    images: Path, reference: Path, killed: Path, tmp_path: Path, ranks: int
) -> None:
    out = tmp_path / "out"
    shutil.copytree(killed, out)
    journaled = sum(
        1
        for path in out.glob("results.rank*.jsonl")
        for line in path.read_text().splitlines()
        if '"kind": "image"' in line or '"kind":"image"' in line
    )
    done = run(["explain", str(images), *ARGS, "--out", str(out), "--resume"], ranks=ranks)
    assert done.returncode != 0 and "im06a.png" in done.stderr, done.stderr
    mine, theirs = output_files(out), output_files(reference)
    assert sorted(set(mine) ^ set(theirs)) == []
    assert all(mine[name] == theirs[name] for name in theirs)  # byte for byte
    assert _records(out) == _records(reference)
    assert json.loads((out / "results.json").read_text())["run"]["resumed"] is True
    assert not list(out.glob("results.rank*.jsonl"))
    # the images the killed run had finished were not explained again
    explained = int(done.stdout.split("explained ")[1].split(" ")[0])
    assert journaled > 0 and explained == 40 - journaled, done.stdout
