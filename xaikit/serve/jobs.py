"""Work off the request threads: one worker thread, job ids, progress and cooperative cancel.

``JobRunner.submit(view, work)`` queues ``work(context)`` and returns a :class:`Job` at once;
the page polls ``/api/jobs/{id}`` for ``status``, ``progress`` (0..1) and ``message``. A new
job for the same ``view`` (e.g. the explanation panel of the page) cancels the one before it:
a queued job never starts, a running one stops at its next :meth:`JobContext.check` (called
between chunks of work: methods, channels, batches), so a stale request does not hold the
worker. One worker keeps the CPU free for the server and means one model runs at a time.
Finished jobs are kept (bounded) so a late poll still finds its result.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xaikit.errors import XaikitError

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = (DONE, ERROR, CANCELLED)
MAX_JOBS = 256


class JobCancelled(Exception):
    """Raised inside a job by :meth:`JobContext.check` once the job was cancelled."""


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
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    finished_event: threading.Event = field(default_factory=threading.Event, repr=False)

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


class JobContext:
    """What a job's work function gets: report progress, check for cancellation."""

    def __init__(self, job: Job) -> None:
        self._job = job

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled (call between chunks)."""
        if self._job.cancel_event.is_set():
            raise JobCancelled

    def progress(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1) done, with a short message; then :meth:`check`."""
        self._job.progress = min(1.0, max(0.0, float(fraction)))
        if message:
            self._job.message = message
        self.check()


Work = Callable[[JobContext], Any]


class JobRunner:
    """A queue, one worker thread and the table of jobs."""

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._current: dict[str, str] = {}  # view -> id of its latest job
        self._queue: queue.Queue[tuple[Job, Work] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started = 0
        self.cancelled = 0

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
            while len(self._jobs) > self.max_jobs:
                old_id, old = next(iter(self._jobs.items()))
                if old.status not in FINISHED:
                    break
                del self._jobs[old_id]

    def submit(self, view: str, kind: str, work: Work) -> Job:
        """Queue ``work`` as a new job of ``view``; the view's previous job is cancelled."""
        job = Job(secrets.token_hex(8), view, kind)
        self._remember(job)
        self._ensure_worker()
        self._queue.put((job, work))
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

    def _cancel(self, job: Job) -> None:
        if job.status in FINISHED:
            return
        job.cancel_event.set()
        if job.status == QUEUED:
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
        job.finished_event.set()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, work = item
            if job.cancel_event.is_set():
                if job.status not in FINISHED:
                    self._finish(job, CANCELLED, "cancelled before it started")
                continue
            job.status = RUNNING
            self.started += 1
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
                if job.cancel_event.is_set():
                    self._finish(job, CANCELLED, "cancelled")
                else:
                    job.result = result
                    job.progress = 1.0
                    self._finish(job, DONE, "done")

    def close(self) -> None:
        """Cancel everything and stop the worker (it finishes the chunk it is in)."""
        with self._lock:
            for job in self._jobs.values():
                self._cancel(job)
        self._queue.put(None)
