"""The application object: broker connection, task registry and defaults."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from ._core import Broker, new_job_ids
from ._hookloop import HookLoop
from .backoff import Exponential
from .events import QueueEvents
from .job import JobHandle
from .limits import ConcurrencyLimit, Grouping, RateLimit
from .limits import settings as limit_settings
from .middleware import Middleware, call_hook
from .partitions import Partitions
from .schedule import Catchup, Overlap, Schedule
from .serialization import JSON, Codec, Serializer, UnknownSerializer, resolve
from .task import EnqueueOptions, Redactor, Task, TaskConfig, resolve_executor
from .worker import Worker

if TYPE_CHECKING:
    from .testing import Enqueued
    from .tracing import Tracing

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger("asyncq")

DEFAULT_QUEUE = "default"

_HOOKS_LOCK = threading.Lock()


class App:
    """An asyncq application: where tasks are registered and which broker they use.

    Args:
        url: Broker URL: ``redis://host:port/db``, ``rediss://...`` (TLS),
            ``redis+sentinel://host:port,host:port/service/db`` (the primary the sentinels name,
            followed through failovers; ``rediss+sentinel://`` for TLS; docs/scaling.md),
            ``redis+cluster://seed,seed/`` (docs/scaling.md) or ``memory://`` (in-process, same
            semantics; for tests and demos).
        default_queue: Queue for tasks that name none.
        lease: Seconds a fetched job stays leased without a heartbeat. A worker that dies loses
            its jobs to other workers after this long.
        heartbeat: Seconds between lease renewals; default ``lease / 3``.
        reaper: Seconds between sweeps for expired leases and due jobs.
        result_ttl: Seconds results (and finished job records) are kept.
        dead_ttl: Seconds dead-lettered jobs are kept.
        key_ttl: Seconds an idempotency key stays reserved.
        max_payload: Largest encoded job in bytes; larger ones are refused at enqueue and
            dead-lettered if met at fetch. It holds for the envelope before compression (what a
            worker decodes), so a compressed job cannot expand past it.
        compress_over: Compress each job envelope longer than this many bytes with zstd
            (flagged in the envelope; workers of any app open it). None (the default) never
            compresses. 16 KiB or more is a good start: below that the saving is small and
            costs CPU on both sides (docs/serialization.md has measurements).
        middleware: Hooks run around enqueue and execution, in order.
        signing_keys: Secrets for message signing. When given, every enqueued envelope carries
            an HMAC-SHA256 made with the first key, and workers of this app run only envelopes
            signed with one of the keys: unsigned or tampered messages are dead-lettered
            (reasons ``unsigned`` / ``bad_signature``), never executed. To rotate, put the new
            key second everywhere, then first, then drop the old one.
        enqueue_timeout: Seconds one enqueue call (``enqueue``, ``enqueue_many``,
            ``enqueue_sync``) may take, retries of transient broker failures included; then it
            raises :class:`~asyncq.BrokerError`, whose ``outcome_unknown`` says whether the
            jobs may have been written and ``job_ids`` names them (resending with the same ids
            is safe; see docs/producers.md). ``None`` waits as long as it takes.
        wait_replicas: Replicas that must confirm each enqueue (Redis ``WAIT``) before it
            returns, so a failover that promotes one of them cannot lose it. ``0`` (the
            default) returns once the primary has it. When fewer confirm within
            ``wait_timeout`` seconds, the enqueue raises :class:`~asyncq.BrokerError` with
            ``outcome_unknown`` set: the jobs exist on the primary, their copies are in doubt.
        wait_timeout: Seconds an enqueue waits for ``wait_replicas`` confirmations.
        partitions: ``{queue: n}``: store each of these queues in ``n`` partitions (hash slots
            ``{queue#0}`` to ``{queue#n-1}``), so on a Redis Cluster one queue spreads over
            several primaries. Jobs go round-robin, or by ``options(partition_key=...)``, key
            or group; workers serve every partition. Every producer and worker of the queue
            must use the same count (see docs/scaling.md).
        metrics_port: Serve Prometheus metrics on this port from every worker of this app
            (``asyncq-worker --metrics-port`` overrides it; 0 picks a free port); None: off,
            and nothing is counted (see docs/operations.md).
        metrics_host: Where the metrics server listens: every interface by default, as
            Prometheus scrapes from elsewhere; ``127.0.0.1`` keeps it local.
        serializer: How task arguments and results travel: ``None``/``"msgpack"`` (the native
            codec, fastest), ``"json"``, ``"pickle"`` (only with ``signing_keys``) or any
            :class:`asyncq.serialization.Serializer`; a task's own ``serializer=`` wins. A
            worker refuses a job whose serializer its app does not know
            (docs/serialization.md).
        eager: Run each enqueued job inline, in the enqueuing call, instead of writing it
            (for unit tests; docs/testing.md#eager-mode). Arguments and results are encoded
            and decoded as for a real job; an exception from the task is raised by
            ``enqueue``; retries, delays, limits and flows do not apply (flows refuse).
        tracing: Trace enqueues and job runs with OpenTelemetry (the ``asyncq[otel]`` extra):
            a PRODUCER span per enqueue, a CONSUMER span per attempt, joined by W3C trace
            context in the job's headers; spans go to the global tracer provider. Off by
            default, and then OpenTelemetry is never imported (docs/tracing.md).

    Raises:
        ValueError: The URL is not a supported broker URL, or ``enqueue_timeout`` is not
            positive.
        ImportError: ``tracing=True`` without OpenTelemetry installed.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        default_queue: str = DEFAULT_QUEUE,
        lease: float = 30.0,
        heartbeat: float | None = None,
        reaper: float = 5.0,
        result_ttl: float = 86400.0,
        dead_ttl: float = 7 * 86400.0,
        key_ttl: float = 86400.0,
        max_payload: int = 1 << 20,
        compress_over: int | None = None,
        middleware: Sequence[Middleware] = (),
        signing_keys: Sequence[str | bytes] = (),
        enqueue_timeout: float | None = 5.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        partitions: Mapping[str, int] | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        tracing: bool = False,
        serializer: str | Serializer | None = None,
        eager: bool = False,
    ) -> None:
        if lease <= 0 or reaper <= 0:
            raise ValueError("lease and reaper must be > 0")
        self.url = url
        keys = [k.encode() if isinstance(k, str) else bytes(k) for k in signing_keys]
        if wait_replicas < 0:
            raise ValueError(f"wait_replicas must be 0 or more, got {wait_replicas}")
        self.broker = Broker(
            url,
            signing_keys=keys,
            enqueue_timeout=enqueue_timeout,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )
        self.enqueue_timeout = enqueue_timeout
        self.partitions = Partitions(partitions)
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise ValueError(f"metrics_port must be a TCP port (0 to 65535), got {metrics_port}")
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.default_queue = default_queue
        self.lease = lease
        self.heartbeat = heartbeat if heartbeat is not None else lease / 3
        self.reaper = reaper
        self.result_ttl = result_ttl
        self.dead_ttl = dead_ttl
        self.key_ttl = key_ttl
        self.max_payload = max_payload
        if compress_over is not None and compress_over < 0:
            raise ValueError(f"compress_over must be 0 or more bytes, got {compress_over}")
        self.compress_over = compress_over
        self._signed = bool(keys)
        self.eager = eager
        # What this app's workers decode: json, and the serializers it or its tasks name.
        self._serializers: dict[str, Serializer] = {JSON.name: JSON}
        self.serializer = self._accept(serializer)
        self.middleware = list(middleware)
        self._queue_limits: dict[str, str] = {}
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        if tracing:
            from .tracing import instrument  # noqa: PLC0415 - imports OpenTelemetry

            instrument(self)

    # Set by asyncq.tracing.instrument; None (the default) keeps every path free of tracing.
    _tracing: Tracing | None = None

    # Set by _run_blocking on first use; a class default keeps apps without middleware free of it.
    _hooks: HookLoop | None = None

    def __repr__(self) -> str:
        return f"App({self.url!r}, tasks={len(self.tasks)})"

    def _accept(self, spec: str | Serializer | None) -> Serializer | None:
        """``spec`` resolved, and accepted by this app's workers from now on."""
        found = resolve(spec, signed=self._signed)
        if found is not None:
            self._serializers[found.name] = found
        return found

    def serializer_for(self, name: str) -> Serializer:
        """The serializer called ``name`` that this app's workers decode with.

        Raises:
            UnknownSerializer: The app names no such serializer (pickle counts only when
                enabled, with signing).
        """
        try:
            return self._serializers[name]
        except KeyError:
            raise UnknownSerializer(
                f"this worker's app does not accept serializer {name!r}"
                f" (it accepts {', '.join(sorted(self._serializers))} and msgpack)"
            ) from None

    # Coroutine, not Awaitable: with Awaitable, an async function whose return type contains
    # Any (`-> dict[str, Any]`) matched both overloads ambiguously and mypy inferred Task[Any, Any].
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        backoff: Exponential | None = None,
        timeout: float | None = None,
        priority: int = 0,
        result_ttl: float | None = None,
        executor: Literal["thread", "process"] | None = None,
        rate_limit: str | None = None,
        burst: int = 0,
        concurrency_limit: int | None = None,
        limits: Sequence[RateLimit | ConcurrencyLimit] = (),
        fair_key: str | Callable[..., object] | None = None,
        fair_weights: Mapping[str, int] | Callable[[str], int] | None = None,
        ordered_key: str | Callable[..., object] | None = None,
        id_prefix: str | None = None,
        sensitive: bool = False,
        redact: Redactor | None = None,
        serializer: str | Serializer | None = None,
    ) -> _TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        backoff: Exponential | None = None,
        timeout: float | None = None,
        priority: int = 0,
        result_ttl: float | None = None,
        executor: Literal["thread", "process"] | None = None,
        rate_limit: str | None = None,
        burst: int = 0,
        concurrency_limit: int | None = None,
        limits: Sequence[RateLimit | ConcurrencyLimit] = (),
        fair_key: str | Callable[..., object] | None = None,
        fair_weights: Mapping[str, int] | Callable[[str], int] | None = None,
        ordered_key: str | Callable[..., object] | None = None,
        id_prefix: str | None = None,
        sensitive: bool = False,
        redact: Redactor | None = None,
        serializer: str | Serializer | None = None,
    ) -> Task[Any, Any] | _TaskDecorator:
        """Register a function as a task; use bare (``@app.task``) or with options.

        Args:
            fn: The function (when used bare).
            name: Registered name; default ``module:qualname``.
            queue: Queue for its jobs; default the app's default queue.
            retries: Retries after a failure (0 = run once).
            backoff: Delay between retries; default ``Exponential()``.
            timeout: Seconds one run may take.
            priority: Default priority, 0 (lowest) to 9 (highest).
            result_ttl: Seconds its results are kept.
            executor: For a plain (non-async) function: ``"thread"`` (default) runs it in the
                worker's thread pool; ``"process"`` in a child process of a bounded pool, which
                can be terminated at its timeout (the function must be defined at module level).
                Coroutine functions always run on the worker's event loop: leave it None.
            rate_limit: At most this many starts per period across all workers, such as
                ``"20/s"``, ``"100/m"`` or ``"1000/h"`` (see docs/flow-control.md).
            burst: Starts allowed beyond ``rate_limit`` after a quiet spell (default 0: no
                window of one period sees more than the rate).
            concurrency_limit: At most this many of its jobs running at once, across all
                workers.
            limits: Limits per key: :class:`asyncq.RateLimit` and
                :class:`asyncq.ConcurrencyLimit` with ``key=`` (a parameter's name or a
                callable over the arguments).
            fair_key: Serve jobs round-robin across the values of this key (a parameter's
                name or a callable), so one key's backlog does not delay another's jobs.
            fair_weights: Jobs per turn for some values of ``fair_key`` (a mapping, or a
                callable over the value; default 1).
            ordered_key: Jobs with the same value of this key run one at a time, in order.
            id_prefix: Its fresh job ids read ``<id_prefix>_<id>`` (``invoice_06f3h2k9qd...``):
                1 to 24 ASCII letters, digits or '-'. Ids are short and sort by creation time
                either way.
            sensitive: Never show its jobs' arguments in the dashboard.
            redact: ``(args, kwargs) -> (args, kwargs)``: what the dashboard shows of a job's
                arguments instead of them (mask a password, drop a field).
            serializer: How its arguments and result travel, if not the app's serializer:
                ``"msgpack"`` (native), ``"json"``, ``"pickle"`` (needs signing_keys) or a
                :class:`asyncq.serialization.Serializer` (docs/serialization.md).

        Returns:
            The :class:`Task`, or a decorator producing it.

        Raises:
            ValueError: Bad option values, an executor that does not fit the function, or the
                name is already registered.
        """
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0")
        if not 0 <= priority <= 9:
            raise ValueError("priority must be between 0 and 9")

        grouped = (rate_limit, concurrency_limit, fair_key, fair_weights, ordered_key)
        if burst and rate_limit is None:
            raise ValueError("burst goes with rate_limit")
        if id_prefix is not None:
            new_job_ids(1, id_prefix)  # raises ValueError naming what is wrong with it
        if redact is not None and not callable(redact):
            raise ValueError("redact must be a callable (args, kwargs) -> (args, kwargs)")

        chosen = self.serializer if serializer is None else self._accept(serializer)

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{f.__module__}:{f.__qualname__}"
            grouping = None
            if limits or any(v is not None for v in grouped):
                grouping = Grouping(
                    task_name,
                    f,
                    rate_limit=rate_limit,
                    burst=burst,
                    concurrency_limit=concurrency_limit,
                    limits=limits,
                    fair_key=fair_key,
                    fair_weights=fair_weights,
                    ordered_key=ordered_key,
                )
            config = TaskConfig(
                grouping=grouping,
                name=task_name,
                queue=queue or self.default_queue,
                retries=retries,
                backoff=backoff or Exponential(),
                timeout=timeout,
                priority=priority,
                result_ttl=result_ttl,
                executor=resolve_executor(f, executor),
                id_prefix=id_prefix,
                sensitive=sensitive,
                redact=redact,
            )
            return self._register(Task(self, f, config, Codec.build(f, chosen)))

        if fn is not None:
            return register(fn)
        return _TaskDecorator(register)

    def queue_options(
        self,
        queue: str,
        *,
        rate_limit: str | None = None,
        burst: int = 0,
        concurrency_limit: int | None = None,
    ) -> None:
        """Limits on a whole queue, over every task's jobs in it (see docs/flow-control.md).

        Its jobs are grouped per task (tasks take turns), and each starts only while the
        queue's limiter has room, as well as its task's own limiters.

        Args:
            queue: The queue.
            rate_limit: At most this many starts per period in the queue (``"100/s"``).
            burst: Starts allowed beyond the rate after a quiet spell.
            concurrency_limit: At most this many of the queue's jobs running at once.

        Raises:
            ValueError: Bad limit values, or neither limit given.
        """
        if rate_limit is None and concurrency_limit is None:
            raise ValueError("queue_options takes rate_limit= or concurrency_limit=")
        if concurrency_limit is not None:
            ConcurrencyLimit(concurrency_limit)
        if rate_limit is not None:
            RateLimit(rate_limit, burst=burst)
        elif burst:
            raise ValueError("burst goes with rate_limit")
        self._queue_limits[queue] = limit_settings(rate_limit, burst, concurrency_limit)

    def _queue_family(self, queue: str) -> str | None:
        """The limiter family of ``queue`` when it has limits."""
        return f"@{queue}" if queue in self._queue_limits else None

    def limit_families(self, queue: str) -> dict[str, str]:
        """Every limiter family a worker of ``queue`` declares: the queue's own, and those
        of every registered task (a job may be sent to any queue)."""
        families = {}
        if queue in self._queue_limits:
            families[f"@{queue}"] = self._queue_limits[queue]
        for task in self.tasks.values():
            if task.config.grouping is not None:
                families.update(task.config.grouping.families)
        return families

    def _register(self, task: Task[Any, Any]) -> Task[Any, Any]:
        existing = self.tasks.get(task.name)
        if existing is not None and existing.fn is not task.fn:
            raise ValueError(f"a task named {task.name!r} is already registered")
        self.tasks[task.name] = task
        return task

    def schedule(
        self,
        name: str,
        task: Task[Any, Any] | str,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        tz: str = "UTC",
        overlap: Overlap = "allow",
        catchup: Catchup = "skip",
        jitter: float = 0.0,
    ) -> Schedule:
        """Run ``task`` periodically (see docs/scheduling.md).

        Every worker of the app fires its schedules (unless started with ``--no-scheduler``;
        ``asyncq scheduler APP`` runs the scheduler alone), and any number may: each fire time
        is enqueued once, as job ``sched:<name>:<fire ms>``, by whichever asks first.

        Args:
            name: Unique name (letters, digits, ``-``, ``_``, ``.``, ``:``); its fire state in
                Redis is kept under it, so renaming a schedule starts a new one.
            task: The task (or its registered name).
            cron: A 5-field cron expression, or 6 fields with seconds first, or a macro such
                as ``@daily``; read in ``tz``.
            every: An interval (seconds or a timedelta, at least 1 s); fire times are its
                multiples since the Unix epoch, so ``every=60`` fires at each full minute.
            args: Positional arguments of each job.
            kwargs: Keyword arguments of each job.
            tz: IANA time zone of the cron expression.
            overlap: ``"skip"``: do not fire while the previous job of this schedule is still
                queued, scheduled, running or waiting to retry; ``"allow"``: fire regardless.
            catchup: What to do with fire times missed while no scheduler ran: ``"skip"``
                them (a fire time counts as missed once the next one is due, or 60 s after
                it), run ``"once"`` for all of them, or run ``"all"`` (the most recent 100).
            jitter: Delay each job by a further 0 to ``jitter`` seconds.

        Returns:
            The schedule.

        Raises:
            ValueError: A bad name, expression, zone or policy, both or neither of ``cron``
                and ``every``, an unregistered task name, or a name already used.
            TypeError: The arguments do not fit the task's signature.
        """
        if isinstance(task, str):
            found = self.tasks.get(task)
            if found is None:
                raise ValueError(f"schedule {name!r}: no task named {task!r} is registered")
            task = found
        if name in self.schedules:
            raise ValueError(f"a schedule named {name!r} is already declared")
        sched = Schedule.make(
            name,
            task,
            cron=cron,
            every=every,
            args=tuple(args),
            kwargs=kwargs,
            tz=tz,
            overlap=overlap,
            catchup=catchup,
            jitter=jitter,
        )
        self.schedules[name] = sched
        return sched

    def job(self, job_id: str, queue: str | None = None) -> JobHandle[Any]:
        """Return a handle to a job enqueued earlier.

        Args:
            job_id: The job's id.
            queue: Its queue; default the app's default queue.

        Returns:
            A handle (the job need not exist; ``status()`` tells).
        """
        queue = self.partitions.of_id(queue or self.default_queue, job_id)
        return JobHandle(self.broker, queue, job_id)

    async def find_job(self, job_id: str) -> JobHandle[Any] | None:
        """Look a job up in every known queue.

        Args:
            job_id: The job's id.

        Returns:
            A handle, or None when no queue holds it.
        """
        queues = set(await self.broker.queues()) | {t.config.queue for t in self.tasks.values()}
        for queue in sorted(queues):
            if await self.broker.job(queue, job_id) is not None:
                return JobHandle(self.broker, queue, job_id)
        return None

    def events(self, queue: str | None = None) -> QueueEvents:
        """Follow every job of a queue: yield state changes and progress reports as they happen.

        Live only: nothing from before it started, and it runs until you stop. While it runs,
        the queue's scripts publish each change (a ``PUBLISH`` per script call); a ``gap``
        event says messages may have been missed (the connection dropped).

        Example::

            async with app.events("emails") as events:  # subscribed from here on
                async for event in events:
                    print(event.job_id, event.state or event.progress)

        Args:
            queue: The queue; default the app's default queue.

        Returns:
            An async iterator of :class:`~asyncq.Event` and async context manager.
        """
        return QueueEvents(self.broker, queue or self.default_queue)

    async def drain(self, *, timeout: float = 30.0) -> int:
        """Run every job that can run now, on a ``memory://`` app's virtual clock (testing;
        see :func:`asyncq.testing.drain`). Returns how many runs ended."""
        from .testing import drain  # noqa: PLC0415 - only tests need it

        return await drain(self, timeout=timeout)

    def drain_sync(self, *, timeout: float = 30.0) -> int:
        """:meth:`drain` from synchronous code."""
        from .testing import drain_sync  # noqa: PLC0415 - only tests need it

        return drain_sync(self, timeout=timeout)

    async def enqueued(self, task: Task[..., Any] | str | None = None) -> list[Enqueued]:
        """The jobs waiting in this app's queues, of ``task`` when given (testing; see
        :func:`asyncq.testing.enqueued`)."""
        from .testing import enqueued  # noqa: PLC0415 - only tests need it

        return await enqueued(self, task)

    def queues(self) -> list[str]:
        """Queues the registered tasks use."""
        return sorted({t.config.queue for t in self.tasks.values()} | {self.default_queue})

    def worker(self, queues: dict[str, int] | None = None, **kwargs: Any) -> Worker:
        """Create a worker for this app (see :class:`asyncq.Worker`).

        Args:
            queues: ``{queue: concurrency}``; default every queue the tasks use.
            **kwargs: Passed to :class:`asyncq.Worker`.

        Returns:
            The worker (call ``await worker.run()``).
        """
        return Worker(self, queues, **kwargs)

    def _run_blocking(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine to completion from synchronous code in any thread, on this app's
        helper event loop (started on first use). Used by ``enqueue_sync`` with middleware."""
        hooks = self._hooks
        if hooks is None:
            with _HOOKS_LOCK:
                hooks = self._hooks = self._hooks or HookLoop(self)
        return hooks.run(make)

    async def run_before_enqueue(
        self,
        task: Task[Any, Any],
        items: list[tuple[tuple[Any, ...], dict[str, Any] | None]],
        opts: EnqueueOptions,
    ) -> None:
        """Run every middleware's ``before_enqueue`` for a batch."""
        for args, kwargs in items:
            for mw in self.middleware:
                await call_hook(mw.before_enqueue, task, args, kwargs or {}, opts)

    async def run_after_enqueue(
        self, task: Task[Any, Any], handles: Sequence[JobHandle[Any]]
    ) -> None:
        """Run every middleware's ``after_enqueue`` for a batch."""
        for handle in handles:
            for mw in self.middleware:
                await call_hook(mw.after_enqueue, task, handle)


class _TaskDecorator:
    """What ``@app.task(...)`` returns: turns a function into a typed Task."""

    def __init__(self, register: Callable[[Callable[..., Any]], Task[Any, Any]]) -> None:
        self._register = register

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Task[Any, Any]:
        return self._register(fn)
