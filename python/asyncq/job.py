"""Handles to enqueued jobs: status, results, cancellation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from ._core import JobInfo
from .errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from .events import Event, JobProgress, job_events, latest_progress
from .serialization import decode_result

if TYPE_CHECKING:
    from ._core import Broker
    from .serialization import Codec

__all__ = ["JobHandle", "JobInfo"]

R = TypeVar("R")

# Waiting for a result is woken by the scripts' end notifications; each wait is bounded by this
# many seconds, after which the state is read again (a lost notification costs at most this).
_BACKSTOP = 1.0


def _wait(deadline: float | None) -> float:
    """Seconds the next wait for an ending may last: the backstop, or less before a deadline."""
    if deadline is None:
        return _BACKSTOP
    return max(0.0, min(_BACKSTOP, deadline - time.monotonic()))


class JobHandle(Generic[R]):
    """A reference to one job.

    Attributes:
        id: The job id.
        queue: The queue holding it.
        created: False when an idempotency key matched an existing job.
    """

    __slots__ = ("_broker", "_codec", "created", "id", "queue")

    def __init__(
        self,
        broker: Broker,
        queue: str,
        id: str,
        created: bool = True,
        codec: Codec | None = None,
    ) -> None:
        self._broker = broker
        # The task's codec when the handle came from enqueueing it: results come back as the
        # annotated type (a pydantic model, a dataclass). Else plain values.
        self._codec = codec
        self.id = id
        self.queue = queue
        self.created = created

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r}, queue={self.queue!r})"

    @property
    def deduplicated(self) -> bool:
        """True when this enqueue wrote no job: its key (``key``, ``unique``, ``throttle``,
        ``debounce``) or ``job_id`` named an existing one, which this handle refers to."""
        return not self.created

    async def info(self) -> JobInfo | None:
        """Fetch the job's record.

        Returns:
            The record, or None when it does not exist (never enqueued, or expired).
        """
        return await self._broker.job(self.queue, self.id)

    async def status(self) -> str:
        """Return the job's state.

        Returns:
            One of ``scheduled``, ``queued``, ``running``, ``succeeded``, ``failed`` (will
            retry), ``dead``, ``cancelled``.

        Raises:
            JobNotFound: The job does not exist.
        """
        return _require(await self.info(), self.id).state

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return its result.

        Args:
            timeout: Seconds to wait; None waits forever.

        Returns:
            The task's return value.

        Raises:
            JobFailed: The job was dead-lettered; carries the remote error.
            JobCancelled: The job was cancelled.
            JobNotFound: The job does not exist.
            ResultTimeout: It did not finish in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _wait(deadline)
            info = _require(await self._broker.wait_finished(self.queue, self.id, wait), self.id)
            if info.state in ("succeeded", "dead", "cancelled"):
                return cast(R, _outcome(info, self._codec))
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"job {self.id} not finished after {timeout}s")

    def result_sync(self, timeout: float | None = None) -> R:
        """Blocking :meth:`result` for sync callers (no event loop needed).

        Args:
            timeout: Seconds to wait; None waits forever.

        Returns:
            The task's return value.

        Raises:
            JobFailed: The job was dead-lettered.
            JobCancelled: The job was cancelled.
            JobNotFound: The job does not exist.
            ResultTimeout: It did not finish in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _wait(deadline)
            info = self._broker.wait_finished_blocking(self.queue, self.id, wait)
            info = _require(info, self.id)
            if info.state in ("succeeded", "dead", "cancelled"):
                return cast(R, _outcome(info, self._codec))
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"job {self.id} not finished after {timeout}s")

    async def progress(self) -> JobProgress | None:
        """Return the job's latest progress report.

        Returns:
            The newest report its task made with ``current_job().progress()``, or None when
            it made none.

        Raises:
            JobNotFound: The job does not exist.
        """
        return latest_progress(_require(await self.info(), self.id))

    def events(self, *, history: bool = True) -> AsyncIterator[Event]:
        """Follow the job: yield its state changes and progress reports until it ends.

        The first events come from its record: its progress reports so far (the last 32;
        only the latest with ``history=False``) and its current state. Then each change is
        yielded as it happens, pushed by the broker (no polling); when messages may have
        been lost, or none came for a second, the record is read again, so the job's ending
        is always yielded, last. A short-lived state that passed while messages were lost
        (a retry's ``failed``, say) may be missing: the stream shows what is, not a full log.

        Example::

            async for event in handle.events():
                if event.progress:
                    print(f"{event.progress.fraction:.0%} {event.progress.message or ''}")
                else:
                    print("now", event.state)

        Args:
            history: Start with every report the record keeps, not only the latest.

        Returns:
            An async iterator of :class:`~asyncq.Event`.

        Raises:
            JobNotFound: The job does not exist (raised on the first iteration).
        """
        return job_events(self._broker, self.queue, self.id, history=history)

    async def cancel(self) -> bool:
        """Cancel the job.

        A queued or scheduled job is cancelled at once and never runs. A running job is asked
        to stop: its worker hears of it at once (a round trip or two; at the latest at its
        next heartbeat if the notification was lost) and cancels the task. A sync task in a
        thread cannot be interrupted: it sees ``current_job().cancelled`` become true.

        Returns:
            True if the job was cancelled or cancellation was requested; False if it had
            already finished or does not exist.
        """
        outcome = await self._broker.cancel(self.queue, self.id)
        return outcome in ("cancelled", "requested")


def _require(info: JobInfo | None, job_id: str) -> JobInfo:
    if info is None:
        raise JobNotFound(f"no job {job_id} (never enqueued, or its record expired)")
    return info


def _outcome(info: JobInfo, codec: Codec | None = None) -> object:
    if info.state == "succeeded":
        if codec is not None:
            return codec.decode_result(info.result)
        return decode_result(info.result)
    if info.state == "cancelled":
        raise JobCancelled(f"job {info.id} was cancelled")
    err = info.error or {}
    raise JobFailed(
        info.id,
        err.get("type", "Error"),
        err.get("message", ""),
        err.get("traceback", ""),
        err.get("reason", "exception"),
    )
