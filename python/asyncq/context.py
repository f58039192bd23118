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
    """

    job_id: str
    task: str
    queue: str
    attempt: int
    max_attempts: int
    token: int
    enqueued_at: float

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
