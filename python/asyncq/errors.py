"""The exceptions asyncq raises."""

from __future__ import annotations

from ._core import AsyncqError, BrokerError, PayloadError

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
            worker let go of the job without recording an outcome) or ``corrupt_record`` (a
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
