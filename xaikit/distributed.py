"""Work across processes with PyTorch's own distributed engine, launched by ``torchrun``.

``torchrun --nproc-per-node N -m xaikit <command> ...`` starts ``N`` processes (ranks) with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment; the
command line calls :func:`init_from_env`, which joins the process group (``gloo`` on CPU,
``gloo`` for CPU tensors and ``nccl`` for CUDA ones when there are GPUs). One process without
torchrun is a group of one: every function here then does nothing, so code written for
several ranks runs unchanged in one.

The protocol every distributed command follows is small:

- work is split by :meth:`Group.shard` (deterministic: chunks of consecutive items dealt
  round robin, so a rank's batches hold the same items as one process's batches would);
- ranks meet only at :meth:`Group.agree`, an all-gather of one small Python object per rank
  (the results to merge: top-k candidates, per-sample values, counts; never the data) plus
  the rank's error, if it has one;
- a rank that fails calls :meth:`Group.agree` once with its error (:func:`guard` does it, and
  the command line wraps every command in it) and stops; every other rank's next
  :meth:`Group.agree` then raises :class:`RemoteRankError` with that rank's message, so the
  run fails everywhere with the first failing rank's reason, printed by rank 0 only.

A rank that dies outright (killed, out of memory) never reaches ``agree``; ``torchrun`` then
stops the other ranks itself. The group's timeout (how long a rank waits at ``agree`` for the
others, :data:`TIMEOUT_ENV`, default 24 h) is long because shards may take unequal times.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from xaikit.errors import XaikitConfigError, XaikitError

T = TypeVar("T")

#: Seconds a rank waits at :meth:`Group.agree` for the others (default 86,400).
TIMEOUT_ENV = "XAIKIT_DISTRIBUTED_TIMEOUT"


class RemoteRankError(XaikitError):
    """Another rank failed; the message names the rank and carries its error.

    Attributes:
        rank: the first rank that failed.
        usage: whether that rank's error was a usage / input error (exit 2) rather than an
            internal one (exit 1).
    """

    def __init__(self, message: str, rank: int, usage: bool) -> None:
        super().__init__(message)
        self.rank = rank
        self.usage = usage


@dataclass(frozen=True)
class _Failure:
    rank: int
    message: str
    usage: bool


@dataclass
class Group:
    """This process's place among the ranks of a run.

    Attributes:
        rank: this process's index in ``[0, world)``.
        world: the number of processes.
        local_rank: the index on this machine (which GPU it takes).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, merges and writes the shared files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, n: int, chunk: int = 1) -> list[int]:
        """The indices of ``n`` items this rank takes: chunks of ``chunk`` consecutive indices
        (``[0, chunk)``, ``[chunk, 2 chunk)``, ...) dealt round robin over the ranks.

        Dealing whole chunks keeps each batch what one process would have made of it (the
        same images side by side, so the same kernels and the same bits); round robin keeps
        the shards within one chunk of each other in size.
        """
        if chunk < 1:
            raise XaikitConfigError(f"chunk must be at least 1, got {chunk}")
        return [
            i
            for start in range(self.rank * chunk, n, self.world * chunk)
            for i in range(start, min(start + chunk, n))
        ]

    def chunks(self, n: int, chunk: int) -> list[range]:
        """The chunks of :meth:`shard` as ranges, in order."""
        return [
            range(start, min(start + chunk, n))
            for start in range(self.rank * chunk, n, self.world * chunk)
        ]

    def agree(self, payload: Any = None, error: BaseException | None = None) -> list[Any]:
        """Meet the other ranks: returns every rank's ``payload``, indexed by rank.

        Every rank must call it the same number of times. With ``error`` this rank reports
        its failure (and should stop after); when any rank reported one, every rank that
        did not fail raises :class:`RemoteRankError` naming the first failing rank.
        """
        if not self.distributed:
            return [payload]
        import torch.distributed as dist

        failure = None if error is None else _describe(self.rank, error)
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, (failure, payload))
        failures = [f for f, _ in gathered if f is not None]
        if failures and error is None:
            first = failures[0]
            raise RemoteRankError(first.message, first.rank, first.usage)
        return [p for _, p in gathered]

    def device(self, requested: str = "auto") -> str:
        """The device this rank uses for ``requested``: with several ranks, ``auto`` and
        ``cuda`` mean ``cuda:<local_rank>`` (CPU when there is no GPU); anything else is
        kept."""
        import torch

        if not self.distributed or requested not in ("auto", "cuda"):
            return requested
        if torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        if requested == "cuda":
            raise XaikitConfigError("device 'cuda' was asked for but CUDA is not available")
        return "cpu"


def _describe(rank: int, error: BaseException) -> _Failure:
    if isinstance(error, RemoteRankError):
        return _Failure(error.rank, str(error), error.usage)
    usage = isinstance(error, (XaikitError, KeyboardInterrupt))
    if usage:
        message = f"rank {rank}: {error}"
    else:  # a bug: the traceback travels to rank 0, which prints it
        text = "".join(traceback.format_exception(error)).rstrip()
        message = f"rank {rank} failed with an internal error:\n{text}"
    return _Failure(rank, message, usage)


_GROUP = Group()


def current() -> Group:
    """The group this process belongs to (a group of one until :func:`init_from_env`)."""
    return _GROUP


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one rank."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _environment() -> tuple[int, int, int]:
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise XaikitConfigError(
            "WORLD_SIZE is set but RANK / LOCAL_RANK are missing or not integers; launch "
            "several processes with torchrun (torchrun --nproc-per-node 2 -m xaikit ...)"
        ) from None
    if not 0 <= rank < world:
        raise XaikitConfigError(f"RANK={rank} does not lie in [0, WORLD_SIZE={world})")
    return rank, world, local


def init_from_env() -> Group:
    """Join the process group ``torchrun`` set up (once; later calls return it).

    Backends: ``gloo`` without GPUs; with GPUs, ``gloo`` for CPU tensors and ``nccl`` for
    CUDA tensors, each rank on ``cuda:<LOCAL_RANK>``. Without torchrun (``WORLD_SIZE``
    unset or 1), returns the group of one and starts nothing.
    """
    global _GROUP
    if _GROUP.distributed or not launched():
        return _GROUP
    rank, world, local = _environment()
    import torch
    import torch.distributed as dist

    seconds = float(os.environ.get(TIMEOUT_ENV, 86_400))
    timeout = _dt.timedelta(seconds=seconds)
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local % torch.cuda.device_count())
            dist.init_process_group("cpu:gloo,cuda:nccl", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    _GROUP = Group(rank=rank, world=world, local_rank=local)
    return _GROUP


def shutdown() -> None:
    """Leave the process group (the end of a command run under torchrun)."""
    global _GROUP
    if _GROUP.distributed:
        import gc

        import torch.distributed as dist

        if dist.is_initialized():
            # Every rank gets here (after the guard's last meeting). Tearing the gloo group
            # down while another rank still sends, or while collected tensors still hold
            # its buffers, sometimes aborts the process at exit: meet once more first.
            gc.collect()
            with contextlib.suppress(RuntimeError, ValueError):
                dist.barrier()
            dist.destroy_process_group()
    _GROUP = Group()


@contextlib.contextmanager
def guard(group: Group | None = None) -> Iterator[Group]:
    """Run a block on every rank so that one rank's failure fails them all, together.

    On an exception, this rank reports it to the others (one :meth:`Group.agree` with the
    error) and re-raises; at the end of the block every rank meets once more, so a rank
    that finished early learns of a failure elsewhere (:class:`RemoteRankError`).
    """
    group = current() if group is None else group
    try:
        yield group
    except RemoteRankError:
        raise  # learned at an agree: every rank already knows
    except BaseException as err:
        if group.distributed:
            group.agree(error=err)
        raise
    group.agree()


@contextlib.contextmanager
def alone() -> Iterator[Group]:
    """Run a block as a group of one, whatever the launch: rank 0 doing work the other
    ranks do not share (a command that is not distributed) must not meet them halfway in a
    library call that would otherwise :meth:`Group.agree`."""
    global _GROUP
    saved, _GROUP = _GROUP, Group()
    try:
        yield _GROUP
    finally:
        _GROUP = saved


@contextlib.contextmanager
def quiet_unless_main(group: Group | None = None) -> Iterator[None]:
    """Send this process's stdout and stderr to ``/dev/null`` unless it is rank 0 (the
    progress bars and messages of a run are rank 0's; other ranks' errors reach it through
    :meth:`Group.agree`)."""
    group = current() if group is None else group
    if group.is_main:
        yield
        return
    with open(os.devnull, "w") as sink:
        out, err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = sink
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def gather_in_order(group: Group, n: int, chunk: int, mine: Sequence[T]) -> list[T]:
    """Put every rank's per-item results back in the order of the items.

    ``mine`` holds this rank's results for :meth:`Group.shard` ``(n, chunk)``, in that
    order; returns all ``n`` results in item order on every rank (one :meth:`Group.agree`).
    """
    shards = group.agree(list(mine))
    if not group.distributed:
        return list(shards[0])
    merged: list[Any] = [None] * n
    for rank, values in enumerate(shards):
        indices = Group(rank, group.world, rank).shard(n, chunk)
        if len(indices) != len(values):
            raise XaikitError(
                f"rank {rank} returned {len(values)} results for {len(indices)} items"
            )
        for index, value in zip(indices, values):
            merged[index] = value
    return merged
