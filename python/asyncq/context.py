"""The running job's context, available to task code through :func:`current_job`."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from ._core import Job
from ._core import check_progress as _check_progress

__all__ = ["JobContext", "check_progress", "current_job"]


# Where a context's progress reports go: fraction, message.
Report = Callable[[float, str | None], None]


@dataclass(frozen=True)
class JobContext:
    """Facts about the job being executed.

    Attributes:
        job_id: The job's id.
        task: The registered task name.
        queue: The queue it came from.
        attempt: 1 on the first run, 2 on the first retry, ...
        max_attempts: Runs allowed in total (1 + retries).
        token: The fencing token of this run's lease.
        enqueued_at: Unix time the job was enqueued.
        cancelled: Its cancellation was requested (``await job.cancel()``) while it runs. An
            async task is cancelled outright (``CancelledError``); a sync task in a thread
            cannot be interrupted, so it may check this now and then and return early.
    """

    job_id: str
    task: str
    queue: str
    attempt: int
    max_attempts: int
    token: int
    enqueued_at: float
    # Where progress reports go (`_report`, set by `with_report`): the leased Job's own method
    # in the worker, the pipe to the worker in a process-pool child. Not a field, so
    # dataclasses.asdict leaves it out, and not pickled (see `__reduce__`).

    @property
    def cancelled(self) -> bool:
        return (self.job_id, self.token) in _CANCEL_REQUESTED

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the job has come; returns at once (sent in the background).

        Whoever holds the job's handle sees it with ``await handle.progress()`` and in
        ``handle.events()``. The record keeps the last 32 reports. Reports made faster than
        the worker flushes them are merged (the latest wins); a report made after the job's
        lease was lost is dropped.

        Args:
            fraction: Done so far, from 0.0 to 1.0.
            message: An optional note (at most 1024 bytes of UTF-8), such as "page 3 of 10".

        Raises:
            ValueError: ``fraction`` is outside [0, 1] or ``message`` is too long.
            TypeError: ``message`` is not a string.
        """
        check_progress(fraction, message)
        report: Report | None = getattr(self, "_report", None)
        if report is not None:
            report(float(fraction), message)

    def rate_limited(self, retry_after: float) -> NoReturn:
        """Push this job's key back: no job of it starts for ``retry_after`` seconds.

        For an upstream that refuses one tenant (a 429 with ``Retry-After``): raises
        :class:`asyncq.RateLimited`, which the worker turns into a hand-back of this job (first
        in line, its attempt not counted) and a hold on its key's limiters, so the key's other
        jobs wait too while other keys run on. See docs/flow-control.md.

        Raises:
            RateLimited: Always (let it propagate out of the task).
            ValueError: ``retry_after`` is negative, over a year, or not a number.
        """
        from .errors import RateLimited  # noqa: PLC0415 (errors imports the core too)

        raise RateLimited(retry_after)

    def with_report(self, report: Report) -> JobContext:
        """Send this context's progress reports to ``report``; returns the context."""
        object.__setattr__(self, "_report", report)
        return self

    def __reduce__(self) -> tuple[type[JobContext], tuple[str, str, str, int, int, int, float]]:
        # Pickled (into a process-pool child, or as a task's result) without its report sink,
        # which belongs to this process: the child sets its own.
        facts = (self.job_id, self.task, self.queue, self.attempt, self.max_attempts)
        return (JobContext, (*facts, self.token, self.enqueued_at))

    @classmethod
    def of(cls, job: Job) -> JobContext:
        """Build the context of a leased job."""
        ctx = cls(
            job.id, job.task, job.queue, job.attempt, job.max_attempts, job.token, job.enqueued_at
        )
        return ctx.with_report(job.progress)


def check_progress(fraction: float, message: str | None) -> None:
    """Refuse a progress report that cannot be recorded, naming what is wrong: the types here,
    the range and size by the core's rule (``_core.check_progress``), which every report
    passes again on its way to the broker."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"progress must be a number from 0.0 to 1.0, got {fraction!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"a progress message must be a str, got {type(message).__name__}")
    _check_progress(float(fraction), message)


# The worker stores the leased Job itself (no allocation per job); contexts are built on demand.
# A process-pool child has no Job (it lives in the parent), so it stores a JobContext instead.
_current: contextvars.ContextVar[Job | JobContext] = contextvars.ContextVar("asyncq_job")

_OUTSIDE_JOB = (
    "current_job() was called outside a running job: it works only inside a task function "
    "executed by a worker (and in code that function calls, and in middleware execute hooks); "
    "calling the task function directly or enqueueing it does not create a job context"
)


# Runs (job id, lease token) whose cancellation was requested, as the worker heard it; read from
# task threads (a dict lookup under the GIL), written on the event loop. A thread may run on
# after its job ended cancelled, so entries are not dropped when the job ends but only once
# there are many (cancel requests are rare), oldest first.
_CANCEL_REQUESTED: dict[tuple[str, int], None] = {}
_CANCEL_KEEP = 4096


def mark_cancel_requested(job_id: str, token: int) -> None:
    """Record that the run of ``job_id`` under ``token`` was asked to stop."""
    _CANCEL_REQUESTED[(job_id, token)] = None
    while len(_CANCEL_REQUESTED) > _CANCEL_KEEP:
        del _CANCEL_REQUESTED[next(iter(_CANCEL_REQUESTED))]


def current_job() -> JobContext:
    """Return the context of the job running in this task or thread.

    Returns:
        The running job's :class:`JobContext`.

    Raises:
        LookupError: When called outside a job run by a worker.
    """
    job = _current.get(None)
    if job is None:
        raise LookupError(_OUTSIDE_JOB)
    return job if isinstance(job, JobContext) else JobContext.of(job)
