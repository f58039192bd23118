"""Running one leased job to its outcome: the worker's execution path.

Every job that starts ends in exactly one outcome (ack, fail, cancelled or release), whatever the
task does: it may raise any ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``, its own
``CancelledError``), raise an exception that cannot be formatted, or outlive its timeout. Only the
worker's own cancellations (a cancel request, a shutdown) are told apart from the task's failures;
everything else fails the job with a reason, and its retries apply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._failure import describe
from ._threads import Slots, ThreadPool, default_size
from .backoff import Exponential
from .context import JobContext, _current
from .errors import RateLimited, Snooze
from .middleware import run_hooks
from .serialization import UnknownSerializer, decode_arguments

if TYPE_CHECKING:
    from ._core import Consumer, Job
    from ._procpool import ProcessPool
    from .app import App
    from .task import Task

__all__ = ["Lane", "Runner", "job_fields"]

log = logging.getLogger("asyncq.worker")

T = TypeVar("T")


@dataclass
class Lane:
    """One queue inside the worker: its consumer, limit and running jobs.

    Attributes:
        slot_free: Set when a place in this lane, a thread or a child process frees up.
        settled: Ids of running jobs whose outcome was already queued.
        cancel_early: Ids whose cancel request came before their run started here (the
            request can overtake the fetch's reply to the loop); cancelled as they start.
        siblings: The lanes of every partition of a partitioned queue (this one among them):
            ``limit`` is their budget together. Empty for a queue of one partition.
    """

    queue: str
    limit: int
    consumer: Consumer
    running: dict[str, tuple[asyncio.Task[None], Job]] = field(default_factory=dict)
    slot_free: asyncio.Event = field(default_factory=asyncio.Event)
    settled: set[str] = field(default_factory=set)
    cancel_early: dict[str, None] = field(default_factory=dict)
    siblings: list[Lane] = field(default_factory=list, repr=False, compare=False)
    fetching: int = 0

    def free(self) -> int:
        """Jobs this lane may start now: its limit less what runs in it (in all the lanes of
        its queue's partitions, for a partitioned queue, and what their fetches in flight
        may bring)."""
        if not self.siblings:
            return self.limit - len(self.running)
        return self.limit - sum(len(lane.running) + lane.fetching for lane in self.siblings)

    def freed(self) -> None:
        """A place in this lane freed up: every lane sharing its limit looks again. They wake
        in list order and the first to look takes the place, so the shared list turns by one
        each time: each partition in turn looks first, and a busy one cannot keep the budget
        from the others."""
        if not self.siblings:
            self.slot_free.set()
            return
        for lane in self.siblings:
            lane.slot_free.set()
        self.siblings.append(self.siblings.pop(0))


class _BadInput(Exception):
    """A job's arguments cannot be given to its function (an unknown serializer, bytes it
    cannot decode, a value its annotation rejects): the same bytes would fail again."""

    def __init__(self, reason: str, error: Exception) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class _Expired(TimeoutError):
    """The job ran past its timeout (raised by the worker, not by the task)."""

    def __init__(self, timeout: float, executor: str) -> None:
        super().__init__(timeout)
        self.timeout = timeout
        self.executor = executor

    def explain(self) -> str:
        text = f"exceeded its timeout of {self.timeout}s"
        if self.executor == "thread":
            # A thread cannot be stopped: say so in the record, since the body may still run.
            text += (
                "; it runs in a thread, which cannot be stopped, so the function may still be "
                "running while the job is retried (executor='process' stops it at the timeout)"
            )
        elif self.executor == "process":
            text += "; its child process was terminated"
        return text


def job_fields(job: Job, event: str, **more: Any) -> dict[str, Any]:
    """Structured fields of a job event, for ``log.x(..., extra=job_fields(...))``: the
    stable set of docs/logging.md, ``duration_ms`` and ``error`` None where they do not apply."""
    fields: dict[str, Any] = {
        "event": event,
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempt,
        "duration_ms": None,
        "error": None,
    }
    fields.update(more)
    return fields


def executor_of(task: Task[Any, Any]) -> str:
    """How a task's function runs: ``async``, ``thread`` or ``process``."""
    return task.config.executor


class Runner:
    """Executes leased jobs for a worker and records their outcomes.

    Args:
        app: The application.
        stats: The worker's counters (a ``WorkerStats``).
        threads: Thread pool size for sync tasks.
        processes: Child processes for ``executor="process"`` tasks.
        on_free: Called when a thread or process slot frees up.
    """

    def __init__(
        self,
        app: App,
        stats: Any,
        threads: int | None,
        processes: int | None,
        on_free: Any,
    ) -> None:
        self.app = app
        self.stats = stats
        self.pool = ThreadPool(threads or default_size(), on_free)
        self.proc_slots = Slots(processes or os.cpu_count() or 1, on_free)
        self._procs: ProcessPool | None = None
        self.cancel_requested: set[str] = set()
        self.releasing = False
        kinds = {name: executor_of(t) for name, t in app.tasks.items()}
        self._gate_of: dict[str, Slots | None] = {
            name: self.gate_for(kind) for name, kind in kinds.items()
        }

    def gate_for(self, kind: str) -> Slots | None:
        """The slots an executor kind uses (None: async tasks need none)."""
        if kind == "thread":
            return self.pool.slots
        if kind == "process":
            return self.proc_slots
        return None

    def reserve(self, job: Job) -> Slots | None:
        """Take the job's executor slot at lease time."""
        gate = self._gate_of.get(job.task)
        if gate is not None:
            gate.reserve()
        return gate

    async def close(self) -> None:
        """Stop the executors (threads still running finish in the background)."""
        self.pool.shutdown()
        if self._procs is not None:
            await self._procs.close()

    # ---- one job -------------------------------------------------------------------------

    async def execute(self, lane: Lane, job: Job, gate: Slots | None) -> None:
        """Run ``job`` to exactly one outcome; never raises."""
        tracing = self.app._tracing
        try:
            if tracing is None:
                await self._attempt(lane, job, gate)
            else:
                with tracing.processing(job):  # the attempt's CONSUMER span
                    await self._attempt(lane, job, gate)
        except BaseException as exc:  # the last line of defence; see _last_resort
            self._last_resort(lane, job, exc)
        finally:
            lane.settled.discard(job.id)
            del lane.running[job.id]
            lane.freed()

    async def _attempt(self, lane: Lane, job: Job, gate: Slots | None) -> None:
        # The hot path: no allocation or await beyond the task's own when no middleware is set.
        task = self.app.tasks[job.task]
        _current.set(job)
        ctx = JobContext.of(job) if self.app.middleware else None
        if log.isEnabledFor(logging.DEBUG):  # per-job lines only when asked for
            log.debug(
                "job %s (%s) attempt %d/%d started",
                job.id,
                job.task,
                job.attempt,
                job.max_attempts,
                extra=job_fields(job, "job.started"),
            )
        started = time.monotonic()
        handed = False
        try:
            if ctx is not None:
                await run_hooks(self.app.middleware, "before_execute", ctx)
            handed = True
            result = await self._call(task, job, gate)
        except asyncio.CancelledError as exc:
            await self._on_cancelled(lane, task, job, ctx, exc, started)
        except Snooze as snooze:
            await self._on_snooze(lane, job, ctx, snooze, started)
        except _BadInput as bad:
            self._refuse(lane, job, bad.reason, bad.error, "job.poison")
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: a failure of the job
            await self._on_error(lane, task, job, ctx, exc, started)
        else:
            await self._on_success(lane, task, job, ctx, result, started)
        finally:
            if gate is not None and not handed:
                gate.release()

    async def _call(self, task: Task[Any, Any], job: Job, gate: Slots | None) -> Any:
        # The envelope's timeout: the one Rust uses to stop extending the lease, so the two
        # can never disagree (a task whose timeout changed since the job was enqueued).
        timeout = job.timeout
        kind = executor_of(task)
        args, kwargs = job.args, job.kwargs
        if task._codec is not None or job.serializer is not None:
            args, kwargs = self._decode(task, job)
        if kind == "async":
            coro = task.fn(*args, **kwargs)
            return await (coro if timeout is None else _deadline(coro, timeout, kind))
        if kind == "process":
            # A thread gets the attempt's span through the copied context; a child, as headers.
            tracing = self.app._tracing
            try:
                return await self._process_pool().run(
                    task.fn,
                    args,
                    kwargs,
                    ctx=JobContext.of(job),
                    timeout=timeout,
                    on_progress=job.progress,
                    trace_headers=None if tracing is None else tracing.current_headers(),
                )
            except TimeoutError:
                raise _Expired(timeout or 0.0, kind) from None
            finally:
                if gate is not None:
                    gate.release()
        call = self.pool.start(task.fn, args, kwargs)
        call.done.add_done_callback(_retrieve)
        try:
            await call.started  # the timeout counts from the start of execution
            fut = call.done
            return await (fut if timeout is None else _deadline(fut, timeout, kind))
        finally:
            call.abandon()

    def _decode(self, task: Task[Any, Any], job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The job's arguments as the function takes them (decoded by the serializer the
        envelope names, typed ones validated); a failure is the input's, never retried."""
        accept = self.app.serializer_for
        try:
            if job.serializer is not None:
                accept(job.serializer)  # refused before anything is decoded
            return decode_arguments(task._codec, job.args, job.kwargs, accept)
        except UnknownSerializer as exc:
            raise _BadInput("unknown_serializer", exc) from exc
        except Exception as exc:  # a serializer's or a validator's error
            raise _BadInput("invalid_args", exc) from exc

    def _process_pool(self) -> ProcessPool:
        if self._procs is None:
            from ._procpool import ProcessPool  # noqa: PLC0415 - only workers that need it

            self._procs = ProcessPool(self.proc_slots.size)
        return self._procs

    # ---- outcomes ------------------------------------------------------------------------

    async def _on_success(
        self,
        lane: Lane,
        task: Task[Any, Any],
        job: Job,
        ctx: JobContext | None,
        result: Any,
        started: float,
    ) -> None:
        if ctx is not None:
            await run_hooks(self.app.middleware, "after_execute", ctx)
        try:
            if task._codec is not None:
                try:
                    result = task._codec.encode_result(result)
                except Exception as exc:
                    raise TypeError(f"result of {task.name!r}: {exc}") from exc
            lane.consumer.ack(job, result, task.config.result_ttl)
        except TypeError as exc:
            self._refuse(lane, job, "unserializable_result", exc, "job.failed")
            return
        lane.settled.add(job.id)
        self.stats.succeeded += 1
        self._trace("succeeded")
        if log.isEnabledFor(logging.DEBUG):  # per-job success lines only when asked for
            ms = _ms(started)
            log.debug(
                "job %s (%s) succeeded in %.1f ms",
                job.id,
                job.task,
                ms,
                extra=job_fields(job, "job.succeeded", duration_ms=ms),
            )
        if ctx is not None:
            await run_hooks(self.app.middleware, "on_success", ctx, result)

    async def _on_cancelled(
        self,
        lane: Lane,
        task: Task[Any, Any],
        job: Job,
        ctx: JobContext | None,
        exc: asyncio.CancelledError,
        started: float,
    ) -> None:
        if job.id in self.cancel_requested:
            self.cancel_requested.discard(job.id)
            lane.consumer.cancelled(job, "cancelled while running")
            lane.settled.add(job.id)
            self.stats.cancelled += 1
            self._trace("cancelled")
            log.info(
                "job %s (%s) cancelled on request",
                job.id,
                job.task,
                extra=job_fields(job, "job.cancelled", duration_ms=_ms(started)),
            )
        elif self.releasing:
            lane.consumer.release(job)
            lane.settled.add(job.id)
            self.stats.released += 1
            self._trace("released")
            self._log_released(task, job, started)
        else:
            # Nobody in the worker cancelled it: the task raised CancelledError itself.
            await self._on_error(lane, task, job, ctx, exc, started)

    async def _on_snooze(
        self, lane: Lane, job: Job, ctx: JobContext | None, snooze: Snooze, started: float
    ) -> None:
        if ctx is not None:
            await run_hooks(self.app.middleware, "after_execute", ctx)
        keyed = isinstance(snooze, RateLimited)
        lane.consumer.snooze(job, snooze.seconds, keyed)
        lane.settled.add(job.id)
        self.stats.snoozed += 1
        self._trace("snoozed")
        log.info(
            "job %s (%s) %s for %gs",
            job.id,
            job.task,
            "pushed its key back" if keyed else "snoozed",
            snooze.seconds,
            extra=job_fields(job, "job.snoozed", duration_ms=_ms(started), delay_s=snooze.seconds),
        )

    def _log_released(self, task: Task[Any, Any], job: Job, started: float) -> None:
        fields = job_fields(job, "job.released", duration_ms=_ms(started))
        if executor_of(task) == "thread":
            log.warning(
                "job %s (%s) handed back at shutdown; its thread cannot be stopped and may "
                "still be running while another worker runs the job",
                job.id,
                job.task,
                extra=fields,
            )
        else:
            log.info("job %s (%s) handed back at shutdown", job.id, job.task, extra=fields)

    async def _on_error(
        self,
        lane: Lane,
        task: Task[Any, Any],
        job: Job,
        ctx: JobContext | None,
        exc: BaseException,
        started: float,
    ) -> None:
        if ctx is not None:
            await run_hooks(self.app.middleware, "after_execute", ctx)
        failure = describe(exc)
        if isinstance(exc, _Expired):
            kind, message, reason = "TimeoutError", exc.explain(), "timeout"
        else:
            kind, message, reason = failure.type, failure.message, "exception"
        # Always offer the retry: the fail script decides whether attempts remain (it may also
        # dead-letter a corrupt record or refuse a stale lease), and its verdict drives the rest.
        verdict_of = lane.consumer.fail(
            job, kind, message, failure.traceback, reason, task.config.backoff.as_tuple()
        )
        lane.settled.add(job.id)
        error = f"{kind}: {message}"

        def fields(verdict: str) -> dict[str, Any]:
            return job_fields(
                job,
                _VERDICT_EVENTS.get(verdict, "job.failed"),
                duration_ms=_ms(started),
                error=error,
                reason=reason,
                traceback=failure.traceback,
                verdict=verdict,
            )

        try:
            verdict = await verdict_of
        except asyncio.CancelledError:
            # A shutdown gave up waiting. The outcome is queued already: _last_resort sees
            # `settled` and sends nothing more; no hook runs.
            self._trace("unknown", exc)
            self._log_verdict(job, "unknown", error, fields("unknown"))
            raise
        self._trace(verdict, exc)
        hook = self._log_verdict(job, verdict, error, fields(verdict))
        if ctx is not None and hook is not None:
            await run_hooks(self.app.middleware, hook, ctx, exc)

    def _refuse(self, lane: Lane, job: Job, reason: str, exc: Exception, event: str) -> None:
        """Dead-letter ``job`` with ``reason``, never retried: its input cannot be run, or its
        result cannot be stored (the same bytes would fail again); logged as ``event``."""
        failure = describe(exc)
        kind = failure.type
        lane.consumer.fail(job, kind, failure.message, failure.traceback, reason, None)
        lane.settled.add(job.id)
        self.stats.failed += 1
        self._trace("dead", exc)
        log.error(
            "job %s (%s) dead-lettered (%s): %s",
            job.id,
            job.task,
            reason,
            exc,
            extra=job_fields(job, event, error=f"{kind}: {exc}"),
        )

    def _trace(self, outcome: str, exc: BaseException | None = None) -> None:
        """Put the attempt's outcome on its span (when the app is traced)."""
        tracing = self.app._tracing
        if tracing is not None:
            tracing.outcome(outcome, exc)

    def _log_verdict(
        self, job: Job, verdict: str, error: str, fields: dict[str, Any]
    ) -> str | None:
        """Count and log a failure by the fail script's verdict; returns the hook to run."""
        if verdict == "retrying":
            self.stats.retried += 1
            log.info(
                "job %s (%s) attempt %d/%d failed, will retry: %s",
                job.id,
                job.task,
                job.attempt,
                job.max_attempts,
                error,
                extra=fields,
            )
            return "on_retry"
        if verdict == "dead":
            self.stats.failed += 1
            log.warning(
                "job %s (%s) failed for good after %d attempt(s): %s",
                job.id,
                job.task,
                job.attempt,
                error,
                extra=fields,
            )
            return "on_failure"
        if verdict == "refused":
            # The consumer's own `refused` event already warns once; this adds the error, at
            # debug, so a refused failure is not reported twice.
            log.debug(
                "job %s (%s) failed, but its outcome was refused: the lease was stale and "
                "another worker owns the job now: %s",
                job.id,
                job.task,
                error,
                extra=fields,
            )
            return None
        if verdict == "cancelled":  # not asked for by this path; counted as what it is
            self.stats.cancelled += 1
            log.info("job %s (%s) ended cancelled: %s", job.id, job.task, error, extra=fields)
            return None
        log.warning(
            "job %s (%s) failed, verdict unknown: the worker stopped before the failure was "
            "confirmed by the broker (if it never got there, the lease expires and the job "
            "is retried): %s",
            job.id,
            job.task,
            error,
            extra=fields,
        )
        return None

    def _last_resort(self, lane: Lane, job: Job, exc: BaseException) -> None:
        """The error path itself failed (or was cancelled half-way): still end the job."""
        if job.id in lane.settled:
            if not isinstance(exc, asyncio.CancelledError):
                log.error(
                    "job %s: error after its outcome was recorded",
                    job.id,
                    exc_info=exc,
                    extra=job_fields(job, "worker.error"),
                )
            return
        try:
            if isinstance(exc, asyncio.CancelledError) and self.releasing:
                lane.consumer.release(job)
                return
            failure = describe(exc)
            task = self.app.tasks.get(job.task)
            backoff = task.config.backoff if task is not None else Exponential()
            retry = backoff.as_tuple() if job.attempt < job.max_attempts else None
            message = f"the worker failed while recording this job's outcome: {failure.message}"
            lane.consumer.fail(job, failure.type, message, failure.traceback, "worker_error", retry)
            log.error(
                "job %s (%s): %s",
                job.id,
                job.task,
                message,
                extra=job_fields(job, "worker.error", traceback=failure.traceback),
            )
        except BaseException:
            # Nothing more can be done here; the Rust side fails a job dropped without outcome.
            log.exception("job %s: could not record any outcome", job.id)


async def _deadline(aw: Awaitable[T], timeout: float, executor: str) -> T:
    """Await ``aw`` in the current task, cancelling it after ``timeout`` seconds.

    Unlike ``asyncio.wait_for`` it runs no extra task, so a ``SystemExit`` raised by the task
    reaches the worker's handler instead of the event loop (which would stop the process).
    """
    current = asyncio.current_task()
    assert current is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        current.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await aw
    except asyncio.CancelledError:
        if expired:
            uncancel = getattr(current, "uncancel", None)  # 3.11+: undo our own cancel's count
            if uncancel is not None:
                uncancel()
            raise _Expired(timeout, executor) from None
        raise
    finally:
        handle.cancel()


# The fail script's verdict -> the log event of the failure.
_VERDICT_EVENTS = {
    "retrying": "job.retrying",
    "dead": "job.failed",
    "cancelled": "job.cancelled",
    "refused": "job.refused",
    "unknown": "job.unknown",
}


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # A thread abandoned after a timeout may still raise: consume it, it was already reported.
    if not fut.cancelled():
        fut.exception()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 3)
