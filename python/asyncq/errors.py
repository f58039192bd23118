"""The exceptions asyncq raises."""

from __future__ import annotations

from ._core import AsyncqError, BrokerError, PayloadError, check_snooze

__all__ = [
    "AsyncqError",
    "BatchFinished",
    "BrokerError",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "PayloadError",
    "ResultTimeout",
]


class JobFailed(AsyncqError):
    """A job ended without a result (dead-lettered).

    Attributes:
        job_id: The job's id.
        type: Name of the exception type raised remotely (e.g. ``"ValueError"``).
        message: The remote exception's message.
        traceback: The remote traceback, formatted.
        reason: Why it failed: ``exception``, ``timeout``, ``lease_expired``, ``unknown_task``,
            ``bad_payload``, ``unsupported_version``, ``oversized``, ``unsigned``,
            ``bad_signature``, ``unserializable_result``, ``cancelled``, ``abandoned`` (the
            worker let go of the job without recording an outcome), ``unknown_serializer``
            (its serializer is not one the worker's app uses), ``invalid_args`` (an argument
            could not be decoded, or failed its annotation's validation) or ``corrupt_record`` (a
            field of the job's record in the broker was missing or not a number; the message
            names it).
    """

    __module__ = "asyncq"

    def __init__(self, job_id: str, type: str, message: str, traceback: str, reason: str) -> None:
        super().__init__(f"job {job_id} failed: {type}: {message} ({reason})")
        self.job_id = job_id
        self.type = type
        self.message = message
        self.traceback = traceback
        self.reason = reason

    def __reduce__(self) -> tuple[type[JobFailed], tuple[str, str, str, str, str]]:
        # Pickled with its fields (for results passed between processes), not its message.
        return (type(self), (self.job_id, self.type, self.message, self.traceback, self.reason))


class JobCancelled(AsyncqError):
    """The job was cancelled before it produced a result."""

    __module__ = "asyncq"


class JobNotFound(AsyncqError, LookupError):
    """No record of the job exists (never enqueued, or its record expired)."""

    __module__ = "asyncq"


class ResultTimeout(AsyncqError, TimeoutError):
    """The job did not finish within the time given to ``JobHandle.result``."""

    __module__ = "asyncq"


class BatchFinished(AsyncqError):
    """Jobs were added to a batch whose jobs had all finished (its callbacks were released)."""


class Snooze(Exception):
    """Raise inside a task to run the job again after ``seconds``, without using an attempt.

    For an upstream that says "not now" (an HTTP 429 with ``Retry-After``, a resource that is
    not ready yet): the job waits in ``scheduled`` until the time has passed (the broker's
    clock), then runs like any queued job; its attempt count is as if this run never happened,
    so snoozing never dead-letters a job. Works in async, thread and process tasks.

    Args:
        seconds: How long to wait, from 0 to a year.

    Raises:
        ValueError: ``seconds`` is negative, longer than a year, or not a number.
    """

    __module__ = "asyncq"

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"Snooze takes seconds as a number, got {seconds!r}")
        check_snooze(float(seconds))  # the core's rule, the one the worker applies
        super().__init__(seconds)
        self.seconds = float(seconds)

    def __reduce__(self) -> tuple[type[Snooze], tuple[float]]:
        return (type(self), (self.seconds,))


class RateLimited(Snooze):
    """Raised by ``current_job().rate_limited(retry_after)``: the job's whole key waits.

    The job goes back to its key's group, first in line and its attempt not counted, and no
    job of the key starts for ``seconds``: its per-key limiters (or, when the task has none,
    its task-wide limiters) hold. A task without limiters just snoozes the job.
    """

    __module__ = "asyncq"
