"""Job progress and event streams (see docs/events.md).

A running task reports progress with ``current_job().progress(fraction, message)``; the job's
record keeps the last 32 reports, so they expire with it. State changes are not written
anywhere extra: while someone reads a queue's events, the queue is marked watched and the
scripts that change a job's state publish each change on the queue's events channel (one
``PUBLISH`` per script call); when nobody reads, they publish nothing and a script call pays
one ``EXISTS``. So events are live notifications, not a log: :meth:`JobHandle.events` starts
from what the record holds and follows the job from there, reading the record again whenever
messages may have been lost, so it never misses the job's ending.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import JobNotFound

if TYPE_CHECKING:
    from ._core import Broker, EventStream, JobInfo

__all__ = ["Event", "JobProgress", "QueueEvents", "job_events"]

EventKind = Literal["state", "progress", "gap"]

FINAL_STATES = frozenset({"succeeded", "dead", "cancelled"})

# Each wait for a message is bounded by this many seconds; a job stream then reads the record
# again (a lost message costs at most this), as JobHandle.result() does.
_BACKSTOP = 1.0


@dataclass(frozen=True, slots=True)
class JobProgress:
    """One progress report of a job.

    Attributes:
        fraction: Done so far, from 0.0 to 1.0.
        message: The note that came with it, or None.
        at: Broker time of the report, unix seconds.
    """

    fraction: float
    message: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a job.

    Attributes:
        kind: ``state`` (the job changed state), ``progress`` (it reported progress) or
            ``gap`` (queue streams only: messages may have been missed here, because the
            connection to the broker dropped; ``job_id`` is empty).
        job_id: The job.
        queue: Its queue.
        at: Broker time, unix seconds.
        state: The new state, for ``state`` events: ``waiting``, ``scheduled``, ``queued``,
            ``running``, ``failed`` (will retry), ``succeeded``, ``dead`` or ``cancelled``.
        progress: The report, for ``progress`` events.
    """

    kind: EventKind
    job_id: str
    queue: str
    at: float
    state: str | None = None
    progress: JobProgress | None = None

    @property
    def final(self) -> bool:
        """True for the state event that ends the job (succeeded, dead or cancelled)."""
        return self.kind == "state" and self.state in FINAL_STATES


def latest_progress(info: JobInfo) -> JobProgress | None:
    """The newest progress report a record holds, or None."""
    if not info.progress:
        return None
    at, fraction, message = info.progress[-1]
    return JobProgress(fraction, message, at)


def _state_time(info: JobInfo) -> float:
    """When the record's current state began, as well as the record tells."""
    if info.state in FINAL_STATES and info.finished_at is not None:
        return info.finished_at
    if info.state == "running" and info.started_at is not None:
        return info.started_at
    if info.state in ("scheduled", "failed") and info.due_at is not None:
        return info.due_at
    return info.enqueued_at


# kind, job id, state, fraction, message, at: as EventStream.next() hands them over.
_EventTuple = tuple[str, str, str | None, float | None, str | None, float]


def _of(queue: str, t: _EventTuple) -> Event:
    kind, job_id, state, fraction, message, at = t
    if kind == "progress":
        report = JobProgress(fraction or 0.0, message, at)
        return Event("progress", job_id, queue, at, progress=report)
    return Event("state", job_id, queue, at, state=state)


class _Seen:
    """What a job stream has yielded already, so a report or change heard twice (from the
    record and from a message) is yielded once."""

    def __init__(self) -> None:
        self.state: str | None = None
        self.progress_at = -math.inf
        self.progress_same_ms: set[tuple[float, str | None]] = set()

    def new_progress(self, p: JobProgress) -> bool:
        if p.at < self.progress_at:
            return False
        if p.at > self.progress_at:
            self.progress_at = p.at
            self.progress_same_ms.clear()
        key = (p.fraction, p.message)
        if key in self.progress_same_ms:
            return False
        self.progress_same_ms.add(key)
        return True


def _from_record(info: JobInfo, seen: _Seen, history: bool) -> list[Event]:
    """Events the record shows that ``seen`` has not: progress reports newer than the last one
    yielded (all it keeps, with ``history``), then the state if it changed; in time order."""
    out: list[Event] = []
    reports = info.progress if history or seen.state is not None else info.progress[-1:]
    for at, fraction, message in reports:
        p = JobProgress(fraction, message, at)
        if seen.new_progress(p):
            out.append(Event("progress", info.id, info.queue, at, progress=p))
    if info.state != seen.state:
        seen.state = info.state
        out.append(Event("state", info.id, info.queue, _state_time(info), state=info.state))
    out.sort(key=lambda e: e.at)
    return out


def _heard(queue: str, job_id: str, batch: list[_EventTuple], seen: _Seen) -> list[Event]:
    """The events of ``job_id`` in a batch of messages that ``seen`` has not yielded yet."""
    out = []
    for t in batch:
        if t[1] != job_id:
            continue
        event = _of(queue, t)
        if event.progress is not None:
            if not seen.new_progress(event.progress):
                continue
        elif event.state == seen.state:
            continue  # read from the record already: every transition changes the state
        else:
            seen.state = event.state
        out.append(event)
    return out


async def job_events(
    broker: Broker, queue: str, job_id: str, *, history: bool = True
) -> AsyncIterator[Event]:
    """Yield the events of one job until it ends (see :meth:`JobHandle.events`)."""
    stream = await broker.events(queue)
    try:
        # Read after the stream is open: a change from here on is heard or read.
        info = await broker.job(queue, job_id)
        if info is None:
            raise JobNotFound(f"no job {job_id} (never enqueued, or its record expired)")
        seen = _Seen()
        for event in _from_record(info, seen, history):
            yield event
        if info.state in FINAL_STATES:
            return
        checked = time.monotonic()
        while True:
            lost, batch = await stream.next(_BACKSTOP)
            for event in _heard(queue, job_id, batch, seen):
                checked = time.monotonic()
                yield event
                if event.final:
                    return
            if lost or time.monotonic() - checked >= _BACKSTOP:
                # Nothing heard for a while, or messages may be missing: read the record.
                checked = time.monotonic()
                again = await broker.job(queue, job_id)
                if again is None:
                    return  # purged, or expired while we waited
                for event in _from_record(again, seen, False):
                    yield event
                if again.state in FINAL_STATES:
                    return
    finally:
        await stream.close()


class QueueEvents:
    """The live events of every job of one queue (see :meth:`App.events`).

    An async iterator; also an async context manager, whose entry returns once the stream is
    subscribed (so every change made after it is heard) and whose exit closes it. Iterated
    without ``async with``, it subscribes on the first step.
    """

    def __init__(self, broker: Broker, queue: str) -> None:
        self._broker = broker
        self.queue = queue
        self._stream: EventStream | None = None
        self._pending: list[Event] = []
        self._closed = False

    async def __aenter__(self) -> QueueEvents:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> QueueEvents:
        return self

    async def __anext__(self) -> Event:
        stream = await self._open()
        while not self._pending:
            lost, batch = await stream.next(_BACKSTOP)
            self._pending.extend(_of(self.queue, t) for t in batch)
            if lost:
                # This host's clock: asking the broker's could fail for the very reason
                # messages were lost.
                self._pending.append(Event("gap", "", self.queue, time.time()))
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Stop listening."""
        self._closed = True
        if self._stream is not None:
            await self._stream.close()
            self._stream = None

    async def _open(self) -> EventStream:
        if self._closed:
            raise StopAsyncIteration
        if self._stream is None:
            self._stream = await self._broker.events(self.queue)
        return self._stream
