"""Redis Cluster: ``redis+cluster://`` URLs, queues spread over several primaries, a primary
killed under load, a slot migration during a run (docs/scaling.md).

Every test runs on a real cluster of six redis-server processes on loopback (tests/cluster.py,
three primaries with a replica each). ``make test-cluster`` also runs the behaviour suites on it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncq
from tests.cluster import RedisCluster, cli, slot_of
from tests.conftest import make_app, running
from tests.failover import produce, settle
from tests.procutil import WorkerProc, sample_env


def owner(cluster: RedisCluster, slot: int) -> int:
    """Port of the primary that serves ``slot``."""
    for port in cluster.primaries():
        if any(first <= slot <= last for first, last in cluster.slots_of(port)):
            return port
    raise AssertionError(f"no primary serves slot {slot}")


def queue_on(cluster: RedisCluster, port: int, prefix: str, within: int | None = None) -> str:
    """A queue name whose keys live on the primary at ``port`` (in the first ``within`` slots
    of its first range, when given)."""
    ranges = cluster.slots_of(port)
    if within is not None:
        ranges = [(ranges[0][0], ranges[0][0] + within - 1)]
    for i in range(100_000):
        name = f"{prefix}{i}"
        slot = slot_of(f"{{{name}#0}}")
        if any(first <= slot <= last for first, last in ranges):
            return name
    raise AssertionError("no such queue name")


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    """A cluster of this test's own: these tests kill nodes and move slots."""
    c = RedisCluster()
    yield c
    c.stop()


async def test_queues_on_every_primary_run_from_one_worker(
    redis_cluster: RedisCluster,
) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    queues = [queue_on(redis_cluster, p, f"spread{i}-") for i, p in enumerate(primaries)]
    app = make_app(redis_cluster.url, queues[0])

    @app.task(name="cl:add")
    async def add(x: int, y: int) -> int:
        return x + y

    async with running(app, queues={q: 10 for q in queues}):
        await asyncio.sleep(0.3)  # every queue's wait is blocked on its own node
        handles = [await add.options(queue=q).enqueue(i, 1) for i, q in enumerate(queues)]
        assert [await h.result(timeout=10) for h in handles] == [1, 2, 3]
    for port, q in zip(primaries, queues, strict=True):
        # Each queue's keys sit on its own primary, not on the others.
        assert cli(port, "--scan", "--pattern", f"asyncq:{{{q}#0}}:*"), (port, q)


def test_a_bad_cluster_url_fails_where_it_is_written() -> None:
    for url, why in [
        ("redis+cluster:///", "no seed node"),
        ("redis+cluster://127.0.0.1/", "names no port"),
        ("redis+cluster://127.0.0.1:7000/3", "only db 0"),
        ("redis+cluster://127.0.0.1:7000/?x=1", '"x" is not supported'),
        ("redis+cluster://127.0.0.1:7000/?tls_ca=/ca.pem", "with rediss"),
        ("rediss+cluster://127.0.0.1:7000/?tls_ca=/nonexistent.pem", "cannot read tls_ca"),
    ]:
        with pytest.raises(ValueError, match=why):
            asyncq.App(url)


async def test_an_unreachable_cluster_is_a_clear_broker_error() -> None:
    app = make_app("redis+cluster://127.0.0.1:1/", "q", enqueue_timeout=1)

    @app.task(name="cl:noop")
    async def noop() -> None:
        return None

    with pytest.raises(asyncq.BrokerError) as err:
        await noop.enqueue()
    assert err.value.outcome_unknown is False


def spread_queue(cluster: RedisCluster, partitions: int, prefix: str) -> str:
    """A queue name whose partitions land on every primary."""
    owners = {p: cluster.slots_of(p) for p in cluster.primaries()}

    def owner_of(slot: int) -> int:
        return next(p for p, rs in owners.items() if any(a <= slot <= b for a, b in rs))

    for i in range(10_000):
        name = f"{prefix}{i}"
        if len({owner_of(slot_of(f"{{{name}#{p}}}")) for p in range(partitions)}) == len(owners):
            return name
    raise AssertionError("no such queue name")


def _clients(port: int) -> list[dict[str, str]]:
    """``CLIENT LIST`` of the node at ``port``, one dict of fields per client."""
    lines = cli(port, "CLIENT", "LIST").splitlines()
    return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in lines]


async def test_an_idle_worker_waits_on_each_node_once_and_wakes_at_once(
    cluster: RedisCluster,
) -> None:
    # A cluster of this test's own, so that every client on it is this test's.
    queue = spread_queue(cluster, 12, "idle")
    app = make_app(cluster.url, queue, partitions={queue: 12})
    per_node: dict[int, int] = {}
    for p in range(12):
        port = owner(cluster, slot_of(f"{{{queue}#{p}}}"))
        per_node[port] = per_node.get(port, 0) + 1

    @app.task(name="cl:echo")
    async def echo(x: int) -> int:
        return x

    async with running(app, queues={queue: 4}):
        await asyncio.sleep(1.0)  # idle: every partition's lane has fetched nothing and waits
        for port, partitions in per_node.items():
            clients = _clients(port)
            # No BLPOP anywhere: a cluster BLPOP keeps to one slot, so it would take a
            # connection per partition.
            assert not [c for c in clients if c.get("cmd") == "blpop"], (port, clients)
            # One subscription connection per node hears the node's every partition.
            subscribers = [c for c in clients if int(c.get("ssub", "0")) > 0]
            assert [int(c["ssub"]) for c in subscribers] == [partitions], (port, clients)
        # Each job lands on an idle partition and is woken by its note, not found by the
        # fallback look every 1.5 s: twenty one after another would take ~15 s that way and
        # take well under a second here; 8 s leaves room for a loaded machine.
        began = time.monotonic()
        for i in range(20):
            assert await (await echo.enqueue(i)).result(timeout=10) == i
        took = time.monotonic() - began
        print(f"\nCLUSTER idle worker: 20 jobs one after another in {took:.2f} s")
        assert took < 8.0, took


# `make cluster-failover` runs the kill test at the scale: 100,000 short jobs.
FAILOVER_JOBS = int(os.environ.get("ASYNCQ_FAILOVER_JOBS", "2000"))
FAILOVER_SLEEP = float(os.environ.get("ASYNCQ_FAILOVER_SLEEP", "0.05"))


@pytest.mark.timeout(120 + FAILOVER_JOBS // 200)
async def test_workers_and_producers_follow_a_primary_killed_under_load(
    cluster: RedisCluster, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    queue = spread_queue(cluster, 8, "orders")
    partitions = {queue: 8}
    # One of the primaries that serve some of the queue's partitions dies.
    victim = owner(cluster, slot_of(f"{{{queue}#0}}"))
    on_victim = {
        f"{queue}#{p}" for p in range(8) if owner(cluster, slot_of(f"{{{queue}#{p}}}")) == victim
    }
    # Enqueues wait for their replica (WAIT 1), so the replica that takes over has them all.
    app = make_app(cluster.url, queue, wait_replicas=1, enqueue_timeout=3, partitions=partitions)

    @app.task(name="sample:sleep")  # run by the workers' sample app (tests/apps/sample.py)
    async def sleep(seconds: float) -> dict[str, int]:
        raise AssertionError("runs in the workers")

    # A backlog the workers are still working through when the primary dies (at 50 ms a job,
    # 2 x 8 at once: about 300 jobs/s).
    acked: list[Any] = []
    for start in range(0, FAILOVER_JOBS, 10_000):
        n = min(10_000, FAILOVER_JOBS - start)
        acked.extend(await sleep.enqueue_many([((FAILOVER_SLEEP,), {}) for _ in range(n)]))
    env = sample_env(cluster.url, queue, 2.0)
    env["ASYNCQ_TEST_PARTITIONS"] = f"{queue}=8"
    procs.extend(WorkerProc(tmp_path, env, "-c", "8", name=f"w{i}") for i in range(2))
    for p in procs:
        p.started(20)
    refused: list[str] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(sleep, acked, refused, stop, [queue], 0.02))
    await asyncio.sleep(2)
    heir = cluster.replica_of(victim)
    killed_at = time.time()
    cluster.kill(victim)
    # The replica is promoted once the other primaries agree the victim failed (node timeout
    # 2 s, then an election).
    deadline = time.monotonic() + 30
    while not cli(heir, "ROLE").startswith("master"):
        assert time.monotonic() < deadline, "the replica was not promoted"
        await asyncio.sleep(0.1)
    failover_s = time.time() - killed_at
    await asyncio.sleep(4)
    stop.set()
    await producer
    lost, done = await settle(acked, 60 + FAILOVER_JOBS / 100)
    after = [i for i in done if i.queue in on_victim and (i.started_at or 0) > killed_at]
    resumed_s = min(i.finished_at or 0 for i in after) - killed_at
    print(
        f"\nCLUSTER primary killed: {len(acked)} enqueues acknowledged (WAIT 1) to 8 partitions"
        f" ({len(on_victim)} on the victim), {lost} lost; {len(refused)} not acknowledged"
        f" meanwhile; the cluster promoted its replica in {failover_s:.1f} s; the victim's"
        f" partitions resumed {resumed_s:.1f} s after the kill"
    )
    assert lost == 0
    assert resumed_s <= 10, resumed_s
    assert all(p.proc.poll() is None for p in procs)


async def test_a_slot_migration_during_a_run_causes_no_error_in_user_code(
    cluster: RedisCluster, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    primaries = cluster.primaries()
    source, target = primaries[0], primaries[1]
    # redis-cli moves a source's slots from its lowest up: the queue's is among the first 100.
    queue = queue_on(cluster, source, "moving-", within=100)
    slot = slot_of(f"{{{queue}#0}}")
    app = make_app(cluster.url, queue, enqueue_timeout=10)

    @app.task(name="sample:sleep")
    async def sleep(seconds: float) -> dict[str, int]:
        raise AssertionError("runs in the workers")

    env = sample_env(cluster.url, queue, 2.0)
    procs.extend(WorkerProc(tmp_path, env, "-c", "8", name=f"w{i}") for i in range(2))
    for p in procs:
        p.started(20)
    acked: list[Any] = list(await sleep.enqueue_many([((0.02,), {}) for _ in range(500)]))
    refused: list[str] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(sleep, acked, refused, stop, [queue], 0.02))
    await asyncio.sleep(1)

    # The source's first 100 slots move to the target, the queue's among them, keys and all.
    def reshard() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"127.0.0.1:{source}",
                "--cluster-from",
                cli(source, "CLUSTER", "MYID"),
                "--cluster-to",
                cli(target, "CLUSTER", "MYID"),
                "--cluster-slots",
                "100",
                "--cluster-yes",
                "--cluster-pipeline",
                "100",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    result: list[subprocess.CompletedProcess[str]] = []
    mover = threading.Thread(target=lambda: result.append(reshard()))
    started = time.monotonic()
    mover.start()
    while mover.is_alive():
        await asyncio.sleep(0.2)
    moved_s = time.monotonic() - started
    assert result[0].returncode == 0, result[0].stdout[-2000:] + result[0].stderr[-2000:]
    assert owner(cluster, slot) == target
    await asyncio.sleep(2)
    stop.set()
    await producer
    lost, done = await settle(acked, 60)
    print(
        f"\nCLUSTER reshard of 100 slots, the queue's among them ({moved_s:.1f} s) during a run:"
        f" {len(acked)} enqueues, {len(refused)} refused, {lost} lost"
    )
    assert refused == [] and lost == 0
    assert all(p.proc.poll() is None for p in procs)
    # Nothing the workers did failed: every job succeeded on its first attempt or after a
    # lease expiry, never by raising.
    assert all(i.error is None for i in done)


async def test_a_tls_cluster_runs_jobs_over_tls_only() -> None:
    # Every node listens on TLS only (port 0 for plain TCP), and the cluster bus and
    # replication run over TLS too: each connection asyncq makes (the cluster connection, a
    # blocking wait, pub/sub, a WAIT's dedicated one) must come up with the URL's CA.
    tls = RedisCluster(primaries=3, replicas=1, tls=True)
    try:
        queue = spread_queue(tls, 3, "tls")
        app = make_app(tls.url, queue, partitions={queue: 3}, wait_replicas=1)

        @app.task(name="cl:add")
        async def add(x: int, y: int) -> int:
            return x + y

        async with running(app):
            handles = await add.enqueue_many([((i, 1), {}) for i in range(6)])
            assert [await h.result(timeout=10) for h in handles] == [i + 1 for i in range(6)]
        plain = make_app(tls.url.replace("rediss+", "redis+").partition("?")[0], queue)

        @plain.task(name="cl:add")
        async def add2(x: int, y: int) -> int:
            return x + y

        with pytest.raises(asyncq.BrokerError):  # a plain connection to a TLS port
            await add2.options().enqueue(1, 1)
    finally:
        tls.stop()
