"""Work off the request threads: one worker thread, job ids, progress and cooperative cancel.

``JobRunner.submit(view, work)`` queues ``work(context)`` and returns a :class:`Job` at once;
the page polls ``/api/jobs/{id}`` for ``status``, ``progress`` (0..1) and ``message``. A new
job for the same ``view`` (e.g. the explanation panel of the page) cancels the one before it:
a queued job never starts (it is taken off the queue), a running one stops at its next
:meth:`JobContext.check` (called between chunks of work: methods, channels, batches), so a
stale request does not hold the worker. One worker keeps the CPU free for the server and
means one model runs at a time. Finished jobs are kept (bounded) so a late poll still finds
its result.

**Coalescing** (an inference server's dynamic batching): a job submitted with a
:class:`Batch` names a key; when the worker takes it, every other queued job with the same
key (not cancelled) is taken too and all of them run as one call, ``batch.run(context,
payloads)``, which answers one result per payload. A job cancelled while its batch runs is
dropped from it (``context.skip(i)``) and ends cancelled; the batch stops early only when all
its jobs were cancelled. Should a batched call fail, each job runs again on its own, so an
error names the request that caused it (the batch's exception is logged to the
``xaikit.serve`` logger: a bug of the batched path is not hidden); a job that was not
cancelled but got no result (``None``) from the batch runs again on its own too.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xaikit.errors import XaikitError

logger = logging.getLogger("xaikit.serve")

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = (DONE, ERROR, CANCELLED)
MAX_JOBS = 256
MAX_BATCH = 32
#: A batchable job waits until no job was submitted for this long (seconds) ...
BATCH_QUIET_S = 0.001
#: ... but at most this long, so that requests arriving together share one call.
BATCH_LINGER_S = 0.02


class JobCancelled(Exception):
    """Raised inside a job by :meth:`JobContext.check` once the job was cancelled."""


@dataclass
class Batch:
    """How a job may run together with others: same ``key``, one ``run`` for all.

    ``run(context, payloads)`` returns one result per payload (``None`` for one the context
    says to skip); the context is a :class:`BatchContext`."""

    key: Hashable
    run: Callable[[Any, list[Any]], Sequence[Any]]
    payload: Any


@dataclass
class Job:
    """One unit of work and what the page can read about it."""

    id: str
    view: str
    kind: str
    status: str = QUEUED
    progress: float = 0.0
    message: str = ""
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    batch: Batch | None = field(default=None, repr=False)
    batch_size: int = 0  # how many jobs ran in the call that computed this one
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    finished_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _callback_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def public(self) -> dict[str, Any]:
        """The JSON the page polls (the result is added by the route when done)."""
        return {
            "job": self.id,
            "view": self.view,
            "kind": self.kind,
            "status": self.status,
            "progress": round(float(self.progress), 4),
            "message": self.message,
            "error": self.error,
        }

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finished (any way); ``False`` on timeout."""
        return self.finished_event.wait(timeout)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the job finished (at once when it already has): how
        the server's event loop waits for a job without holding a thread."""
        with self._callback_lock:
            if not self.finished_event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _mark_finished(self) -> None:
        with self._callback_lock:
            self.finished_event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a waiter gone (its loop closed): nothing to tell
                traceback.print_exc()


class JobContext:
    """What a job's work function gets: report progress, check for cancellation."""

    def __init__(self, job: Job) -> None:
        self._job = job

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled (call between chunks)."""
        if self._job.cancel_event.is_set():
            raise JobCancelled

    def skip(self, index: int = 0) -> bool:
        """Whether the job was cancelled (the one payload of a batch of one)."""
        return self._job.cancel_event.is_set()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1) done, with a short message; then :meth:`check`."""
        self._job.progress = min(1.0, max(0.0, float(fraction)))
        if message:
            self._job.message = message
        self.check()


class BatchContext:
    """The context of a coalesced call: progress goes to every job of the batch;
    :meth:`check` stops the call only once all of them were cancelled; :meth:`skip` says
    whether job ``i`` was (its result need not be drawn)."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self._jobs = list(jobs)

    def check(self) -> None:
        if all(job.cancel_event.is_set() for job in self._jobs):
            raise JobCancelled

    def skip(self, index: int) -> bool:
        return self._jobs[index].cancel_event.is_set()

    def progress(self, fraction: float, message: str = "") -> None:
        for job in self._jobs:
            job.progress = min(1.0, max(0.0, float(fraction)))
            if message:
                job.message = message
        self.check()


Work = Callable[[JobContext], Any]


class JobRunner:
    """A queue, one worker thread and the table of jobs."""

    def __init__(
        self,
        max_jobs: int = MAX_JOBS,
        max_batch: int = MAX_BATCH,
        quiet_s: float = BATCH_QUIET_S,
        linger_s: float = BATCH_LINGER_S,
    ) -> None:
        self.max_jobs = max_jobs
        self.max_batch = max(1, int(max_batch))
        self.quiet_s = max(0.0, float(quiet_s))
        self.linger_s = max(0.0, float(linger_s))
        self._last_submit = 0.0
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._current: dict[str, str] = {}  # view -> id of its latest job
        self._pending: deque[tuple[Job, Work]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.started = 0
        self.cancelled = 0
        self.batches = 0  # coalesced calls (two jobs or more)
        self.coalesced = 0  # jobs computed in them

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="xaikit-serve-worker")
            self._thread.daemon = True
            self._thread.start()

    def _remember(self, job: Job) -> None:
        with self._lock:
            previous = self._current.get(job.view)
            if previous is not None and previous in self._jobs:
                self._cancel(self._jobs[previous])
            self._jobs[job.id] = job
            self._current[job.view] = job.id
            self._forget_oldest(job)

    def _forget_oldest(self, newest: Job) -> None:
        """Drop the oldest finished jobs beyond ``max_jobs`` (a running or queued one stays,
        and does not keep finished jobs after it from going; ``newest``, just handed to its
        client, always stays), and the view names that only they were the latest of: the
        tables stay bounded however many views a client names."""
        excess = len(self._jobs) - self.max_jobs
        if excess <= 0:
            return
        finished = [j for j in self._jobs.values() if j.status in FINISHED and j is not newest]
        for job in finished[:excess]:
            del self._jobs[job.id]
            if self._current.get(job.view) == job.id:
                del self._current[job.view]

    def submit(self, view: str, kind: str, work: Work, batch: Batch | None = None) -> Job:
        """Queue ``work`` as a new job of ``view``; the view's previous job is cancelled.
        With ``batch``, the worker may run it together with queued jobs of the same key."""
        job = Job(secrets.token_hex(8), view, kind, batch=batch)
        self._remember(job)
        with self._wake:
            self._ensure_worker()
            self._pending.append((job, work))
            self._last_submit = time.monotonic()
            self._wake.notify()
        return job

    def finished(self, view: str, kind: str, result: Any) -> Job:
        """A job that is already done (a cache hit): same answers as a computed one."""
        job = Job(secrets.token_hex(8), view, kind, status=DONE, progress=1.0, result=result)
        job.message = "cached"
        job.finished_event.set()
        self._remember(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def pending(self) -> int:
        """Jobs queued and not yet taken by the worker."""
        with self._lock:
            return len(self._pending)

    def _cancel(self, job: Job) -> None:  # under self._lock
        if job.status in FINISHED:
            return
        job.cancel_event.set()
        if job.status == QUEUED:
            # never starts: off the queue now, finished at once
            for i, (queued, _work) in enumerate(self._pending):
                if queued is job:
                    del self._pending[i]
                    break
            self._finish(job, CANCELLED, message="cancelled before it started")

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop; ``None`` for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._cancel(job)
        return job

    def _finish(self, job: Job, status: str, message: str = "") -> None:
        job.status = status
        if message:
            job.message = message
        if status == CANCELLED:
            self.cancelled += 1
        job._mark_finished()

    def _take(self) -> list[tuple[Job, Work]] | None:
        """The next job, with the queued jobs it coalesces with; ``None`` once closed."""
        with self._wake:
            while True:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return None
                job, work = self._pending.popleft()
                if job.status != QUEUED:  # cancelled (and finished) meanwhile
                    continue
                group = [(job, work)]
                if job.batch is not None:
                    self._linger()
                    if self._closed:
                        return None
                    if job.status != QUEUED:  # cancelled while the worker lingered
                        continue
                    mates = [
                        item
                        for item in self._pending
                        if item[0].batch is not None and item[0].batch.key == job.batch.key
                    ][: self.max_batch - 1]
                    for item in mates:
                        self._pending.remove(item)
                    group += mates
                for member, _work in group:
                    member.status = RUNNING
                    member.batch_size = len(group)
                self.started += len(group)
                if len(group) > 1:
                    self.batches += 1
                    self.coalesced += len(group)
                return group

    def _linger(self) -> None:  # under self._wake
        """Dynamic batching's short wait: while requests keep arriving (one came less than
        ``quiet_s`` ago), wait for them, ``linger_s`` at most; they then share one call and
        the worker does not compete with the server's request threads meanwhile."""
        start = time.monotonic()
        while len(self._pending) < self.max_batch - 1 and not self._closed:
            now = time.monotonic()
            quiet_left = self._last_submit + self.quiet_s - now
            linger_left = start + self.linger_s - now
            if quiet_left <= 0 or linger_left <= 0:
                return
            self._wake.wait(min(quiet_left, linger_left))

    def _loop(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            if len(group) == 1:
                self._run_one(*group[0])
            else:
                self._run_batch(group)

    def _run_one(self, job: Job, work: Work) -> None:
        try:
            result = work(JobContext(job))
        except JobCancelled:
            self._finish(job, CANCELLED, "cancelled")
        except XaikitError as err:
            job.error = " ".join(str(err).split())
            self._finish(job, ERROR)
        except Exception as err:  # a bug: keep the server up, say what happened
            job.error = f"internal error: {type(err).__name__}: {err}"
            traceback.print_exc()
            self._finish(job, ERROR)
        else:
            self._done(job, result)

    def _done(self, job: Job, result: Any) -> None:
        if job.cancel_event.is_set():
            self._finish(job, CANCELLED, "cancelled")
        else:
            job.result = result
            job.progress = 1.0
            self._finish(job, DONE, "done")

    def _run_batch(self, group: list[tuple[Job, Work]]) -> None:
        jobs = [job for job, _work in group]
        batch = jobs[0].batch
        assert batch is not None
        try:
            results = list(batch.run(BatchContext(jobs), [job.batch.payload for job in jobs]))  # type: ignore[union-attr]
            if len(results) != len(jobs):
                raise RuntimeError(f"a batch of {len(jobs)} answered {len(results)} results")
        except JobCancelled:
            for job in jobs:
                self._finish(job, CANCELLED, "cancelled")
            return
        except Exception:  # one request may be at fault: each on its own names it
            logger.exception("a batched call of %d jobs failed; running each on its own", len(jobs))
            for job, work in group:
                self._run_alone(job, work)
            return
        for (job, work), result in zip(group, results, strict=True):
            if result is None and not job.cancel_event.is_set():
                # the batch left out a job that still wants its result (a bug of the batched
                # path): computed on its own rather than ended done with nothing
                logger.error("a batched call gave job %s no result; running it alone", job.id)
                self._run_alone(job, work)
            else:
                self._done(job, result)

    def _run_alone(self, job: Job, work: Work) -> None:
        """A job of a batch, run again on its own (unless it was cancelled meanwhile)."""
        job.batch_size = 1
        if job.cancel_event.is_set():
            self._finish(job, CANCELLED, "cancelled")
        else:
            self._run_one(job, work)

    def close(self) -> None:
        """Cancel everything and stop the worker (it finishes the chunk it is in)."""
        with self._wake:
            for job in list(self._jobs.values()):
                self._cancel(job)
            self._closed = True
            self._wake.notify_all()
