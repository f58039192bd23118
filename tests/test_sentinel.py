"""Redis Sentinel: ``redis+sentinel://`` URLs reach the primary the sentinels name, and workers
and producers follow a failover without a restart (docs/scaling.md).

Every test runs on a real deployment of redis-server processes on loopback (tests/sentinel.py):
a primary and a replica with passwords, and three password-protected sentinels.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncq
from tests.conftest import make_app, running
from tests.failover import produce, settle
from tests.procutil import WorkerProc, sample_env
from tests.sentinel import DATA_PASSWORD, SENTINEL_PASSWORD, SERVICE, Sentinels, cli


@pytest.fixture(scope="module")
def sentinels() -> Iterator[Sentinels]:
    deployment = Sentinels()
    yield deployment
    deployment.stop()


async def test_a_sentinel_url_reaches_the_primary_and_runs_jobs(
    sentinels: Sentinels, queue: str
) -> None:
    app = make_app(sentinels.url, queue)

    @app.task(name="sen:add")
    async def add(x: int, y: int) -> int:
        return x + y

    async with running(app):
        handle = await add.enqueue(2, 3)
        assert await handle.result(timeout=10) == 5
    assert sentinels.primary is not None
    # Written on the primary the sentinels named, and replicated from there.
    assert int(cli(sentinels.primary.port, DATA_PASSWORD, "DBSIZE")) > 0


@pytest.mark.parametrize(
    "url, why",
    [
        ("redis+sentinel://127.0.0.1:26379", "no service"),
        ("redis+sentinel://127.0.0.1:26379/", "no service"),
        ("redis+sentinel://127.0.0.1:http/mymaster", "bad sentinel port"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/x", "bad db"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/0?tls=1", "unknown option"),
        ("redis+sentinel:///mymaster", "no sentinel address"),
        ("redis+sentinel://127.0.0.1:26379/mymaster?tls_ca=/dev/null", "need rediss\\+sentinel"),
        ("rediss+sentinel://127.0.0.1:26379/mymaster?tls_ca=/no/ca.pem", "cannot read tls_ca"),
    ],
)
def test_a_bad_sentinel_url_fails_where_it_is_written(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        asyncq.App(url)


@pytest.mark.parametrize(
    "change, why",
    [
        ((f"/{SERVICE}/", "/nosuch/"), "not found in sentinel"),
        ((f"sentinel_password={SENTINEL_PASSWORD}", "sentinel_password=wrong"), "authentication"),
        ((f":{DATA_PASSWORD}@", ":wrong@"), "uthentication|WRONGPASS|invalid"),
    ],
    ids=["unknown-service", "sentinel-password", "primary-password"],
)
async def test_a_wrong_service_or_password_is_a_clear_broker_error(
    sentinels: Sentinels, queue: str, change: tuple[str, str], why: str
) -> None:
    app = make_app(sentinels.url.replace(*change), queue, enqueue_timeout=2)

    @app.task(name="sen:noop")
    async def noop() -> None:
        return None

    with pytest.raises(asyncq.BrokerError, match=why) as err:
        await noop.enqueue()
    assert err.value.outcome_unknown is False


async def test_wait_replicas_confirms_each_enqueue_and_says_when_it_cannot(
    sentinels: Sentinels, queue: str
) -> None:
    app = make_app(sentinels.url, queue, wait_replicas=1, wait_timeout=0.3)

    @app.task(name="sen:add")
    async def add(x: int, y: int) -> int:
        return x + y

    handle = await add.enqueue(1, 2)  # the replica confirms at once
    assert sentinels.replica is not None and sentinels.replica.proc is not None
    # A stopped replica confirms nothing: the enqueue is written but not acknowledged as
    # replicated, and says so. (0.3 s is far below the 1 s after which sentinels would even
    # call the replica down; no failover follows.)
    sentinels.replica.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(asyncq.BrokerError, match="0 of 1 replica") as err:
            await add.enqueue(3, 4)
    finally:
        sentinels.replica.proc.send_signal(signal.SIGCONT)
    assert err.value.outcome_unknown is True
    (unconfirmed,) = err.value.job_ids
    assert await app.job(unconfirmed).info() is not None  # on the primary all the same
    assert await app.job(handle.id).info() is not None
    with pytest.raises(ValueError, match="wait_replicas needs a Redis URL"):
        asyncq.App("memory://", wait_replicas=1)


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_workers_and_producers_follow_a_failover_under_load(
    tmp_path: Path, queue: str, procs: list[WorkerProc], wait_replicas: int
) -> None:
    deployment = Sentinels()
    try:
        await _failover_run(deployment, tmp_path, queue, procs, wait_replicas)
    finally:
        deployment.stop()


async def _failover_run(
    deployment: Sentinels, tmp_path: Path, queue: str, procs: list[WorkerProc], wait_replicas: int
) -> None:
    app = make_app(deployment.url, queue, wait_replicas=wait_replicas, enqueue_timeout=2)

    @app.task(name="sample:sleep")  # run by the workers' sample app (tests/apps/sample.py)
    async def sleep(seconds: float) -> dict[str, int]:
        raise AssertionError("runs in the workers")

    # A backlog the workers (2 x 8 at once, 50 ms each: about 300 jobs/s) are still working
    # through when the primary dies, and a producer that keeps enqueueing through it all.
    acked = list(await sleep.enqueue_many([((0.05,), {}) for _ in range(1200)]))
    env = sample_env(deployment.url, queue, 2.0)
    procs.extend(WorkerProc(tmp_path, env, "-c", "8", name=f"w{i}") for i in range(2))
    for p in procs:
        p.started(20)
    refused: list[str] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(sleep, acked, refused, stop, [queue], 0.05))
    await asyncio.sleep(2)
    killed_at = time.time()
    new_port = deployment.kill_primary()
    failover_s = deployment.wait_failover(new_port)
    # Time for the backlog to drain and the producer to go on past the failover.
    await asyncio.sleep(4)
    stop.set()
    await producer
    # Every acknowledged job runs to its end, or is counted lost when the new primary never
    # heard of it.
    lost, done = await settle(acked, 60)
    leased_after = [i for i in done if i.started_at is not None and i.started_at > killed_at]
    # Consumption resumed: the first job the new primary leased finished this long after the
    # primary died (it includes the sentinels' 1 s down-after and their election).
    resumed_s = min(i.finished_at or 0 for i in leased_after) - killed_at
    print(
        f"\nSENTINEL failover, wait_replicas={wait_replicas}: {len(acked)} enqueues acknowledged,"
        f" {lost} lost; {len(refused)} refused while the primary was away; sentinels agreed in"
        f" {failover_s:.1f} s; consumption resumed {resumed_s:.1f} s after the kill"
    )
    if wait_replicas:
        assert lost == 0
    assert resumed_s <= 10, resumed_s
    # Both workers followed the failover without a restart.
    assert all(p.proc.poll() is None for p in procs)
    pids = {(await app.job(i.id).result(timeout=1))["pid"] for i in leased_after}
    assert pids == {p.pid for p in procs}


@pytest.fixture(scope="module")
def tls_sentinels() -> Iterator[Sentinels]:
    deployment = Sentinels(tls=True)
    yield deployment
    deployment.stop()


async def test_rediss_sentinel_speaks_tls_to_sentinels_and_primary_with_a_client_cert(
    tls_sentinels: Sentinels, queue: str
) -> None:
    app = make_app(tls_sentinels.url, queue)

    @app.task(name="sen:add")
    async def add(x: int, y: int) -> int:
        return x + y

    async with running(app):
        assert await (await add.enqueue(2, 3)).result(timeout=10) == 5
    primary = tls_sentinels.primary
    assert primary is not None
    # What the sentinels name is the primary's TLS port: nothing else was there to reach.
    assert tls_sentinels.named_primary() == tls_sentinels.port_of(primary) != primary.port
    assert int(cli(primary.port, DATA_PASSWORD, "DBSIZE")) > 0


@pytest.mark.parametrize("drop", ["client-cert", "tls"])
async def test_a_tls_sentinel_deployment_refuses_a_client_without_tls_or_a_certificate(
    tls_sentinels: Sentinels, queue: str, drop: str
) -> None:
    d = tls_sentinels.dir
    url = tls_sentinels.url.replace(f"&tls_cert={d}/server.pem&tls_key={d}/server.key", "")
    if drop == "tls":
        url = url.replace("rediss+", "redis+").split("&tls_ca=")[0]
    app = make_app(url, queue, enqueue_timeout=2)

    @app.task(name="sen:noop")
    async def noop() -> None:
        return None

    with pytest.raises(asyncq.BrokerError) as err:
        await noop.enqueue()
    assert err.value.outcome_unknown is False


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_switchover_is_followed_while_the_old_primary_lives_on(
    queue: str, tls: bool
) -> None:
    # The old primary stays up as a replica: nothing breaks the connections to it, writes on
    # them would only be refused (READONLY). The watchdog asks the sentinels which server is
    # the primary and moves over.
    deployment = Sentinels(tls=tls)
    try:
        app = make_app(deployment.url, queue)

        @app.task(name="sen:add")
        async def add(x: int, y: int) -> int:
            return x + y

        async with running(app):
            assert await (await add.enqueue(1, 1)).result(timeout=10) == 2
            assert deployment.replica is not None
            new_port = deployment.replica.port
            assert deployment.sentinel(0, "SENTINEL", "FAILOVER", SERVICE) == "OK"
            deployment.wait_failover(deployment.port_of(deployment.replica))
            # Until the sentinels turn the old primary into a replica, it still takes writes
            # (what it takes then is lost when it resyncs: Sentinel's own window, see
            # docs/scaling.md). Once it refuses them, an enqueue must find the new primary.
            old = deployment.primary
            assert old is not None
            deadline = time.monotonic() + 20
            while cli(old.port, DATA_PASSWORD, "ROLE").split("\n")[0] != "slave":
                assert time.monotonic() < deadline, "the old primary was not demoted"
                await asyncio.sleep(0.1)
            started = time.monotonic()
            handle = await add.enqueue(2, 2)
            assert await handle.result(timeout=10) == 4
            print(f"\nSENTINEL switchover followed in {time.monotonic() - started:.1f} s")
        assert cli(new_port, DATA_PASSWORD, "ROLE").split("\n")[0] == "master"
    finally:
        deployment.stop()


async def test_a_new_primary_named_by_the_sentinels_is_followed_while_the_old_takes_writes(
    queue: str,
) -> None:
    # The sentinels name another server while the old primary stays writable and keeps every
    # connection (as when a partition cuts it off from the sentinels but not from clients).
    # Nothing fails on the old connections, so only the watchdog's question to the sentinels
    # moves producers and workers over.
    deployment = Sentinels()
    try:
        app = make_app(deployment.url, queue)

        @app.task(name="sen:add")
        async def add(x: int, y: int) -> int:
            return x + y

        async with running(app):
            assert await (await add.enqueue(1, 1)).result(timeout=10) == 2
            assert deployment.replica is not None
            new_port = deployment.replica.port
            assert cli(new_port, DATA_PASSWORD, "REPLICAOF", "NO", "ONE") == "OK"
            for i in range(3):
                assert deployment.sentinel(i, "SENTINEL", "REMOVE", SERVICE) == "OK"
                deployment.sentinel(
                    i, "SENTINEL", "MONITOR", SERVICE, "127.0.0.1", str(new_port), "2"
                )
                deployment.sentinel(i, "SENTINEL", "SET", SERVICE, "auth-pass", DATA_PASSWORD)
            deployment.wait_failover(new_port)
            started = time.monotonic()
            # Probes go to the old primary until the watchdog notices (it asks every 0.5 s).
            while True:
                probe = await add.enqueue(0, 0)
                found = cli(new_port, DATA_PASSWORD, "--scan", "--pattern", f"*{probe.id}*")
                if found:
                    break
                assert time.monotonic() - started < 5, "still writing to the old primary"
                await asyncio.sleep(0.1)
            moved_s = time.monotonic() - started
            handle = await add.enqueue(3, 3)
            assert await handle.result(timeout=10) == 6  # the worker moved too
            print(f"\nSENTINEL new primary followed in {moved_s:.1f} s")
    finally:
        deployment.stop()
