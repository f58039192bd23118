"""The running job's context, available to task code through :func:`current_job`."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from ._core import Job

__all__ = ["JobContext", "current_job"]


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

    @property
    def cancelled(self) -> bool:
        return (self.job_id, self.token) in _CANCEL_REQUESTED

    @classmethod
    def of(cls, job: Job) -> JobContext:
        """Build the context of a leased job."""
        return cls(
            job.id, job.task, job.queue, job.attempt, job.max_attempts, job.token, job.enqueued_at
        )


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
