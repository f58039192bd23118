"""A corrupt job record or key in Redis never takes other jobs or the worker down (issue 8).

The records are corrupted with ``redis-cli`` behind the broker's back; a real worker runs.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import asyncq
from tests.conftest import RedisServer, make_app, running

pytestmark = pytest.mark.timeout(60)


def broker_logs(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == event]


async def test_a_corrupt_record_is_dead_lettered_and_its_batch_runs(
    redis_server: RedisServer, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One of 20 queued jobs gets a non-number attempt count: the other 19 (fetched in the same
    batch) succeed, the corrupt one is dead with reason ``corrupt_record``, and nothing is
    logged as the broker being unreachable."""
    caplog.set_level(logging.INFO, logger="asyncq")
    app = make_app(redis_server.url, queue)

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    handles = [await double.enqueue(i) for i in range(20)]
    bad = handles[7]
    redis_server.cli("HSET", f"asyncq:{{{queue}#0}}:job:{bad.id}", "a", "x")
    async with running(app, concurrency=20):
        good = [h for h in handles if h is not bad]
        results = await asyncio.gather(*(h.result(timeout=20) for h in good))
        assert results == [2 * i for i in range(20) if i != 7]
        with pytest.raises(asyncq.JobFailed) as failed:
            await bad.result(timeout=20)
    assert failed.value.reason == "corrupt_record"
    assert "'a'" in failed.value.message
    assert await bad.status() == "dead"
    assert not [r for r in caplog.records if "broker unreachable" in r.getMessage()]


async def test_a_script_error_is_logged_once_as_such_and_the_worker_keeps_going(
    redis_server: RedisServer, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A key of the wrong type makes fetch and reap fail on every call. That is a script error,
    not an outage: each distinct error is logged once as ``broker.script_error``, never as
    "broker unreachable", and the worker resumes by itself once the key is fixed."""
    caplog.set_level(logging.INFO, logger="asyncq")
    app = make_app(redis_server.url, queue)

    @app.task
    async def one() -> int:
        return 1

    scheduled = f"asyncq:{{{queue}#0}}:scheduled"
    redis_server.cli("SET", scheduled, "not a sorted set")
    async with running(app):
        # Long enough for several retries of fetch (backoff <= 0.4 s) and reap (every 0.2 s).
        deadline = asyncio.get_running_loop().time() + 15
        while len(broker_logs(caplog, "broker.script_error")) < 2:
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            await asyncio.sleep(0.05)
        # Not a bound: a window in which repeated failures would show up as duplicate logs.
        await asyncio.sleep(1.5)
        redis_server.cli("DEL", scheduled)
        handle = await one.enqueue()
        assert await handle.result(timeout=20) == 1
    logged = broker_logs(caplog, "broker.script_error")
    assert all("WRONGTYPE" in m for m in logged), logged
    assert len(logged) == len(set(logged)), "each distinct error is logged once"
    assert not [r for r in caplog.records if "broker unreachable" in r.getMessage()]
