"""Waiting for results is woken by the scripts' end notifications, not by polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import asyncq
from tests.conftest import RedisServer, make_app, running


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, so its command counts are this test's alone."""
    server = RedisServer()
    yield server
    server.stop()


def _job_reads(server: RedisServer) -> int:
    """How many job records were read (HGETALL) since the server started."""
    for line in server.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_hgetall:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.parametrize("how", ["async", "sync"])
async def test_a_result_wait_reads_the_job_a_few_times_not_per_poll(
    own_redis: RedisServer, queue: str, how: str
) -> None:
    app = make_app(own_redis.url, queue)

    @app.task(name="results:slow")
    async def slow() -> str:
        await asyncio.sleep(2.5)
        return "done"

    async with running(app):
        handle = await slow.enqueue()
        before = _job_reads(own_redis)
        started = time.monotonic()
        if how == "async":
            assert await handle.result(timeout=20) == "done"
        else:
            assert await asyncio.to_thread(handle.result_sync, 20) == "done"
        waited = time.monotonic() - started
    reads = _job_reads(own_redis) - before
    # Two reads per wait of at most 1 s (before and after it), and the last wait ends at the
    # ack: about 6 for 2.5 s. Polling from 2 ms doubling to 100 ms read it about 30 times.
    # The bound leaves a slow machine two more waits.
    assert reads <= 2 * (int(waited) + 1) + 4, (reads, waited)


async def test_every_way_a_job_ends_wakes_its_waiter(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)

    @app.task(name="results:boom", retries=0)
    async def boom() -> None:
        raise RuntimeError("no")

    @app.task(name="results:ok")
    async def ok(x: int) -> int:
        return x

    delayed = await ok.options(delay=60).enqueue(1)
    waiter = asyncio.ensure_future(delayed.result(timeout=20))
    await asyncio.sleep(0.1)  # the waiter's first wait began; its 1 s backstop is ~0.9 s away
    assert await delayed.cancel()
    started = time.monotonic()
    with pytest.raises(asyncq.JobCancelled):
        await waiter
    # Woken by the cancel's notification (milliseconds), not by the backstop (about 0.9 s
    # from here): half a second tells them apart with room for a loaded machine.
    assert time.monotonic() - started < 0.5
    async with running(app):
        with pytest.raises(asyncq.JobFailed):
            await (await boom.enqueue()).result(timeout=20)
        assert await (await ok.enqueue(7)).result(timeout=20) == 7
