"""xaikit.distributed: shards, ordered gathers and one rank's failure reaching every rank."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torchrun_helpers import environment, run

from xaikit.distributed import Group, current, gather_in_order


@pytest.mark.parametrize("n, chunk, world", [(10, 3, 2), (41, 2, 2), (7, 4, 3), (5, 1, 1)])
def test_shards_cover_every_item_once_in_whole_chunks(n: int, chunk: int, world: int) -> None:
    shards = [Group(r, world, r).shard(n, chunk) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    for rank, shard in enumerate(shards):
        # every chunk [k*chunk, (k+1)*chunk) goes whole to rank k % world
        assert all((i // chunk) % world == rank for i in shard)
    assert Group(0, world, 0).chunks(n, chunk)[0] == range(0, min(chunk, n))


def test_a_group_of_one_is_a_no_op() -> None:
    group = current()
    assert (group.rank, group.world, group.is_main, group.distributed) == (0, 1, True, False)
    assert group.agree({"a": 1}) == [{"a": 1}]
    assert gather_in_order(group, 3, 2, ["x", "y", "z"]) == ["x", "y", "z"]
    assert group.device("auto") == "auto"


SCRIPT = textwrap.dedent(
    """
    import sys
    from xaikit import distributed
    from xaikit.errors import XaikitConfigError

    group = distributed.init_from_env()
    log = open(f"{sys.argv[1]}/rank{group.rank}.txt", "w")  # one file each: no interleaving
    mine = [i * i for i in group.shard(10, 3)]
    ordered = distributed.gather_in_order(group, 10, 3, mine)
    print(f"rank {group.rank} ordered {ordered}", file=log)
    try:
        with distributed.guard(group):
            if group.rank == 1:
                raise XaikitConfigError("batch size 3 is odd")
    except distributed.RemoteRankError as err:
        print(f"rank {group.rank} remote {err.rank} usage={err.usage}: {err}", file=log)
    except XaikitConfigError as err:
        print(f"rank {group.rank} own: {err}", file=log)
    log.close()
    distributed.shutdown()
    """
)


def test_one_ranks_error_reaches_the_others(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--standalone",
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = sorted(
        line for rank in (0, 1) for line in (tmp_path / f"rank{rank}.txt").read_text().splitlines()
    )
    squares = [i * i for i in range(10)]
    assert lines == [
        f"rank 0 ordered {squares}",
        "rank 0 remote 1 usage=True: rank 1: batch size 3 is odd",
        f"rank 1 ordered {squares}",
        "rank 1 own: batch size 3 is odd",
    ]


def test_a_command_that_is_not_distributed_runs_once_on_rank_0() -> None:
    done = run(["zoo"], ranks=2, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Architectures (xaikit.create_model") == 1


def test_a_usage_error_on_every_rank_is_printed_once(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    args = ["explain", str(image), "--model", "shapes-multiclass", "--layer", "nope"]
    done = run([*args, "--out", str(tmp_path / "out")], ranks=2, timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("xaikit: error:")]
    assert len(errors) == 1 and "nope" in errors[0], done.stderr
