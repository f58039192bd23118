"""Partitioned queues: one logical queue over several partitions (docs/scaling.md).

Each test runs on memory:// and Redis (``make test-cluster`` runs them on a Redis Cluster too,
where the partitions land on different primaries).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter

import pytest

import asyncq
from tests.conftest import RedisServer, make_app, running
from tests.procutil import run_cli


def partition(handle: asyncq.JobHandle[object]) -> str:
    return handle.queue.rpartition("#")[2]


async def test_jobs_spread_round_robin_and_every_partition_is_served(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, partitions={queue: 4})

    @app.task()
    async def double(x: int) -> int:
        return 2 * x

    handles = await double.enqueue_many([((i,), {}) for i in range(40)])
    assert Counter(h.queue for h in handles) == {f"{queue}#{p}": 10 for p in range(4)}
    # An id made for a partitioned queue names its partition.
    assert all(re.fullmatch(r"[0-9a-z]{20}\.p\d", h.id) for h in handles)
    assert all(h.id.endswith(f".p{partition(h)}") for h in handles)
    single = await double.enqueue(21)
    async with running(app):
        assert [await h.result(timeout=10) for h in handles] == [2 * i for i in range(40)]
        assert await single.result(timeout=10) == 42
    # A handle made from the id alone finds the job in its partition.
    again = app.job(handles[7].id)
    assert again.queue == handles[7].queue
    assert await again.result(timeout=1) == 14


async def test_a_partitioned_queue_shares_one_concurrency_budget(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, partitions={queue: 4})
    now = most = 0

    @app.task()
    async def hold() -> None:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0.02)
        now -= 1

    handles = await hold.enqueue_many([((), {}) for _ in range(24)])
    async with running(app, queues={queue: 3}):
        for h in handles:
            await h.result(timeout=20)
    assert most == 3  # 3 at once over all four partitions, never 3 per partition


async def test_no_partition_is_passed_over(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue, partitions={queue: 4})
    order: list[str] = []

    @app.task()
    async def step(tag: str) -> None:
        order.append(tag)
        await asyncio.sleep(0.002)

    # 60 jobs in one partition first, then one in each partition.
    busy = await step.options(partition_key="busy").enqueue_many(
        [(("busy",), {}) for _ in range(60)]
    )
    late = await step.enqueue_many([((f"late{i}",), {}) for i in range(4)])
    assert len({h.queue for h in late}) == 4
    async with running(app, queues={queue: 2}):
        for h in late:
            await h.result(timeout=20)
    # The late jobs of the other partitions ran long before the busy partition's backlog was
    # through (the one in the busy partition waits its turn there, behind the 60).
    others = [f"late{i}" for i, h in enumerate(late) if h.queue != busy[0].queue]
    assert len(others) == 3
    assert max(order.index(tag) for tag in others) < 20, order


async def test_a_partition_key_keeps_one_partition_and_its_order(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, partitions={queue: 4})
    seen: list[int] = []

    @app.task()
    async def note(i: int) -> None:
        seen.append(i)

    handles = []
    for i in range(20):
        handles.append(await note.options(partition_key=("acct", 7)).enqueue(i))
    assert len({h.queue for h in handles}) == 1
    async with running(app, queues={queue: 1}):
        for h in handles:
            await h.result(timeout=10)
    assert seen == list(range(20))


async def test_keys_and_job_ids_deduplicate_across_partitions(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue, partitions={queue: 8})

    @app.task()
    async def once(i: int) -> int:
        return i

    first = await once.options(key="order-1").enqueue(1)
    again = await once.options(key="order-1").enqueue(2)
    assert again.deduplicated and again.id == first.id and again.queue == first.queue
    unique = asyncq.Unique("u-1", ttl=60)
    u1 = await once.options(unique=unique).enqueue(3)
    u2 = await once.options(unique=unique).enqueue(4)
    assert u2.deduplicated and u2.id == u1.id
    mine = await once.options(job_id="invoice-42").enqueue(5)
    resent = await once.options(job_id="invoice-42").enqueue(6)
    assert resent.deduplicated and resent.queue == mine.queue
    assert app.job("invoice-42").queue == mine.queue
    async with running(app):
        assert await first.result(timeout=10) == 1
        assert await u1.result(timeout=10) == 3
        assert await app.job("invoice-42").result(timeout=10) == 5


async def test_delays_retries_priorities_and_ordered_keys_work_per_partition(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, partitions={queue: 3})
    tries: Counter[int] = Counter()
    running_accounts: set[str] = set()
    overlap = False
    ran: list[tuple[str, int]] = []

    @app.task(retries=2, backoff=asyncq.Exponential(base=0.05, cap=0.05))
    async def flaky(i: int) -> int:
        tries[i] += 1
        if tries[i] == 1:
            raise RuntimeError("first try fails")
        return i

    @app.task(ordered_key="account")
    async def booked(account: str, i: int) -> None:
        nonlocal overlap
        overlap = overlap or account in running_accounts
        running_accounts.add(account)
        await asyncio.sleep(0.003)
        ran.append((account, i))
        running_accounts.discard(account)

    delayed = await flaky.options(delay=0.3).enqueue(100)
    retried = await flaky.enqueue_many([((i,), {}) for i in range(6)])
    books = [await booked.enqueue(acct, i) for i in range(10) for acct in ("a", "b")]
    # One account's jobs meet in one partition, where its order is kept.
    assert len({h.queue for h in books[0::2]}) == 1
    async with running(app):
        assert [await h.result(timeout=10) for h in retried] == list(range(6))
        assert await delayed.result(timeout=10) == 100
        for h in books:
            await h.result(timeout=10)
    assert not overlap
    assert [i for a, i in ran if a == "a"] == list(range(10))
    assert [i for a, i in ran if a == "b"] == list(range(10))


def test_bad_partition_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="1 to 1024 partitions"):
        asyncq.App("memory://", partitions={"q": 0})
    with pytest.raises(ValueError, match="not a queue name"):
        asyncq.App("memory://", partitions={"a#b": 2})


async def test_a_queue_name_with_a_hash_is_refused(broker_url: str) -> None:
    app = make_app(broker_url, "ok")

    @app.task(queue="bad#name")
    async def t() -> None:
        return None

    with pytest.raises(asyncq.PayloadError, match="'#'"):
        await t.enqueue()


async def test_the_cli_shows_and_manages_a_partitioned_queue_as_one(
    redis_server: RedisServer, queue: str
) -> None:
    app = make_app(redis_server.url, queue, partitions={queue: 3})

    @app.task(name="part:noop")
    async def noop(i: int) -> int:
        return i

    handles = await noop.enqueue_many([((i,), {}) for i in range(9)])
    url = ("--url", redis_server.url)
    info = run_cli("asyncq", *url, "info").stdout.splitlines()
    at = next(i for i, line in enumerate(info) if line.split()[:1] == [queue])
    assert info[at].split()[2] == "9"  # queued, all partitions together
    parts = [line.split() for line in info[at + 1 : at + 4]]  # then each partition's row
    assert [(p[0], p[2]) for p in parts] == [("#0", "3"), ("#1", "3"), ("#2", "3")]
    listed = run_cli("asyncq", *url, "jobs", queue, "--state", "queued", "--json")
    assert {json.loads(line)["id"] for line in listed.stdout.splitlines()} == {
        h.id for h in handles
    }
    shown = json.loads(run_cli("asyncq", *url, "job", handles[4].id, "--queue", queue).stdout)
    assert shown["queue"] == handles[4].queue
    purged = run_cli("asyncq", *url, "purge", queue, "--yes")
    assert "deleted 9 job(s)" in purged.stdout

    # Without --app, `asyncq enqueue` learns the partitions from Redis (and live workers):
    # the job lands in one of them with an id naming it, so the App finds it by id.
    made = run_cli("asyncq", *url, "enqueue", "part:noop", "--queue", queue, "--args", "[7]")
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip()
    assert re.fullmatch(r"[0-9a-z]{20}\.p[0-2]", job_id), job_id
    async with running(app):
        assert await app.job(job_id, queue).result(timeout=10) == 7


async def test_flows_schedules_and_a_task_wide_limit_work_on_a_partitioned_queue(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, partitions={queue: 4})
    fired: list[float] = []
    now = most = 0

    @app.task()
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task()
    async def tick() -> None:
        fired.append(asyncio.get_running_loop().time())

    @app.task(concurrency_limit=1)
    async def single() -> None:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0.005)
        now -= 1

    app.schedule(f"each-second-{queue}", tick, every=1)
    singles = await single.enqueue_many([((), {}) for _ in range(12)])
    # One limiter, so one partition: the limit holds exactly.
    assert len({h.queue for h in singles}) == 1
    async with running(app):
        flow = await asyncq.chain(add.s(1, 2), add.s(10), add.s(100)).enqueue()
        assert await flow.result(timeout=10) == 113
        # Found again by id alone: a flow's members, and a schedule's jobs, are in partition 0.
        assert await app.job(flow.id).result(timeout=1) == 113
        assert app.job("sched:each-second:1").queue == f"{queue}#0"
        for h in singles:
            await h.result(timeout=10)
        deadline = asyncio.get_running_loop().time() + 10
        while len(fired) < 2:
            assert asyncio.get_running_loop().time() < deadline, fired
            await asyncio.sleep(0.05)
    assert most == 1


async def test_sync_jobs_on_a_partitioned_queue_start_as_threads_free_up(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, partitions={queue: 4})

    @app.task()
    def block(seconds: float) -> None:  # a plain function: runs in the worker's thread pool
        time.sleep(seconds)

    handles = await block.enqueue_many([((0.05,), {}) for _ in range(12)])
    started = time.monotonic()
    async with running(app, queues={queue: 4}, threads=1, idle_wait=5.0):
        for h in handles:
            await h.result(timeout=30)
    took = time.monotonic() - started
    # One thread, 12 x 50 ms: 0.6 s of work (0.7 s measured). A partition's lane that finds
    # its ready job waiting for a thread must not sit out the 5 s idle wait for its queue's
    # next wake-up, several times over. (8 s: a margin for a busy machine.)
    assert took < 8, took


async def test_a_limit_override_reaches_every_partition(
    redis_server: RedisServer, queue: str
) -> None:
    app = make_app(redis_server.url, queue, partitions={queue: 3})

    @app.task(name="part:capped", concurrency_limit=5)
    async def capped(i: int) -> int:
        return i

    url = ("--url", redis_server.url)
    # A running worker declares the task's limits in every partition, and registers them.
    async with running(app):
        out = run_cli(
            "asyncq", *url, "limits", "set", "part:capped", "concurrency_limit=2", "--queue", queue
        )
        assert out.returncode == 0, out.stderr
        listing = run_cli("asyncq", *url, "limits", "--queue", queue, "--json")
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert {(r["queue"], r["effective"]["concurrency_limit"]) for r in rows} == {
        (part, 2) for part in app.partitions.names(queue)
    }
