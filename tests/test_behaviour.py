"""The behaviour suite: every test runs on memory:// and on a real redis-server."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import decimal
import threading
import time
import types
import uuid
from typing import Any

import msgpack
import pytest

import asyncq
from tests.conftest import make_app, running
from tests.procutil import await_until

pytestmark = pytest.mark.timeout(60)


async def test_async_task_result(app: asyncq.App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with running(app):
        job = await add.enqueue(2, 3)
        assert await job.result(timeout=10) == 5
        assert await job.status() == "succeeded"


async def test_sync_task_runs_in_thread_with_context(app: asyncq.App) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @app.task
    def where(x: int) -> list[Any]:
        ctx = asyncq.current_job()
        return [threading.current_thread().name, x * 2, ctx.attempt, ctx.job_id]

    async with running(app):
        var.set("set")
        job = await where.enqueue(21)
        thread, doubled, attempt, job_id = await job.result(timeout=10)
    assert thread.startswith("asyncq-sync")
    assert (doubled, attempt, job_id) == (42, 1, job.id)


async def test_values_round_trip(app: asyncq.App) -> None:
    @app.task
    async def echo(value: Any) -> Any:
        return value

    value = {
        "none": None,
        "big": 2**100,
        "neg": -(2**70),
        "f": 1.5,
        "b": b"\x00\xff",
        "t": (1, (2, 3)),
        "l": [1, "x"],
        "dt": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
        "d": dt.date(2024, 5, 1),
        "u": uuid.UUID(int=7),
        "dec": decimal.Decimal("1.10"),
        7: "int key",
    }
    async with running(app):
        assert await (await echo.enqueue(value)).result(timeout=10) == value


async def test_enqueue_many(app: asyncq.App) -> None:
    @app.task
    async def square(x: int) -> int:
        return x * x

    async with running(app, concurrency=20):
        handles = await square.enqueue_many([((i,), {}) for i in range(300)])
        results = [await h.result(timeout=20) for h in handles]
    assert results == [i * i for i in range(300)]
    assert len({h.id for h in handles}) == 300


async def test_unserializable_argument_names_it(app: asyncq.App) -> None:
    @app.task
    async def send(to: str, when: Any) -> None: ...

    with pytest.raises(TypeError, match="argument 'when'"):
        await send.enqueue("a@b.c", object())
    with pytest.raises(TypeError, match="keyword argument 'when'"):
        await send.enqueue("a@b.c", when={1, 2})


@pytest.mark.parametrize("how", ["delay", "eta"])
async def test_delay_and_eta_honoured(app: asyncq.App, how: str) -> None:
    started: list[float] = []

    @app.task
    async def stamp() -> None:
        started.append(time.time())

    async with running(app):
        await asyncio.sleep(0.2)  # the worker is idle and blocked on the broker
        due = time.time() + 0.5
        opts = (
            stamp.options(delay=0.5)
            if how == "delay"
            else stamp.options(eta=dt.datetime.fromtimestamp(due, dt.UTC))
        )
        job = await opts.enqueue()
        assert await job.status() == "scheduled"
        await job.result(timeout=10)
    assert started[0] >= due - 0.005, "started early"
    assert started[0] - due <= 0.05, f"started {started[0] - due:.3f}s late"


async def test_priority_order(app: asyncq.App) -> None:
    order: list[int] = []

    @app.task
    async def record(n: int) -> None:
        order.append(n)

    for p in (0, 5, 9, 5, 0):
        await record.options(priority=p).enqueue(p)
    async with running(app, concurrency=1):
        while len(order) < 5:
            await asyncio.sleep(0.01)
    assert order == [9, 5, 5, 0, 0]


async def test_idempotency_key(app: asyncq.App) -> None:
    @app.task
    async def once(x: int) -> int:
        return x

    first = await once.options(key="welcome:42").enqueue(1)
    second = await once.options(key="welcome:42").enqueue(2)
    assert first.created and not second.created
    assert second.id == first.id


async def test_retries_then_dead_letter_then_retry_from_dlq(app: asyncq.App) -> None:
    calls: list[int] = []
    healthy = False

    @app.task(retries=2, backoff=asyncq.Exponential(base=0.05, cap=0.1))
    async def flaky() -> str:
        calls.append(asyncq.current_job().attempt)
        if not healthy:
            raise RuntimeError("downstream unavailable")
        return "ok"

    async with running(app):
        job = await flaky.enqueue()
        with pytest.raises(asyncq.JobFailed) as err:
            await job.result(timeout=10)
        assert calls == [1, 2, 3]
        assert err.value.type == "RuntimeError"
        assert err.value.message == "downstream unavailable"
        assert "in flaky" in err.value.traceback
        assert err.value.reason == "exception"
        assert await job.status() == "dead"
        assert await app.broker.dead_ids(app.default_queue, 10) == [job.id]

        healthy = True
        assert await app.broker.retry_dead(app.default_queue) == 1
        assert await job.result(timeout=10) == "ok"


async def test_timeout_enforced(app: asyncq.App) -> None:
    @app.task(timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(10)

    async with running(app):
        job = await slow.enqueue()
        t0 = time.monotonic()
        with pytest.raises(asyncq.JobFailed) as err:
            await job.result(timeout=10)
        assert time.monotonic() - t0 < 3
    assert err.value.reason == "timeout"


async def test_cancel_queued_job(app: asyncq.App) -> None:
    ran: list[int] = []

    @app.task
    async def later() -> None:
        ran.append(1)

    job = await later.options(delay=0.3).enqueue()
    assert await job.cancel()
    assert await job.status() == "cancelled"
    async with running(app):
        await asyncio.sleep(0.6)
        with pytest.raises(asyncq.JobCancelled):
            await job.result(timeout=1)
    assert ran == []


async def test_cancel_running_job(app: asyncq.App) -> None:
    started = asyncio.Event()

    @app.task
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    async with running(app) as worker:
        job = await forever.enqueue()
        await asyncio.wait_for(started.wait(), 10)
        assert await job.cancel()
        with pytest.raises(asyncq.JobCancelled):
            await job.result(timeout=10)  # heard at once (cancel.lua publishes the id)
        assert await job.status() == "cancelled"
        assert worker.stats.cancelled == 1


async def test_a_cancel_from_another_client_stops_a_running_job_long_before_its_heartbeat(
    broker_url: str, queue: str
) -> None:
    # Heartbeats every 20 s: a cancel seen only there would take that long.
    app = make_app(broker_url, queue, lease=60.0)
    other = asyncq.App(broker_url, default_queue=queue)  # its own connection on Redis
    started = asyncio.Event()
    saw: list[bool] = []

    @app.task
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    @app.task
    def polite() -> str:
        # A sync task cannot be interrupted; it looks at the flag and stops by itself.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if asyncq.current_job().cancelled:
                saw.append(True)
                return "stopped early"
            time.sleep(0.01)
        return "ran to the end"

    async with running(app) as worker:
        job = await forever.enqueue()
        await asyncio.wait_for(started.wait(), 10)
        t0 = time.monotonic()
        assert await other.job(job.id, queue).cancel()
        with pytest.raises(asyncq.JobCancelled):
            await job.result(timeout=10)
        # Pushed at once (a round trip or two); the bound leaves a wide margin for a loaded
        # machine, and is still far below the 20 s heartbeat.
        assert time.monotonic() - t0 < 5.0
        sync_job = await polite.enqueue()
        await await_until(lambda: _is_running(sync_job), 10, "the sync job running")
        assert await other.job(sync_job.id, queue).cancel()
        with pytest.raises(asyncq.JobCancelled):
            await sync_job.result(timeout=10)
        await await_until(lambda: _true(bool(saw)), 10, "the thread seeing the flag")
        assert worker.stats.cancelled == 2


class _CancelOnStart(dict[str, Any]):
    """A lane's ``running`` that delivers a cancel event for each job the moment the lane
    loop registers it, before its task took its first step: what happens when the fetch's
    reply and the cancel event reach the loop in the same turn (a request made just as the
    job was leased). Each event is delivered once."""

    def __init__(self, deliver: Any) -> None:
        super().__init__()
        self.deliver = deliver

    def __setitem__(self, job_id: str, entry: Any) -> None:
        super().__setitem__(job_id, entry)
        self.deliver(job_id)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_cancel_heard_as_its_job_starts_still_ends_it_cancelled(
    broker_url: str, queue: str, kind: str
) -> None:
    app = make_app(broker_url, queue, lease=60.0)
    ran: list[str] = []

    if kind == "sync":

        @app.task(name="slow")
        def slow_sync() -> str:
            ran.append("started")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if asyncq.current_job().cancelled:
                    ran.append("stopped")
                    return "stopped early"
                time.sleep(0.01)
            return "ran"

    else:

        @app.task(name="slow")
        async def slow_async() -> str:
            ran.append("started")
            await asyncio.sleep(30)
            return "ran"

    async with running(app) as worker:
        (lane,) = worker._lanes

        def deliver(job_id: str) -> None:
            event = types.SimpleNamespace(kind="cancel", job_id=job_id)
            worker._on_event(lane, event)  # type: ignore[arg-type]

        lane.running = _CancelOnStart(deliver)
        job = await app.tasks["slow"].enqueue()
        # Cancelled before its first step, its task would end without running the code that
        # records an outcome: the job would stay running (its lease renewed) until shutdown.
        with pytest.raises(asyncq.JobCancelled):
            await job.result(timeout=10)
        assert worker.stats.cancelled == 1
        await await_until(lambda: _true(not lane.running), 10, "the lane emptied")
        if kind == "sync":  # a thread that began sees the flag and stops by itself
            await await_until(lambda: _true(ran in ([], ["started", "stopped"])), 10, "stopped")


async def _is_running(job: asyncq.JobHandle[Any]) -> bool:
    return await job.status() == "running"


async def _true(value: bool) -> bool:
    return value


async def test_poison_messages_dead_lettered_worker_keeps_going(app: asyncq.App) -> None:
    @app.task
    async def good(x: int) -> int:
        return x

    q = app.default_queue
    unknown = msgpack.packb({"v": 1, "t": "nope:missing", "a": [], "k": {}})
    future = msgpack.packb({"v": 99, "t": good.name, "a": [], "k": {}})
    bad_ids = await app.broker.enqueue_raw(q, [b"\xc1garbage", unknown, future], 3)
    async with running(app):
        handles = await good.enqueue_many([((i,), {}) for i in range(20)])
        assert [await h.result(timeout=10) for h in handles] == list(range(20))
        reasons = []
        for job_id in bad_ids:
            with pytest.raises(asyncq.JobFailed) as err:
                await app.job(job_id).result(timeout=10)
            reasons.append(err.value.reason)
    assert reasons == ["bad_payload", "unknown_task", "unsupported_version"]


async def test_signed_messages_only_run_with_an_accepted_key(broker_url: str, queue: str) -> None:
    worker_app = make_app(broker_url, queue, signing_keys=["old", b"new"])
    producer = make_app(broker_url, queue, signing_keys=["new"])  # rotated: signs with "new"
    stranger = make_app(broker_url, queue, signing_keys=["someone-else"])
    ran: list[str] = []

    def define(app: asyncq.App) -> asyncq.Task[[str], str]:
        @app.task(name="echo")
        async def echo(who: str) -> str:
            ran.append(who)
            return who

        return echo

    ok, forged = define(producer), define(stranger)
    define(worker_app)
    unsigned = msgpack.packb({"v": 1, "t": "echo", "a": ["raw"], "k": {}})
    (raw_id,) = await worker_app.broker.enqueue_raw(queue, [unsigned], 1)
    async with running(worker_app):
        assert await (await ok.enqueue("producer")).result(timeout=10) == "producer"
        with pytest.raises(asyncq.JobFailed) as err:
            await (await forged.enqueue("stranger")).result(timeout=10)
        assert err.value.reason == "bad_signature"
        with pytest.raises(asyncq.JobFailed) as err:
            await worker_app.job(raw_id).result(timeout=10)
        assert err.value.reason == "unsigned"
    assert ran == ["producer"]


async def test_oversized_payload_refused_at_enqueue(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue, max_payload=1000)

    @app.task
    async def big(blob: bytes) -> None: ...

    with pytest.raises(asyncq.PayloadError, match="exceeds"):
        await big.enqueue(b"x" * 2000)


async def test_unserializable_result_fails_job(app: asyncq.App) -> None:
    @app.task(retries=3)
    async def weird() -> object:
        return object()

    async with running(app):
        with pytest.raises(asyncq.JobFailed) as err:
            await (await weird.enqueue()).result(timeout=10)
    assert err.value.reason == "unserializable_result"


async def test_middleware_hooks(broker_url: str, queue: str) -> None:
    seen: list[tuple[str, str]] = []

    class Record(asyncq.Middleware):
        async def before_enqueue(self, task: Any, args: Any, kwargs: Any, options: Any) -> None:
            seen.append((task.name, "before_enqueue"))

        async def after_enqueue(self, task: Any, handle: Any) -> None:
            seen.append((task.name, "after_enqueue"))

        async def before_execute(self, ctx: asyncq.JobContext) -> None:
            seen.append((ctx.task, "before_execute"))

        def after_execute(self, ctx: asyncq.JobContext) -> None:  # sync hooks work too
            seen.append((ctx.task, "after_execute"))

        async def on_success(self, ctx: asyncq.JobContext, result: Any) -> None:
            seen.append((ctx.task, f"on_success:{result}"))

        async def on_retry(self, ctx: asyncq.JobContext, exc: BaseException) -> None:
            seen.append((ctx.task, "on_retry"))

        async def on_failure(self, ctx: asyncq.JobContext, exc: BaseException) -> None:
            seen.append((ctx.task, "on_failure"))

    class Broken(asyncq.Middleware):
        async def on_success(self, ctx: asyncq.JobContext, result: Any) -> None:
            raise RuntimeError("hook bug")

    app = make_app(broker_url, queue, middleware=[Broken(), Record()])

    @app.task(name="ok")
    async def ok() -> int:
        return 1

    @app.task(name="bad", retries=1, backoff=asyncq.Exponential(base=0.01))
    async def bad() -> None:
        raise ValueError

    async with running(app):
        await (await ok.enqueue()).result(timeout=10)
        with pytest.raises(asyncq.JobFailed):
            await (await bad.enqueue()).result(timeout=10)
    # The worker has stopped, so every hook has run. Order is checked per task and per side:
    # a worker may start a job before the producer's after_enqueue hook has run.
    enqueue_side = {"before_enqueue", "after_enqueue"}

    def hooks(task: str, producer: bool) -> list[str]:
        return [h for n, h in seen if n == task and (h in enqueue_side) == producer]

    assert hooks("ok", producer=True) == ["before_enqueue", "after_enqueue"]
    assert hooks("ok", producer=False) == ["before_execute", "after_execute", "on_success:1"]
    assert hooks("bad", producer=True) == ["before_enqueue", "after_enqueue"]
    assert hooks("bad", producer=False) == [
        "before_execute",
        "after_execute",
        "on_retry",
        "before_execute",
        "after_execute",
        "on_failure",
    ]


async def test_stale_ack_refused_after_lease_expiry(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue, lease=0.3, reaper=0.1)

    @app.task
    async def job_fn() -> None: ...

    handle = await job_fn.enqueue()
    kw = dict(
        lease=0.3,
        heartbeat=60.0,
        reap=0.1,
        idle_wait=1.0,
        result_ttl=60.0,
        dead_ttl=60.0,
        max_payload=1 << 20,
    )
    first = await app.broker.consumer(queue, "w1", [job_fn.name], **kw)
    (job1,) = await first.fetch(10)
    second = await app.broker.consumer(queue, "w2", [job_fn.name], **kw)
    (job2,) = await asyncio.wait_for(second.fetch(10), 5)  # after the lease expired
    assert job2.id == job1.id and job2.token > job1.token and job2.attempt == 2
    first.ack(job1, "late")
    await first.flush()
    assert first.stats()["refused"] == 1
    second.ack(job2, "fresh")
    await second.flush()
    assert await handle.result(timeout=5) == "fresh"
    await first.close(5)
    await second.close(5)


async def test_job_lookup_and_info(app: asyncq.App) -> None:
    @app.task
    async def noop() -> None: ...

    job = await noop.options(delay=30).enqueue()
    found = await app.find_job(job.id)
    assert found is not None and found.queue == app.default_queue
    info = await app.job(job.id).info()
    assert info is not None and info.task == noop.name and info.state == "scheduled"
    with pytest.raises(asyncq.JobNotFound):
        await app.job("missing").status()


def test_enqueue_sync(app: asyncq.App) -> None:
    @app.task
    async def noop(x: int) -> int:
        return x

    handle = noop.enqueue_sync(5)
    info = asyncio.run(handle.info())
    assert info is not None and info.state == "queued"


def test_bad_url() -> None:
    with pytest.raises(ValueError, match="expected redis://"):
        asyncq.App("http://localhost")


async def test_prefetch_drains_and_hands_back_on_stop(app: asyncq.App) -> None:
    runs: list[int] = []

    @app.task
    async def step(i: int) -> int:
        runs.append(i)
        await asyncio.sleep(0.05)
        return i

    handles = await step.enqueue_many([((i,), {}) for i in range(40)])
    async with running(app, concurrency=4, prefetch=True, grace=5.0):
        while len(runs) < 10:
            await asyncio.sleep(0.01)
    # Stopped mid-drain: the prefetched batch went back at once, nothing is left leased.
    counts = await app.broker.counts(app.default_queue)
    assert counts["running"] == 0
    assert counts["queued"] + counts["succeeded_total"] == 40
    async with running(app, concurrency=4, prefetch=True):
        assert [await h.result(timeout=20) for h in handles] == list(range(40))
    assert sorted(runs) == list(range(40)), "each job ran exactly once"
