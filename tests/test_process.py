"""Process-level behaviour: real worker subprocesses killed, stopped and signalled mid-job."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
from pathlib import Path

import pytest

import asyncq
from tests.apps import sample
from tests.conftest import RedisServer, running
from tests.procutil import WorkerProc, await_until, read_ledger, sample_env, wait_until

pytestmark = pytest.mark.timeout(60)

LEASE = 1.0


def starts(ledger: Path) -> collections.Counter[str]:
    return collections.Counter(j for what, j, _, _ in read_ledger(ledger) if what == "start")


async def test_sigkill_mid_job_is_rerun_after_lease_expiry(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    ledger: Path,
    procs: list[WorkerProc],
) -> None:
    app = sample.build(redis_server.url, queue, lease=LEASE)
    env = sample_env(redis_server.url, queue, LEASE, ledger)
    victim = WorkerProc(tmp_path, env, "-q", f"{queue}=4", name="victim")
    procs.append(victim)
    victim.started()
    long_job = await app.tasks["sample:sleep"].enqueue(1.0)
    wait_until(lambda: starts(ledger)[long_job.id] == 1, 10, "the job to start in the victim")
    victim.signal(signal.SIGKILL)
    assert victim.wait(5) == -signal.SIGKILL
    info = await long_job.info()
    assert info is not None and info.state == "running"

    killed_at = time.monotonic()
    async with running(app):
        result = await long_job.result(timeout=15)
    assert time.monotonic() - killed_at >= LEASE * 0.5  # not before the lease could expire
    assert result["attempt"] == 2 and result["pid"] != victim.pid
    info = await long_job.info()
    assert info is not None and info.state == "succeeded" and info.attempts == 2
    counts = await app.broker.counts(queue)
    assert counts["succeeded_total"] == 1
    assert counts.get("queued", 0) == counts.get("running", 0) == counts.get("dead", 0) == 0
    runs = [(w, a) for w, j, a, _ in read_ledger(ledger) if j == long_job.id]
    assert runs == [("start", 1), ("start", 2), ("done", 2)]


async def test_stopped_worker_late_ack_is_refused(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    ledger: Path,
    procs: list[WorkerProc],
) -> None:
    app = sample.build(redis_server.url, queue, lease=LEASE)
    env = sample_env(redis_server.url, queue, LEASE, ledger)
    frozen = WorkerProc(tmp_path, env, "-q", f"{queue}=1", name="frozen")
    procs.append(frozen)
    frozen.started()
    job = await app.tasks["sample:sleep"].enqueue(0.5)
    wait_until(lambda: starts(ledger)[job.id] == 1, 10, "the job to start in the first worker")
    frozen.signal(signal.SIGSTOP)

    async with running(app):  # takes the job over once the frozen worker's lease expires
        result = await job.result(timeout=15)
    assert result["attempt"] == 2 and result["pid"] != frozen.pid

    frozen.signal(signal.SIGCONT)  # its task finishes and acks with the stale token
    frozen.wait_log("outcome refused, the lease was stale")
    assert f"job {job.id}: outcome refused" in frozen.log()
    frozen.signal(signal.SIGTERM)
    assert frozen.wait(10) == 0
    done = [(a, pid) for w, j, a, pid in read_ledger(ledger) if w == "done" and j == job.id]
    assert sorted(done) == sorted([(1, frozen.pid), (2, result["pid"])])
    assert await job.result(timeout=1) == result  # the refused ack changed nothing
    info = await job.info()
    assert info is not None and info.state == "succeeded" and info.attempts == 2


async def test_sigterm_finishes_short_jobs_and_hands_back_the_rest(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    ledger: Path,
    procs: list[WorkerProc],
) -> None:
    grace = 1.0
    app = sample.build(redis_server.url, queue, lease=LEASE)
    env = sample_env(redis_server.url, queue, LEASE, ledger)
    worker = WorkerProc(tmp_path, env, "-q", f"{queue}=10", "--grace", str(grace))
    procs.append(worker)
    worker.started()
    sleep = app.tasks["sample:sleep"]
    short = [await sleep.enqueue(0.3) for _ in range(3)]
    long = [await sleep.enqueue(20.0) for _ in range(3)]
    wait_until(lambda: len(starts(ledger)) == 6, 10, "all six jobs to start")

    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(grace + 2) == 0
    assert time.monotonic() - t0 < grace + 2

    # Checked right after exit: handed back, not left to lease expiry.
    for h in short:
        info = await h.info()
        assert info is not None and info.state == "succeeded"
    for h in long:
        info = await h.info()
        assert info is not None
        assert (info.state, info.attempts) == ("queued", 0), h.id
    counts = await app.broker.counts(queue)
    assert counts.get("queued") == 3 and counts.get("running", 0) == 0
    assert counts["succeeded_total"] == 3
    assert set(starts(ledger).values()) == {1}  # nothing ran twice
    assert "handing running jobs back" not in worker.log()


async def test_second_sigterm_stops_at_once(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    ledger: Path,
    procs: list[WorkerProc],
) -> None:
    app = sample.build(redis_server.url, queue, lease=LEASE)
    env = sample_env(redis_server.url, queue, LEASE, ledger)
    worker = WorkerProc(tmp_path, env, "-q", f"{queue}=10", "--grace", "30")
    procs.append(worker)
    worker.started()
    jobs = [await app.tasks["sample:sleep"].enqueue(20.0) for _ in range(2)]
    wait_until(lambda: len(starts(ledger)) == 2, 10, "both jobs to start")

    worker.signal(signal.SIGTERM)
    worker.wait_log("SIGTERM: finishing running jobs")
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(5) == 0
    assert time.monotonic() - t0 < 3
    assert "second SIGTERM: stopping now" in worker.log()
    for h in jobs:
        info = await h.info()
        assert info is not None and (info.state, info.attempts) == ("queued", 0)
    assert set(starts(ledger).values()) == {1}


@pytest.mark.timeout(90)
async def test_script_flush_while_processing(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    ledger: Path,
    procs: list[WorkerProc],
) -> None:
    n = 3000
    app = sample.build(redis_server.url, queue, lease=LEASE)
    env = sample_env(redis_server.url, queue, LEASE)
    worker = WorkerProc(tmp_path, env, "-q", f"{queue}=50")
    procs.append(worker)
    worker.started()
    noop = app.tasks["sample:noop"]
    handles: list[asyncq.JobHandle[int]] = []
    flushes = 0

    def flush() -> None:
        nonlocal flushes
        subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "SCRIPT", "FLUSH"],
            check=True,
            capture_output=True,
        )
        flushes += 1

    # Flush between waves of work, so the worker and the producer both meet an empty cache
    # in the middle of processing, whatever the speed of the build under test.
    for start in range(0, n, 500):
        handles += await noop.enqueue_many([((i,), {}) for i in range(start, start + 500)])
        flush()
        await asyncio.sleep(0.02)

    async def all_done() -> bool:
        flush()
        return (await app.broker.counts(queue)).get("succeeded_total", 0) >= n

    await await_until(all_done, 60, f"{n} jobs to succeed")
    assert flushes >= 5, "the cache was not flushed while the worker ran"
    counts = await app.broker.counts(queue)
    assert counts["succeeded_total"] == n
    assert counts.get("failed_total", 0) == counts.get("dead", 0) == 0
    assert [await h.result(timeout=5) for h in handles[:: n // 10]] == list(range(0, n, n // 10))
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    bad = [
        ln
        for ln in worker.log().splitlines()
        if (" ERROR " in ln or " WARNING " in ln) and "persistence is off" not in ln
    ]
    assert bad == []


async def test_sigterm_exits_as_soon_as_jobs_finish(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    ledger: Path,
    procs: list[WorkerProc],
) -> None:
    app = sample.build(redis_server.url, queue, lease=LEASE)
    env = sample_env(redis_server.url, queue, LEASE, ledger)
    worker = WorkerProc(tmp_path, env, "-q", f"{queue}=10", "--grace", "30")
    procs.append(worker)
    worker.started()
    jobs = [await app.tasks["sample:sleep"].enqueue(0.5) for _ in range(3)]
    wait_until(lambda: len(starts(ledger)) == 3, 10, "the jobs to start")
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert time.monotonic() - t0 < 3, "waited for the whole grace period"
    assert [await h.status() for h in jobs] == ["succeeded"] * 3
