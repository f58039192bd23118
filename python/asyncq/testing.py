"""Testing helpers for apps built on asyncq, and the pytest plugin that offers them as fixtures
(registered by entry point; docs/testing.md).

An app under test runs on the in-process ``memory://`` broker, whose clock a test stops and
moves: :class:`VirtualClock`. :func:`drain` runs every job that can run at the clock's now
(retries and delays that fell due, schedules' fire times, flow steps released by their parents,
jobs a limit let through) with a real worker in this process, and returns when nothing more can
run; the test then moves the clock (``clock.advance(60)``) and drains again. The same scripts
run as on Redis, so what a test sees is what production does.

Fixtures (pytest):

- ``asyncq_clock``: a :class:`VirtualClock` for a fresh ``memory://`` name.
- ``asyncq_app``: an :class:`asyncq.App` on that broker, to register tasks on in a test.
- ``asyncq_app_factory``: ``factory(app)`` points the user's own app at that broker (its tasks,
  options and middleware kept) for the test, and back afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .app import App
from .schedule import Scheduler
from .task import Task

__all__ = ["Enqueued", "VirtualClock", "drain", "drain_sync", "enqueued"]

#: Most rounds of a drain: each round runs what was runnable; a flow or a task that enqueues
#: more adds rounds. A drain that needs more is taken for a job that enqueues forever.
MAX_ROUNDS = 10_000


class VirtualClock:
    """The clock of a ``memory://`` broker, stopped: it moves only when the test moves it.

    Every App on the same ``memory://`` name shares it. Job times (enqueue, due, start, end),
    retries' delays, rate limits, schedules and result expiry all follow it; timeouts of a
    running task and the worker's own timers are real time.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self._frozen = False

    async def freeze(self) -> None:
        """Stop the clock at now (done by :meth:`now`, :meth:`advance` and :func:`drain`)."""
        if not self._frozen:
            await self.app.broker.freeze_clock()
            self._frozen = True

    async def now(self) -> float:
        """The broker's time, unix seconds."""
        await self.freeze()
        return await self.app.broker.now()

    async def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (nothing runs until the next drain)."""
        await self.freeze()
        await self.app.broker.advance_clock(seconds)

    def freeze_sync(self) -> None:
        """:meth:`freeze` from synchronous code."""
        _run(self.freeze())

    def advance_sync(self, seconds: float) -> None:
        """:meth:`advance` from synchronous code."""
        _run(self.advance(seconds))


@dataclass(frozen=True)
class Enqueued:
    """A job waiting in a queue, as :func:`enqueued` lists it."""

    id: str
    queue: str
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: str
    due_at: float | None


async def enqueued(app: App, task: Task[..., Any] | str | None = None) -> list[Enqueued]:
    """The jobs waiting in ``app``'s queues (queued or scheduled), oldest first: every one, or
    those of ``task`` (a task or its name). For assertions on what code under test enqueued::

        assert [(j.args, j.kwargs) for j in await enqueued(app, send_mail)] == [(("a@b",), {})]
    """
    name = task if isinstance(task, str) or task is None else task.name
    out: list[Enqueued] = []
    for queue in _queues(app):
        for state in ("queued", "scheduled"):
            ids: list[str] = []
            for offset in itertools.count(0, 500):
                page = await app.broker.job_ids(queue, state, offset, 500)
                ids += page
                if len(page) < 500:
                    break
            for info in await app.broker.jobs(queue, ids) if ids else []:
                if info is None or (name is not None and info.task != name):
                    continue
                out.append(
                    Enqueued(
                        id=info.id,
                        queue=info.queue,
                        task=info.task or "",
                        args=tuple(info.args or ()),
                        kwargs=dict(info.kwargs or {}),
                        state=info.state,
                        due_at=info.due_at,
                    )
                )
    out.sort(key=lambda j: (j.due_at or 0.0, j.id))
    return out


async def drain(app: App, *, timeout: float = 30.0, concurrency: int = 10) -> int:
    """Run every job of ``app``'s queues that can run at the virtual clock's now, until none
    is left; returns how many runs ended. Schedules fire what fell due first.

    A job that waits (a retry's delay, a rate limit, a job due later) stays for the next
    drain, after ``clock.advance(...)``. Deterministic: it ends only once no job is leased
    or running and every queue, brought to the clock's now, has nothing ready.

    Args:
        app: An app on a ``memory://`` broker (its clock is stopped if it was not).
        timeout: Seconds (real time) the whole drain may take.
        concurrency: Jobs run at once per queue.

    Raises:
        TimeoutError: Jobs still ran after ``timeout`` (a task that never returns), or more
            than :data:`MAX_ROUNDS` rounds were needed (a task that enqueues forever).
    """
    if not app.url.startswith("memory://"):
        raise ValueError(f"drain() runs on a memory:// app, not {app.url!r}")
    await app.broker.freeze_clock()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    scheduler = await _scheduler(app)
    worker = app.worker(
        dict.fromkeys(_logical(app), concurrency),
        handle_signals=False,
        scheduler=False,
        grace=timeout,
        idle_wait=0.05,
    )
    started = _ran(app)
    run = asyncio.ensure_future(worker.run())
    ready = asyncio.ensure_future(worker.ready.wait())
    await asyncio.wait([run, ready], return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        ready.cancel()
        run.result()  # raises what stopped the worker
    try:
        for _ in range(MAX_ROUNDS):
            if scheduler is not None:
                await scheduler._tick()
            await _until_idle(app, worker, deadline)
            if await _quiet(app):
                # Nothing leased, nothing running, nothing ready: done, unless a run that
                # ended meanwhile made more (it could not: nothing was running).
                return _ran(app) - started
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.002)  # the worker's turn to lease what is ready
        raise TimeoutError(f"drain: jobs were still running or arriving after {timeout:g}s")
    finally:
        worker.stop()
        await run


def drain_sync(app: App, **kwargs: Any) -> int:
    """:func:`drain` from synchronous code (no event loop running in this thread)."""
    ran: int = _run(drain(app, **kwargs))
    return ran


# ---- drain's parts --------------------------------------------------------------------------


def _logical(app: App) -> list[str]:
    """Every queue the app's tasks and schedules use."""
    return sorted(set(app.queues()) | {s.queue for s in app.schedules.values()})


def _queues(app: App) -> list[str]:
    """Every queue the app's tasks and schedules use, each partition of a partitioned one."""
    return sorted({p for q in _logical(app) for p in app.partitions.names(q)})


_SCHEDULERS: dict[int, tuple[App, Scheduler]] = {}


async def _scheduler(app: App) -> Scheduler | None:
    """The app's scheduler, synced once (its fire times follow the virtual clock)."""
    if not app.schedules:
        return None
    held = _SCHEDULERS.get(id(app))
    if held is None or held[0] is not app:
        scheduler = Scheduler(app)
        await scheduler._sync()
        held = _SCHEDULERS[id(app)] = (app, scheduler)
    return held[1]


def _ran(app: App) -> int:
    """Runs this process's consumers of the app ended (succeeded, failed, snoozed)."""
    queues = app.broker.counters().get("queues", {})
    keys = ("acked", "failed", "snoozed")
    return sum(int(stats.get(k, 0)) for stats in queues.values() for k in keys)


def _in_flight(app: App) -> int:
    queues = app.broker.counters().get("queues", {})
    out = 0
    for stats in queues.values():
        started = int(stats.get("fetched", 0)) + int(stats.get("poison", 0))
        ended = sum(int(stats.get(k, 0)) for k in ("acked", "failed", "released", "snoozed"))
        out += started - ended - int(stats.get("refused", 0))
    return out


async def _until_idle(app: App, worker: Any, deadline: float) -> None:
    """Wait until no job is leased (by the broker's count: a fetch whose reply is still on
    its way has leased jobs this process does not know of yet) and nothing this process
    leased is running or unsettled."""
    loop = asyncio.get_running_loop()
    queues = _queues(app)
    while True:
        local = _in_flight(app) > 0 or any(lane.running for lane in worker._lanes)
        if not local:
            counts = [await app.broker.counts(q) for q in queues]
            if not any(c.get("running", 0) for c in counts) and _in_flight(app) == 0:
                return
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.002)


def _activity(app: App) -> tuple[int, int]:
    """Leases this process took and runs it ended, in every queue: unchanged across a look,
    nothing started or ended meanwhile."""
    queues = app.broker.counters().get("queues", {})
    leased = sum(int(s.get("fetched", 0)) + int(s.get("poison", 0)) for s in queues.values())
    return leased, _ran(app)


async def _quiet(app: App) -> bool:
    """Whether nothing can run now. Each queue is first brought to the clock's now without
    leasing anything (due scheduled jobs promoted, limiters whose time came woken: a fetch of
    0 jobs), then read in one snapshot: nothing ready and nothing leased. A group in the
    ready set whose limiter is full still counts as ready: the worker's next fetch parks it,
    and a later look sees the set without it. Nothing is leased here on purpose: a lease would
    use up a rate limit's start even if handed back. The looks at several queues are not one
    snapshot, so the process's own activity must not have changed across them either."""
    before = _activity(app)
    for q in _queues(app):
        await app.broker.promote(q)
        counts = await app.broker.counts(q)  # one snapshot of the queue
        if counts.get("ready", 0) or counts.get("running", 0):
            return False
    return _in_flight(app) == 0 and _activity(app) == before


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("called from a running event loop: await the async form instead")


# ---- pytest plugin ------------------------------------------------------------------------------


@contextlib.contextmanager
def _pointed(app: App, url: str) -> Iterator[App]:
    old_broker, old_url = app.broker, app.url
    app.broker, app.url = app.broker.with_url(url), url
    try:
        yield app
    finally:
        app.broker, app.url = old_broker, old_url


try:  # the fixtures exist only where pytest does; asyncq itself does not need it
    import pytest as _pytest
except ImportError:  # pragma: no cover
    pass
else:

    @_pytest.fixture
    def asyncq_url() -> str:
        """A ``memory://`` name of this test's own (no job leaks between tests)."""
        return f"memory://test-{uuid.uuid4().hex}"

    @_pytest.fixture
    def asyncq_app(asyncq_url: str) -> App:
        """An App on this test's ``memory://`` broker; register tasks on it in the test."""
        return App(asyncq_url)

    @_pytest.fixture
    def asyncq_clock(asyncq_app: App) -> VirtualClock:
        """The virtual clock of this test's ``memory://`` broker, stopped from the start (so
        what the test enqueues is stamped with the clock's time, not the wall's)."""
        clock = VirtualClock(asyncq_app)
        clock.freeze_sync()
        return clock

    @_pytest.fixture
    def asyncq_app_factory(asyncq_url: str) -> Iterator[Callable[[App], App]]:
        """``factory(app)``: the user's own App, pointed at this test's ``memory://`` broker
        (tasks, options and middleware kept) until the test ends."""
        with contextlib.ExitStack() as stack:

            def factory(app: App) -> App:
                return stack.enter_context(_pointed(app, asyncq_url))

            yield factory
