"""The worker: fetches jobs in batches and runs them with bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._core import SHORT_JOB_S, AsyncqError, BrokerError, MetricsServer
from ._runner import Lane, Runner
from ._signals import on_stop_signals
from .context import mark_cancel_requested
from .schedule import Scheduler

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._core import ConsumerEvent, Job
    from .app import App

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("asyncq.worker")

#: Seconds between two looks at the event loop's lag (with metrics on).
LAG_PROBE = 1.0

# Consumer events: kind -> (log level, event field, message over %(queue)s and %(detail)s).
_EVENTS: dict[str, tuple[int, str, str]] = {
    "lost": (
        logging.WARNING,
        "job.lease_lost",
        "job %(detail)s: lease lost: it expired and another worker took the job over; this "
        "run's outcome will be refused",
    ),
    "gone": (
        logging.ERROR,
        "job.gone",
        "job %(detail)s: its record is gone from Redis (data lost or flushed while it ran); "
        "its outcome will be dropped",
    ),
    "abandoned": (
        logging.ERROR,
        "job.abandoned",
        "job %(detail)s: dropped by the worker without an outcome; failed as 'abandoned' "
        "(retried if attempts remain)",
    ),
    "refused": (
        logging.WARNING,
        "job.refused",
        "job %(detail)s: outcome refused, the lease was stale",
    ),
    "broker_down": (
        logging.ERROR,
        "broker.down",
        "queue %(queue)s: broker unreachable (%(detail)s); retrying with backoff",
    ),
    "broker_up": (logging.WARNING, "broker.up", "queue %(queue)s: broker reachable again"),
    "script_error": (
        logging.ERROR,
        "broker.script_error",
        "queue %(queue)s: a broker script failed (%(detail)s); retrying with backoff",
    ),
}


#: Most cancel requests kept for jobs not started yet (see ``Worker._cancel``).
_CANCEL_EARLY_KEEP = 1000


@dataclass
class WorkerStats:
    """Counts of what this worker did since it started."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    cancelled: int = 0
    snoozed: int = 0
    started_at: float = field(default_factory=time.time)


class Worker:
    """Runs jobs of an :class:`~asyncq.App` from one or more queues.

    Args:
        app: The application whose tasks this worker runs.
        queues: ``{queue: concurrency}``; default every queue of the app's tasks, each with
            ``concurrency``.
        concurrency: Jobs run at once per queue when ``queues`` does not say.
        threads: Size of the thread pool that runs plain (sync) task functions; a queue
            whose tasks are sync leases no more jobs than there are threads free.
        processes: Child processes for ``executor="process"`` tasks; default the CPU count.
        grace: Seconds in-flight jobs get to finish on a graceful shutdown; jobs still running
            then are handed back to their queue at once.
        worker_id: Identity shown by ``asyncq info``; default ``host:pid:random``.
        handle_signals: Install SIGINT/SIGTERM handlers while running (first signal: graceful
            stop; second: stop now).
        idle_wait: Longest single blocking wait on the broker when idle, in seconds.
        prefetch: After a full batch, lease the next one in the background while this one
            runs: drains short jobs faster, but up to one extra batch per queue then waits in
            this worker instead of going to an idle one. ``None`` (the default) decides by
            itself: it prefetches while jobs run shorter than 20 ms on average (from lease to
            outcome), and not for longer jobs. ``True``/``False``: always/never. A batch
            leased ahead holds async jobs only; for sync tasks, prefetching means one job per
            thread is leased beyond the free threads and waits here for one.
        scheduler: Fire the app's periodic schedules from this worker too (see
            :meth:`asyncq.App.schedule`); any number of workers may, each fire time is
            enqueued once.
        metrics_port: Serve Prometheus metrics at ``http://<host>:<port>/metrics`` while
            running (default ``App.metrics_port``; None: off). 0 picks a free port, which
            :attr:`metrics_port` then holds.
        metrics_host: The interface it listens on (default ``App.metrics_host``).
    """

    def __init__(
        self,
        app: App,
        queues: dict[str, int] | None = None,
        *,
        concurrency: int = 50,
        threads: int | None = None,
        processes: int | None = None,
        grace: float = 30.0,
        worker_id: str | None = None,
        handle_signals: bool = True,
        idle_wait: float = 5.0,
        prefetch: bool | None = None,
        scheduler: bool = True,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.app = app
        self.queues = dict(queues) if queues else dict.fromkeys(app.queues(), concurrency)
        if any(n < 1 for n in self.queues.values()):
            raise ValueError("per-queue concurrency must be >= 1")
        self.grace = grace
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.handle_signals = handle_signals
        self._undo_signals: Callable[[], None] | None = None
        self.idle_wait = idle_wait
        self.prefetch = prefetch
        self.scheduler = scheduler
        self.stats = WorkerStats()
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        if processes is not None and processes < 1:
            raise ValueError("processes must be >= 1")
        self._lanes: list[Lane] = []
        self._runner = Runner(app, self.stats, threads, processes, self._wake_lanes)
        self._stop = asyncio.Event()
        self._now = asyncio.Event()
        self._epoch: str | None = None
        self._run_id: str | None = None
        self.ready = asyncio.Event()
        self.metrics_port = metrics_port if metrics_port is not None else app.metrics_port
        self.metrics_host = metrics_host or app.metrics_host
        self._metrics: MetricsServer | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def _declare_limits(self) -> None:
        """Write the limits of the app's tasks and queues into each queue this worker
        serves, so its scripts enforce them (a run-time override still wins)."""
        for queue in self.queues:
            families = self.app.limit_families(queue)
            if families:
                for part in self.app.partitions.names(queue):
                    await self.app.broker.set_limits(part, "declare", sorted(families.items()))

    async def run(self) -> None:
        """Run until :meth:`stop` is called or a signal arrives, then shut down cleanly.

        Raises:
            BrokerError: The broker could not be reached at start.
            ValueError: Redis is configured to evict keys (``maxmemory-policy`` other than
                ``noeviction``), which would lose queue data.
        """
        await self._check_server()
        await self._declare_limits()
        if self.metrics_port is not None:  # before the lanes: their consumers count from the start
            await self._serve_metrics(self.metrics_port)
        await self._open_lanes()
        background: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._register_loop())]
        if self._metrics is not None:
            background.append(asyncio.ensure_future(self._measure_loop_lag()))
        for lane in self._lanes:
            background.append(asyncio.ensure_future(self._consume(lane)))
            background.append(asyncio.ensure_future(self._watch(lane)))
        if self.scheduler and self.app.schedules:
            background.append(asyncio.ensure_future(Scheduler(self.app).run(self._stop)))
        for fut in background:
            fut.add_done_callback(self._on_background_done)
        self._install_signals()
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        log.info("worker %s started: queues %s, %s loop", self.worker_id, self.queues, loop)
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            try:
                await self._shutdown(background)
            finally:
                if self._metrics is not None:
                    self._metrics.close()

    async def _serve_metrics(self, port: int) -> None:
        parts = [p for q in self.queues for p in self.app.partitions.names(q)]
        try:
            self._metrics = await self.app.broker.serve_metrics(self.metrics_host, port, parts)
        except AsyncqError as exc:  # a port in use: say so before anything runs
            raise ValueError(str(exc)) from exc
        self.metrics_port = self._metrics.port
        log.info("metrics at http://%s:%d/metrics", self.metrics_host, self.metrics_port)

    async def _measure_loop_lag(self) -> None:
        """How late the event loop runs a timer, once a second: a loop held up by blocking
        code in an async task shows here before anywhere else."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            asked = loop.time()
            await asyncio.sleep(LAG_PROBE)
            self.app.broker.set_loop_lag(max(0.0, loop.time() - asked - LAG_PROBE))

    def _on_background_done(self, fut: asyncio.Future[Any]) -> None:
        """A consuming loop must never end on its own: if one crashes, stop the whole worker
        (loudly) rather than keep running deaf to a queue."""
        if fut.cancelled() or self._stop.is_set():
            return
        exc = fut.exception()
        log.error(
            "worker %s: internal loop ended unexpectedly (%r); stopping",
            self.worker_id,
            exc,
            exc_info=exc,
        )
        self.stop()

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to stop.

        Args:
            now: Skip the grace period: hand running jobs back at once.
        """
        if self._stop.is_set() or now:
            self._now.set()
        self._stop.set()
        for lane in self._lanes:
            lane.consumer.stop_fetching()

    async def _check_server(self) -> None:
        """Refuse to run on a Redis that evicts queue data; warn when it does not persist."""
        facts = await self.app.broker.server_check()
        self._epoch = facts.get("epoch")
        self._run_id = facts.get("run_id")
        if not facts:
            return
        policy = facts.get("maxmemory_policy", "noeviction")
        if policy != "noeviction":
            raise ValueError(
                f"Redis maxmemory-policy is {policy!r}: under memory pressure it would evict "
                "queue data (jobs, leases, results, dead letters). Set it to 'noeviction' "
                "(CONFIG SET maxmemory-policy noeviction); see docs/reliability.md"
            )
        if facts.get("aof_enabled", "0") != "1" and not facts.get("save"):
            log.warning(
                "Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses "
                "every queued job. Enable appendonly yes; see docs/reliability.md"
            )

    async def _watch_server(self) -> None:
        """Notice a Redis that came back without its data (its epoch marker changed)."""
        with contextlib.suppress(BrokerError):
            facts = await self.app.broker.server_check()
            epoch, run_id = facts.get("epoch"), facts.get("run_id")
            if self._epoch is not None and epoch is not None and epoch != self._epoch:
                log.error(
                    "DATA LOSS: Redis lost its data (restarted without persistence, or was "
                    "flushed); jobs queued or running before that are gone. Consuming continues."
                )
            elif self._run_id is not None and run_id is not None and run_id != self._run_id:
                log.warning("Redis restarted; its data survived (epoch unchanged)")
            self._epoch, self._run_id = epoch or self._epoch, run_id or self._run_id

    async def _open_lanes(self) -> None:
        """One lane per queue, or per partition of a partitioned queue (its lanes share the
        queue's concurrency)."""
        app, names = self.app, list(self.app.tasks)
        for queue, limit in self.queues.items():
            lanes = []
            for part in app.partitions.names(queue):
                consumer = await app.broker.consumer(
                    part,
                    self.worker_id,
                    names,
                    lease=app.lease,
                    heartbeat=app.heartbeat,
                    reap=app.reaper,
                    idle_wait=self.idle_wait,
                    result_ttl=app.result_ttl,
                    dead_ttl=app.dead_ttl,
                    max_payload=app.max_payload,
                    prefetch=self.prefetch,
                )
                lanes.append(Lane(part, limit, consumer))
            if len(lanes) > 1:
                for lane in lanes:
                    lane.siblings = lanes
            self._lanes.extend(lanes)

    def _wake_lanes(self) -> None:
        """A thread or process slot freed up: lanes waiting for capacity look again."""
        for lane in self._lanes:
            lane.slot_free.set()

    def _install_signals(self) -> None:
        if self.handle_signals:
            self._undo_signals = on_stop_signals(asyncio.get_running_loop(), self._on_signal)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("second %s: stopping now, handing running jobs back", sig.name)
            self.stop(now=True)
        else:
            log.info(
                "%s: finishing running jobs (up to %ss), send again to stop now",
                sig.name,
                self.grace,
            )
            self.stop()

    async def _shutdown(self, background: list[asyncio.Future[Any]]) -> None:
        if not self._stop.is_set():  # a second stop() would skip the grace period
            self.stop()
        running = [t for lane in self._lanes for t, _ in lane.running.values()]
        if running and not self._now.is_set():
            # Until every job is done, a second signal, or the grace period ends.
            all_done = asyncio.ensure_future(asyncio.wait(running))
            now_wait = asyncio.ensure_future(self._now.wait())
            await asyncio.wait(
                [all_done, now_wait], timeout=self.grace, return_when=asyncio.FIRST_COMPLETED
            )
            all_done.cancel()
            now_wait.cancel()
        await self._release_unfinished()
        for fut in background:
            fut.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for lane in self._lanes:
            if not await lane.consumer.close(10.0):
                log.error("queue %s: outcomes not flushed in time; leases will expire", lane.queue)
        await self._runner.close()
        if self._undo_signals is not None:
            self._undo_signals()
            self._undo_signals = None
        with contextlib.suppress(BrokerError):
            await self.app.broker.unregister_worker(self.worker_id)
        log.info("worker %s stopped: %s", self.worker_id, self.stats)

    async def _release_unfinished(self) -> None:
        """Cancel what still runs; each cancelled job is handed back to its queue."""
        tasks = [t for lane in self._lanes for t, _ in lane.running.values()]
        self._runner.releasing = True
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _register_loop(self) -> None:
        info = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                # What it fetches from: each partition of a partitioned queue.
                "partitions": [lane.queue for lane in self._lanes if lane.siblings],
                "started_at": self.stats.started_at,
            }
        )
        while True:
            # The consumers log broker outages once per state change; no need to here.
            with contextlib.suppress(BrokerError):
                await self.app.broker.register_worker(self.worker_id, info, self.app.lease * 2)
            await self._watch_server()
            await asyncio.sleep(self.app.heartbeat)

    # ---- consuming -------------------------------------------------------------------------

    async def _consume(self, lane: Lane) -> None:
        loop = asyncio.get_running_loop()
        runner = self._runner
        threads = runner.pool.slots
        backlog = False  # the last fetch took only sync jobs, all it was allowed: more wait
        backlog_until = 0.0
        while not self._stop.is_set():
            free = lane.free()
            lane.slot_free.clear()
            if free <= 0:
                await lane.slot_free.wait()
                continue
            # Sync jobs are leased only as far as threads (child processes) are free to start
            # them; the fetch passes over the rest (they keep their place in the queue) and
            # comes back empty if nothing else was ready: look again once a slot frees up.
            # While jobs run short (auto prefetch), one more job per thread may be leased: it
            # waits here about one short run. While the queue is backed up with sync jobs
            # only, the next fetch waits until half of those have started, so it brings a
            # batch rather than the one job whose thread just finished (a script call per sync
            # job would cost more Redis time than the job); the threads never run dry
            # meanwhile. The wait is capped at one short run, so async jobs queued behind
            # never wait on threads that do not finish.
            ahead = threads.size if lane.consumer.leases_ahead else 0
            budget = threads.free(ahead)
            if backlog and ahead and budget < (ahead + 1) // 2 and loop.time() < backlog_until:
                await lane.slot_free.wait()
                continue
            jobs = await self._fetch(lane, free, budget, runner.proc_slots.free())
            if self._stop.is_set():
                for job in jobs:
                    lane.consumer.release(job)
                return
            if not jobs:
                backlog = False
                if not lane.siblings:  # (a partition's lane waited for work in _fetch)
                    await lane.slot_free.wait()
                continue
            synced = 0
            for job in jobs:
                gate = runner.reserve(job)
                synced += gate is threads
                task = loop.create_task(runner.execute(lane, job, gate))
                lane.running[job.id] = (task, job)
                if lane.cancel_early and job.id in lane.cancel_early:
                    del lane.cancel_early[job.id]
                    # Its task has not taken its first step: _cancel defers it by a turn.
                    self._cancel(lane, job.id)
            backlog = synced == len(jobs) and synced >= budget > 0
            if backlog:
                backlog_until = loop.time() + SHORT_JOB_S  # a job leased ahead waits ~that
                loop.call_at(backlog_until, lane.slot_free.set)

    @staticmethod
    async def _fetch(lane: Lane, n: int, threads: int, processes: int) -> list[Job]:
        """Lease up to ``n`` jobs, at most ``threads`` sync and ``processes`` process jobs
        among them. A batch that arrived just as this task was cancelled (an immediate stop)
        goes back to the queue instead of being dropped unstarted.

        A lane of a partitioned queue shares its budget with the other partitions' lanes: it
        claims ``n`` for one fetch of what is ready now (a round trip), and waits for work
        with nothing claimed; a fetch that blocked would hold the claim while its partition
        is empty, and starve the partitions that have work."""
        if lane.siblings:
            lane.fetching = n
            try:
                jobs = await Worker._lease(lane, lane.consumer.fetch_now(n, threads, processes))
            finally:
                lane.fetching = 0
            if len(jobs) < n:
                lane.freed()  # what this fetch did not use, the other partitions may
            if not jobs:
                await lane.consumer.wait_ready()
            return jobs
        return await Worker._lease(lane, lane.consumer.fetch(n, threads, processes))

    @staticmethod
    async def _lease(lane: Lane, fetch: Awaitable[list[Job]]) -> list[Job]:
        """Await a fetch; a batch that arrived as this task was cancelled goes back."""
        batch = asyncio.ensure_future(fetch)
        try:
            return await batch
        except asyncio.CancelledError:
            if batch.done() and not batch.cancelled() and batch.exception() is None:
                for job in batch.result():
                    lane.consumer.release(job)
            raise

    async def _watch(self, lane: Lane) -> None:
        while events := await lane.consumer.events():
            for event in events:
                self._on_event(lane, event)

    def _cancel(self, lane: Lane, job_id: str) -> None:
        """Cancel the run of ``job_id`` (its cancellation was requested)."""
        entry = lane.running.get(job_id)
        if entry is None:
            # Leased but not started here yet: the request overtook the fetch's reply. The
            # job is cancelled as it starts (few and short-lived: bounded all the same).
            lane.cancel_early[job_id] = None
            while len(lane.cancel_early) > _CANCEL_EARLY_KEEP:
                del lane.cancel_early[next(iter(lane.cancel_early))]
            return
        task = entry[0]
        coro = task.get_coro()
        if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            # Started (create_task) but its first step has not run yet: the event was queued on
            # the loop ahead of that step (the fetch's reply and the request came in the same
            # turn). Cancelled now, the task would end before entering the try/finally that
            # records an outcome: the job would stay running, its lease renewed, until
            # shutdown. That step is already queued, so this call, queued after it, finds the
            # run inside that try/finally.
            asyncio.get_running_loop().call_soon(self._cancel, lane, job_id)
            return
        # A job whose outcome is queued already is past cancelling (it may be waiting for its
        # failure's verdict): cancelling it now would only cut its hooks short.
        if job_id not in lane.settled:
            self._runner.cancel_requested.add(job_id)
            mark_cancel_requested(job_id, entry[1].token)
            task.cancel()

    def _on_event(self, lane: Lane, event: ConsumerEvent) -> None:
        kind, job_id = event.kind, event.job_id
        if kind == "cancel":
            if job_id is not None:
                self._cancel(lane, job_id)
            return
        if kind == "poison":
            fields = {
                "event": "job.poison",
                "job_id": job_id,
                "queue": lane.queue,
                "reason": event.reason,
            }
            log.error("job %s dead-lettered before running: %s", job_id, event.reason, extra=fields)
            return
        detail = job_id or event.message or ""
        spec = _EVENTS.get(kind)
        if spec is None:
            log.debug("queue %s: unknown consumer event %s %s", lane.queue, kind, detail)
            return
        level, name, text = spec
        extra: dict[str, str] = {"event": name, "queue": lane.queue}
        if name.startswith("job."):
            extra["job_id"] = detail
        log.log(level, text, {"queue": lane.queue, "detail": detail}, extra=extra)
