"""The task API does what it says: enqueue_sync runs the hooks enqueue runs, from any thread;
arguments are bound at enqueue; current_job() explains itself; executor= is validated."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import asyncq
from asyncq.context import JobContext, _current
from tests.conftest import make_app, running

pytestmark = pytest.mark.timeout(60)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def add(x: int, y: int) -> int:
    return x + y


async def add_async(x: int, y: int, *, scale: int = 1) -> int:
    return (x + y) * scale


def cpu_bound(n: int) -> int:
    return n * n


class Recorder(asyncq.Middleware):
    """Records every enqueue hook call; async hooks (the base class's form)."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name, self.log = name, log

    async def before_enqueue(
        self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: Any
    ) -> None:
        await asyncio.sleep(0)  # a real suspension: the hook needs a running loop
        self.log.append(("before", self.name, task.name, args, kwargs, request_id.get()))

    async def after_enqueue(self, task: Any, handle: asyncq.JobHandle[Any]) -> None:
        self.log.append(("after", self.name, task.name, handle.id))


class SyncRecorder(asyncq.Middleware):
    """The same, with plain (sync) hooks: call_hook accepts both."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name, self.log = name, log

    def before_enqueue(  # type: ignore[override]
        self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: Any
    ) -> None:
        self.log.append(("before", self.name, task.name, args, kwargs, request_id.get()))

    def after_enqueue(self, task: Any, handle: asyncq.JobHandle[Any]) -> None:  # type: ignore[override]
        self.log.append(("after", self.name, task.name, handle.id))


def hooked_app(url: str, queue: str, log: list[Any]) -> asyncq.App:
    return make_app(url, queue, middleware=[Recorder("a", log), SyncRecorder("b", log)])


def without_ids(log: list[Any]) -> list[Any]:
    return [entry[:3] + entry[4:] if entry[0] == "after" else entry for entry in log]


def expected_hooks(name: str, args: tuple[Any, ...], handle_id: str) -> list[Any]:
    return [
        ("before", "a", name, args, {}, "req-1"),
        ("before", "b", name, args, {}, "req-1"),
        ("after", "a", name, handle_id),
        ("after", "b", name, handle_id),
    ]


# ---- point 5: enqueue_sync runs the same hooks as enqueue, from any thread -------------------


async def test_enqueue_sync_runs_the_hooks_enqueue_runs(broker_url: str, queue: str) -> None:
    log: list[Any] = []
    app = hooked_app(broker_url, queue, log)
    task = app.task(add)
    request_id.set("req-1")  # the caller's context reaches the hooks on both paths

    handle = await task.enqueue(1, 2)
    assert log == expected_hooks(task.name, (1, 2), handle.id)
    async_log = without_ids(log)
    log.clear()

    # A plain thread without an event loop (to_thread copies the context, like a web framework).
    handle = await asyncio.to_thread(task.enqueue_sync, 1, 2)
    assert log == expected_hooks(task.name, (1, 2), handle.id)
    assert without_ids(log) == async_log
    log.clear()

    await asyncio.to_thread(task.options(priority=5).enqueue_sync, 1, 2)
    assert without_ids(log) == async_log
    assert (await app.broker.counts(queue))["queued"] == 3


async def test_enqueue_sync_from_a_thread_running_its_own_loop(broker_url: str, queue: str) -> None:
    log: list[Any] = []
    app = hooked_app(broker_url, queue, log)
    task = app.task(add)

    async def sync_code_inside_a_coroutine() -> str:
        request_id.set("req-1")
        return task.enqueue_sync(3, 4).id  # asyncio.run() here used to raise RuntimeError

    handle_id = await asyncio.to_thread(asyncio.run, sync_code_inside_a_coroutine())
    assert log == expected_hooks(task.name, (3, 4), handle_id)
    assert (await app.broker.counts(queue))["queued"] == 1


async def test_enqueue_sync_from_the_running_loops_own_thread(broker_url: str, queue: str) -> None:
    log: list[Any] = []
    app = hooked_app(broker_url, queue, log)
    task = app.task(add_async)
    request_id.set("req-1")

    handle = task.enqueue_sync(5, 6)  # blocks this loop briefly; the hooks run elsewhere
    assert log == expected_hooks(task.name, (5, 6), handle.id)
    async with running(app):
        assert await handle.result(timeout=10) == 11


async def test_enqueue_sync_from_eight_threads_at_once(broker_url: str, queue: str) -> None:
    log: list[Any] = []
    app = hooked_app(broker_url, queue, log)
    task = app.task(add)
    start = threading.Barrier(8)

    def produce(worker: int) -> list[str]:
        start.wait(timeout=30)
        request_id.set("req-1")
        return [task.enqueue_sync(worker, i).id for i in range(25)]

    with ThreadPoolExecutor(8) as pool:
        ids = [i for batch in pool.map(produce, range(8)) for i in batch]

    assert len(set(ids)) == 200
    assert (await app.broker.counts(queue))["queued"] == 200
    for handle_id in ids:
        assert [e[1] for e in log if e[0] == "after" and e[3] == handle_id] == ["a", "b"]
    assert sum(1 for e in log if e[0] == "before") == 400
    helpers = [t for t in threading.enumerate() if t.name == "asyncq-hooks"]
    assert app._hooks is not None and len(helpers) >= 1


async def test_a_hook_may_call_enqueue_sync_without_deadlock(broker_url: str, queue: str) -> None:
    seen: list[str] = []

    class Audit(asyncq.Middleware):
        async def after_enqueue(self, task: Any, handle: asyncq.JobHandle[Any]) -> None:
            seen.append(task.name)
            if task.name != audit.name:
                # Blocking call on the helper loop's own thread, from inside a hook.
                audit.enqueue_sync(handle.id)

    app = make_app(broker_url, queue, middleware=[Audit()])
    work = app.task(add)

    @app.task(name="audit")
    def audit(job_id: str) -> None: ...

    # A deadlock would hang this thread; the generous bound (the work takes milliseconds) only
    # turns a hang into a failure on a busy machine, it does not measure anything.
    await asyncio.wait_for(asyncio.to_thread(work.enqueue_sync, 1, 1), 30)
    await asyncio.wait_for(asyncio.to_thread(audit.enqueue_sync, "x"), 30)
    assert seen == [work.name, "audit", "audit"]
    assert (await app.broker.counts(queue))["queued"] == 3


async def test_enqueue_sync_without_middleware_starts_no_loop(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)
    task = app.task(add)
    before = {t.ident for t in threading.enumerate()}
    task.enqueue_sync(1, 2)
    await asyncio.to_thread(task.enqueue_sync, 1, 2)
    assert app._hooks is None
    assert not [t for t in threading.enumerate() if t.ident not in before and "hooks" in t.name]


def test_the_helper_loop_ends_with_its_app() -> None:
    app = make_app("memory://gc", "q", middleware=[SyncRecorder("b", [])])
    app.task(add).enqueue_sync(1, 2)
    assert app._hooks is not None
    ident = app._hooks._thread_id
    (helper,) = [t for t in threading.enumerate() if t.ident == ident]
    del app
    # The helper may hold the finished task (and so the app) a moment longer: collect again
    # until it lets go. The 30 s bound only turns a leak into a failure on a busy machine.
    for _ in range(300):
        gc.collect()
        helper.join(timeout=0.1)
        if not helper.is_alive():
            break
    assert not helper.is_alive()


# ---- point 6: arguments are bound at enqueue ------------------------------------------------

BAD_CALLS = [
    pytest.param((1,), {}, "add() missing 1 required positional argument: 'y'", id="too-few"),
    pytest.param(
        (1, 2, 3), {}, "add() takes 2 positional arguments but 3 were given", id="too-many"
    ),
    pytest.param((1, 2), {"z": 3}, "add() got an unexpected keyword argument 'z'", id="unknown-kw"),
]


def enqueue_paths(task: asyncq.Task[Any, Any]) -> dict[str, Callable[..., Any]]:
    async def one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        await task.enqueue(*args, **kwargs)

    async def blocking(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        task.enqueue_sync(*args, **kwargs)

    async def many(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # The bad call comes last: nothing of the batch may be written.
        await task.enqueue_many([task.call(1, 2), ((4, 5), {}), (args, kwargs)])

    async def many_calls(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        await task.enqueue_many([task.call(1, 2), task.call(*args, **kwargs)])

    async def bound(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        task.options(delay=5).enqueue_sync(*args, **kwargs)

    return {
        "enqueue": one,
        "enqueue_sync": blocking,
        "enqueue_many": many,
        "enqueue_many_calls": many_calls,
        "options_enqueue_sync": bound,
    }


@pytest.mark.parametrize("with_middleware", [False, True], ids=["plain", "middleware"])
@pytest.mark.parametrize(("args", "kwargs", "message"), BAD_CALLS)
async def test_bad_arguments_raise_type_error_at_enqueue(
    broker_url: str,
    queue: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str,
    with_middleware: bool,
) -> None:
    log: list[Any] = []
    app = hooked_app(broker_url, queue, log) if with_middleware else make_app(broker_url, queue)
    task = app.task(add)
    for path, enqueue in enqueue_paths(task).items():
        with pytest.raises(TypeError) as err:
            await enqueue(args, kwargs)
        assert str(err.value) == message, path
    counts = await app.broker.counts(queue)
    assert counts["queued"] == counts["scheduled"] == 0
    assert log == []  # refused before any hook saw it


async def test_keyword_only_and_defaults_are_bound(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)
    task = app.task(add_async)
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3"):
        await task.enqueue(1, 2, 3)  # scale is keyword-only
    handles = await task.enqueue_many(
        [task.call(1, 2), task.call(1, y=2, scale=3), ((2,), {"y": 2})]
    )
    async with running(app):
        assert [await h.result(timeout=10) for h in handles] == [3, 9, 4]


async def test_uninspectable_functions_skip_binding(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)
    task = app.task(name="builtin-max")(max)  # inspect.signature(max) raises ValueError
    await task.enqueue(1, 2, 3)
    task.enqueue_sync(1)
    assert (await app.broker.counts(queue))["queued"] == 2


# ---- point 14: current_job() outside a job ---------------------------------------------------


def test_current_job_outside_a_job_says_so() -> None:
    with pytest.raises(LookupError) as err:
        asyncq.current_job()
    message = str(err.value)
    assert message.startswith("current_job() was called outside a running job")
    assert "worker" in message
    assert "ContextVar" not in message


def test_current_job_accepts_a_job_context() -> None:
    ctx = JobContext("id1", "t", "q", attempt=2, max_attempts=3, token=7, enqueued_at=1.0)

    def inside() -> JobContext:
        _current.set(ctx)  # what a process-pool child does: it has no Job, only its context
        return asyncq.current_job()

    assert contextvars.copy_context().run(inside) is ctx


# ---- executor= -------------------------------------------------------------------------------


def test_executor_is_resolved_per_function() -> None:
    app = asyncq.App("memory://exec")
    assert app.task(add_async).config.executor == "async"
    assert app.task(add).config.executor == "thread"
    assert app.task(name="t2", executor="thread")(add).config.executor == "thread"
    assert app.task(executor="process")(cpu_bound).config.executor == "process"


def test_executor_misuse_is_refused_at_decoration() -> None:
    app = asyncq.App("memory://exec2")
    with pytest.raises(ValueError, match=r"^process executor runs plain functions; "):
        app.task(executor="process")(add_async)
    with pytest.raises(ValueError, match=r"^thread executor runs plain functions; "):
        app.task(executor="thread")(add_async)
    with pytest.raises(ValueError, match="must be 'thread' or 'process'"):
        app.task(executor="fork")(add)  # type: ignore[call-overload]

    def nested(n: int) -> int:
        return n

    with pytest.raises(ValueError, match="module-level function"):
        app.task(executor="process")(nested)
    assert app.task(executor="thread")(nested).config.executor == "thread"
    assert len(app.tasks) == 1  # the refused ones were never registered
