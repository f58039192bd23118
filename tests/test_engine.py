"""The per-process engine seen from outside: connections held by an idle worker, counters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer, make_app, running
from tests.procutil import WorkerProc, sample_env, wait_until


def _connections(redis_server: RedisServer) -> int:
    """Clients of the test's own Redis, not counting the ``redis-cli`` that asks."""
    return len(redis_server.cli("CLIENT", "LIST").splitlines()) - 1


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own: the shared one holds other tests' connections."""
    server = RedisServer()
    yield server
    server.stop()


async def test_an_idle_worker_on_twenty_queues_holds_two_connections(
    own_redis: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    redis_server = own_redis
    assert _connections(redis_server) == 0
    queues = [f"{queue}-{i}" for i in range(20)]
    env = sample_env(redis_server.url, queue)
    worker = WorkerProc(tmp_path, env, "-q", ",".join(f"{q}=2" for q in queues))
    procs.append(worker)
    worker.started()
    # Idle: every consumer has fetched nothing and waits. One shared connection for commands
    # and scripts, one blocking connection for the engine's wait on all twenty wake lists.
    # Held for a while, in case a connection per queue were only dialed lazily.
    time.sleep(1.0)
    assert _connections(redis_server) == 2
    app = make_app(redis_server.url, queues[13])
    add = app.task(name="sample:add")(lambda a, b: a + b)
    handle = await add.enqueue(2, 3)
    assert await handle.result(timeout=10) == 5  # served through the shared wait


async def test_counters_show_what_the_engine_and_each_queue_did(
    redis_server: RedisServer, queue: str
) -> None:
    app = make_app(redis_server.url, queue)

    @app.task(name="engine:double")
    async def double(x: int) -> int:
        return 2 * x

    assert app.broker.counters() == {"engine": {}, "queues": {}}  # not connected yet
    async with running(app):
        handles = [await double.enqueue(i) for i in range(5)]
        assert [await h.result(timeout=10) for h in handles] == [0, 2, 4, 6, 8]
        wait_until(
            lambda: app.broker.counters()["queues"][queue]["acked"] == 5,
            10,
            "the acks to be flushed",
        )
        counters = app.broker.counters()
    assert counters["queues"][queue]["fetched"] == 5
    engine = counters["engine"]
    assert engine["waits"] >= 1  # the worker waited before the first job came
    assert set(engine) >= {"wakeups", "interrupts", "reaps", "reaps_skipped", "requeued"}
