"""Producers and workers across broker faults: enqueue timeouts and safe retries by job id,
workers resuming after a Redis restart, leases whose job vanished, jobs Python let go of."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncq
from asyncq._core import Consumer

from .apps import sample
from .chaos.proxy import FaultProxy
from .conftest import CONSUMER, RedisServer, free_port, make_app
from .procutil import WorkerProc, sample_env


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: it gets stopped, restarted or flushed."""
    server = RedisServer()
    yield server
    server.stop()


def restart(server: RedisServer) -> None:
    """Start a stopped server again on the same port (stop() removed its directory)."""
    os.makedirs(server.dir, exist_ok=True)
    server.start()


def kill(server: RedisServer) -> None:
    """Kill the server process, keeping its directory for a restart."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    server.proc = None


class Events:
    """Every event a consumer reports, gathered in the background until it closes."""

    def __init__(self, consumer: Consumer) -> None:
        self.seen: list[tuple[str, str]] = []
        self._task = asyncio.ensure_future(self._gather(consumer))

    async def _gather(self, consumer: Consumer) -> None:
        while events := await consumer.events():
            self.seen += [(e.kind, e.job_id or e.message or "") for e in events]

    async def after(self, seconds: float) -> list[tuple[str, str]]:
        """What was seen so far, ``seconds`` from now."""
        await asyncio.sleep(seconds)
        return list(self.seen)


# ---- 11a: enqueue timeout ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["enqueue", "enqueue_many", "enqueue_sync"])
async def test_enqueue_with_redis_down_fails_within_the_timeout(how: str, queue: str) -> None:
    # Nothing listens on this port: every attempt is refused before anything is sent.
    app = asyncq.App(f"redis://127.0.0.1:{free_port()}/0", default_queue=queue, enqueue_timeout=0.5)

    @app.task
    async def job(x: int) -> int:
        return x

    started = time.monotonic()
    with pytest.raises(asyncq.BrokerError) as info:
        if how == "enqueue":
            await job.enqueue(1)
        elif how == "enqueue_many":
            await job.enqueue_many([((1,), {}), ((2,), {})])
        else:
            await asyncio.to_thread(job.enqueue_sync, 1)
    elapsed = time.monotonic() - started
    # 0.5 s deadline; the 2 s margin is for thread start-up and scheduling on a busy 2-core host.
    assert 0.4 <= elapsed <= 2.5, elapsed
    err = info.value
    assert err.outcome_unknown is False
    assert len(err.job_ids) == (2 if how == "enqueue_many" else 1)
    assert "timed out after 0.5s" in str(err) and "nothing reached Redis" in str(err)


def test_enqueue_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="enqueue_timeout"):
        asyncq.App("memory://", enqueue_timeout=0)
    assert asyncq.App("memory://").enqueue_timeout == 5.0
    assert asyncq.BrokerError.outcome_unknown is False and asyncq.BrokerError.job_ids == []


async def test_enqueue_waits_out_a_short_outage(private_redis: RedisServer, queue: str) -> None:
    app = make_app(private_redis.url, queue, enqueue_timeout=20.0)

    @app.task
    async def job(x: int) -> int:
        return x

    await job.enqueue(0)
    kill(private_redis)
    pending = asyncio.ensure_future(job.enqueue(1))
    await asyncio.sleep(0.5)
    assert not pending.done()
    await asyncio.to_thread(restart, private_redis)
    handle = await asyncio.wait_for(pending, 15)
    assert handle.created
    assert (await app.broker.counts(queue))["queued"] == 1  # the restart lost job 0


# ---- 11b: the job id is the unit of idempotency ---------------------------------------------


async def test_an_enqueue_retried_with_its_job_id_leaves_one_job(app: asyncq.App) -> None:
    @app.task
    async def job(x: int) -> int:
        return x

    first = await job.enqueue(1)
    again = await job.options(job_id=first.id).enqueue(1)
    assert (again.id, again.created) == (first.id, False)
    mine = await job.options(job_id="order-17").enqueue(2)
    assert (mine.id, mine.created) == ("order-17", True)
    assert not (await job.options(job_id="order-17").enqueue(2)).created
    assert not (await asyncio.to_thread(job.options(job_id="order-17").enqueue_sync, 2)).created
    assert (await app.broker.counts(app.default_queue))["queued"] == 2


async def test_a_resent_id_never_resets_a_running_job(app: asyncq.App) -> None:
    @app.task
    async def job() -> None: ...

    await job.options(job_id="once").enqueue()
    consumer = await app.broker.consumer(app.default_queue, "w", [job.name], **CONSUMER)
    (leased,) = await consumer.fetch(10)
    again = await job.options(job_id="once").enqueue()
    assert not again.created
    assert (await again.info()).state == "running"  # type: ignore[union-attr]
    counts = await app.broker.counts(app.default_queue)
    assert (counts["queued"], counts["running"]) == (0, 1)
    consumer.ack(leased, None)
    await consumer.close(5)


def test_job_ids_are_validated() -> None:
    app = asyncq.App("memory://")

    @app.task
    async def job() -> None: ...

    for bad in ["", "a b", "{slot}", "x" * 129]:
        with pytest.raises(ValueError, match="job_id"):
            job.options(job_id=bad)


async def test_job_id_names_exactly_one_job(app: asyncq.App) -> None:
    @app.task
    async def job(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="job_id names one job"):
        await job.options(job_id="one").enqueue_many([((1,), {}), ((2,), {})])
    assert (await app.broker.counts(app.default_queue))["queued"] == 0


async def test_enqueue_many_whose_reply_was_lost_is_resent_with_the_same_ids(
    private_redis: RedisServer, queue: str
) -> None:
    proxy = await FaultProxy(private_redis.port).start()
    try:
        app = make_app(proxy.url, queue, enqueue_timeout=30.0)
        direct = make_app(private_redis.url, queue)

        @app.task
        async def job(x: int) -> int:
            return x

        await job.enqueue(-1)  # connected before the fault
        # Delay every chunk by 1 s: the batch reaches Redis 1 s after it is sent and its reply
        # would arrive 1 s after that; we cut the connection in between, so the reply is lost.
        proxy.latency(1000)
        pending = asyncio.ensure_future(job.enqueue_many([((i,), {}) for i in range(50)]))
        while (await direct.broker.counts(queue))["queued"] < 51:
            await asyncio.sleep(0.005)
        proxy.latency(0)
        proxy.reset()
        handles = await asyncio.wait_for(pending, 25)
        assert proxy.connections >= 2, "the batch was sent again on a new connection"
        assert all(h.created for h in handles), "written by this call's first attempt"
        assert (await direct.broker.counts(queue))["queued"] == 51
    finally:
        await proxy.close()


# ---- 11c: workers resume soon after Redis comes back --------------------------------------


async def add_remotely(url: str, queue: str) -> int:
    add = sample.build(url, queue).tasks["sample:add"]
    handle = await add.enqueue(2, 3)
    result: int = await handle.result(timeout=20)
    return result


def test_worker_resumes_within_a_second_of_redis_coming_back(
    private_redis: RedisServer, queue: str, tmp_path: Path
) -> None:
    worker = WorkerProc(tmp_path, sample_env(private_redis.url, queue), "-c", "5")
    try:
        worker.started()
        kill(private_redis)
        # Long enough for any backoff to reach its cap (the old one grew to 5 s).
        time.sleep(6)
        restart(private_redis)
        back = time.monotonic()
        assert asyncio.run(add_remotely(private_redis.url, queue)) == 5
        took = time.monotonic() - back
        print(f"first job done {took:.3f}s after Redis came back")
        # The issue asks for 1 s; 2.5 s leaves room for a busy 2-core machine (process
        # scheduling, reconnect handshakes), still well below the 4.6 s seen before the fix.
        assert took <= 2.5, f"{took:.3f}s\n{worker.log()}"
    finally:
        worker.close()


# ---- issue 8: connections that go silent are replaced in bounded time ----------------------

# By design (docs/reliability.md, "Faults heal by themselves") a silent connection is found within
# 2 s (ping every 0.5 s, declared dead after 1.5 s of silence) and the call waiting on it is retried
# at most 0.4 s after a new one is up: about 2.4 s plus a dial and a few round trips (measured:
# 2.05 s for half-open, under 0.6 s after the blackhole). 3.5 s leaves over a second for process
# scheduling on a busy 2-core host; before the fix this took 4.05 s and 4.67 s.
RESUME_BOUND = 3.5


@pytest.mark.parametrize("fault", ["blackhole 6s, flows forgotten", "half-open"])
async def test_first_job_done_soon_after_connections_go_silent(
    fault: str, private_redis: RedisServer, queue: str, tmp_path: Path
) -> None:
    # Worker and producer both reach Redis through the proxy, so every connection they hold
    # (shared, blocking, enqueue) goes silent; none of them is ever closed.
    proxy = await FaultProxy(private_redis.port).start()
    worker = WorkerProc(tmp_path, sample_env(proxy.url, queue), "-c", "5")
    try:
        await asyncio.to_thread(worker.started)
        add = sample.build(proxy.url, queue).tasks["sample:add"]
        assert await (await add.enqueue(1, 1)).result(timeout=20) == 2
        await asyncio.sleep(0.5)  # the worker is idle in its blocking wait again
        if fault == "half-open":
            proxy.half_open()
        else:
            await proxy.blackhole(6, forget=True)
        healed = time.monotonic()
        handle = await add.enqueue(2, 3)
        enqueued = time.monotonic() - healed
        assert await handle.result(timeout=20) == 5
        took = time.monotonic() - healed
        print(f"{fault}: enqueued {enqueued:.3f}s, first job done {took:.3f}s after the heal")
        assert took <= RESUME_BOUND, f"{took:.3f}s (enqueue {enqueued:.3f}s)\n{worker.log()}"
    finally:
        worker.close()
        await proxy.close()


# ---- 12: a lease whose job record vanished is reported once ---------------------------------


async def test_job_gone_while_running_is_reported_once(
    private_redis: RedisServer, queue: str
) -> None:
    app = make_app(private_redis.url, queue)

    @app.task
    async def job() -> None: ...

    await job.enqueue()
    consumer = await app.broker.consumer(queue, "w", [job.name], **CONSUMER)
    (leased,) = await consumer.fetch(10)
    events = Events(consumer)
    private_redis.cli("FLUSHALL")
    # Ten heartbeats at 0.1 s: the first reports the job gone, the rest must stay silent.
    assert await events.after(1.0) == [("gone", leased.id)]
    consumer.ack(leased, None)
    await consumer.flush()
    assert await events.after(0.5) == [("gone", leased.id), ("refused", leased.id)]
    assert consumer.stats()["refused"] == 1
    await consumer.close(5)


async def test_lost_lease_is_reported_once(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)

    @app.task
    async def job() -> None: ...

    await job.enqueue()
    # Heartbeats slower than the lease: the lease expires and another worker takes the job.
    slow = await app.broker.consumer(
        queue, "w1", [job.name], **dict(CONSUMER, lease=0.3, heartbeat=0.5)
    )
    (stale,) = await slow.fetch(10)
    other = await app.broker.consumer(queue, "w2", [job.name], **CONSUMER)
    (fresh,) = await asyncio.wait_for(other.fetch(10), 10)
    assert fresh.id == stale.id and fresh.token > stale.token
    events = Events(slow)
    # Four more heartbeats of the slow worker: the first after the takeover reports it lost.
    assert await events.after(2.0) == [("lost", stale.id)]
    other.ack(fresh, None)
    slow.release(stale)
    await other.close(5)
    await slow.close(5)


# ---- 2 (Rust half): a job Python let go of is failed, never left running -------------------


async def test_dropped_job_fails_as_abandoned(app: asyncq.App) -> None:
    @app.task
    async def job() -> None: ...

    handle = await job.enqueue()
    consumer = await app.broker.consumer(app.default_queue, "w", [job.name], **CONSUMER)
    events = Events(consumer)
    jobs = await consumer.fetch(10)
    assert [j.id for j in jobs] == [handle.id]
    del jobs
    gc.collect()
    await consumer.flush()
    with pytest.raises(asyncq.JobFailed) as info:
        await handle.result(timeout=5)
    assert info.value.reason == "abandoned"
    assert "without recording an outcome" in info.value.message
    assert ("abandoned", handle.id) in await events.after(0.1)
    counts = await app.broker.counts(app.default_queue)
    assert (counts["running"], counts["dead"]) == (0, 1)
    await consumer.close(5)


async def test_abandoned_job_with_retries_left_runs_again(app: asyncq.App) -> None:
    @app.task(retries=1)
    async def job() -> None: ...

    handle = await job.enqueue()
    consumer = await app.broker.consumer(app.default_queue, "w", [job.name], **CONSUMER)
    (await consumer.fetch(10)).clear()
    gc.collect()
    await consumer.flush()
    info = await handle.info()
    assert info is not None and info.state == "failed"
    # The retry waits about a second; 10 s is margin for a busy machine.
    (again,) = await asyncio.wait_for(consumer.fetch(10), 10)
    assert again.id == handle.id and again.attempt == 2
    consumer.ack(again, "ok")
    assert await handle.result(timeout=5) == "ok"
    await consumer.close(5)


async def test_only_the_first_outcome_of_a_job_counts(app: asyncq.App) -> None:
    @app.task
    async def job() -> None: ...

    handle = await job.enqueue()
    consumer = await app.broker.consumer(app.default_queue, "w", [job.name], **CONSUMER)
    (leased,) = await consumer.fetch(10)
    consumer.ack(leased, "first")
    consumer.fail(leased, "E", "second", "", "exception", None)
    consumer.release(leased)
    del leased
    gc.collect()
    await consumer.flush()
    assert await handle.result(timeout=5) == "first"
    stats = consumer.stats()
    assert (stats["acked"], stats["failed"], stats["released"], stats["refused"]) == (1, 0, 0, 0)
    await consumer.close(5)
