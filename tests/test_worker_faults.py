"""A task must never crash, stall or starve its worker (issue 7, points 1-4 and 13).

Process-level where the defect was: a real ``asyncq-worker`` subprocess serving
``tests.apps.faulty``, against a private redis-server; in-process on both brokers otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import asyncq
from asyncq.log import configure_logging
from tests.apps import faulty
from tests.conftest import RedisServer, make_app, running
from tests.procutil import WorkerProc, read_ledger, sample_env

pytestmark = pytest.mark.timeout(60)

FAULTY = "tests.apps.faulty:app"


def start_worker(
    tmp_path: Path, url: str, queue: str, ledger: Path, *args: str, name: str = "worker"
) -> WorkerProc:
    env = sample_env(url, queue, 2.0, ledger)
    return WorkerProc(tmp_path, env, *args, name=name, app=FAULTY).started()


async def dead_error(handle: asyncq.JobHandle[Any]) -> asyncq.JobFailed:
    with pytest.raises(asyncq.JobFailed) as err:
        await handle.result(timeout=20)
    return err.value


async def test_base_exceptions_fail_the_job_and_the_worker_lives_on(
    redis_server: RedisServer, queue: str, tmp_path: Path, ledger: Path, procs: list[WorkerProc]
) -> None:
    """sys.exit (async and sync), KeyboardInterrupt, a custom BaseException and a task's own
    CancelledError each fail their job with a clear reason; retries apply, then the DLQ; the one
    worker process survives all of them and still runs the next job."""
    app = faulty.build(redis_server.url, queue)
    worker = start_worker(tmp_path, redis_server.url, queue, ledger)
    procs.append(worker)
    t = app.tasks
    handles = {
        "exit_async": await t["faulty:exit_async"].enqueue(3),
        "exit_sync": await t["faulty:exit_sync"].enqueue(4),
        "interrupt": await t["faulty:interrupt"].enqueue(),
        "custom": await t["faulty:custom_base"].enqueue(),
        "self_cancel": await t["faulty:self_cancel"].enqueue(),
    }
    errors = {name: await dead_error(h) for name, h in handles.items()}
    assert errors["exit_async"].type == "SystemExit"
    assert "sys.exit(3)" in errors["exit_async"].message
    assert errors["exit_sync"].type == "SystemExit"
    assert "sys.exit(4)" in errors["exit_sync"].message
    assert errors["interrupt"].type == "KeyboardInterrupt"
    assert errors["custom"].type == "Custom"
    assert errors["custom"].message == "custom base exception"
    assert errors["self_cancel"].type == "CancelledError"
    assert all(e.reason == "exception" for e in errors.values())
    assert "sys.exit(code)" in errors["exit_async"].traceback
    # retries=1: two attempts each, both in the same (surviving) worker process.
    for name in ("exit_async", "exit_sync", "interrupt"):
        info = await handles[name].info()
        assert info is not None and info.state == "dead" and info.attempts == 2, name
    pids = {pid for _, _, _, pid in read_ledger(ledger)}
    assert pids == {worker.pid}
    assert worker.proc.poll() is None, worker.log()
    assert await (await t["faulty:ok"].enqueue(7)).result(timeout=10) == 7
    counts = await app.broker.counts(queue)
    assert counts.get("running", 0) == 0 and counts["dead"] == 5


async def test_os_exit_stays_contained_by_stall_counting(
    redis_server: RedisServer, queue: str, tmp_path: Path, ledger: Path, procs: list[WorkerProc]
) -> None:
    """os._exit() cannot be caught: each run kills its worker. Stall counting still ends it:
    after three runs the job is dead-lettered (reason lease_expired) instead of looping."""
    app = faulty.build(redis_server.url, queue, lease=1.0)
    handle = await app.tasks["faulty:hard_exit"].enqueue()
    env = sample_env(redis_server.url, queue, 1.0, ledger)
    for i in range(3):
        victim = WorkerProc(tmp_path, env, name=f"victim{i}", app=FAULTY)
        procs.append(victim)
        # Each waits out the previous run's lease (1 s) before its reaper hands the job over.
        assert victim.wait(30) == 7, victim.log()
    async with running(app):  # its reaper records the third stall
        err = await dead_error(handle)
    assert err.reason == "lease_expired"
    assert [a for what, _, a, _ in read_ledger(ledger) if what == "start"] == [1, 2, 3]


async def test_unprintable_exception_still_ends_the_job(broker_url: str, queue: str) -> None:
    """An exception whose __str__ and __repr__ raise: the job is failed, retried, dead-lettered
    with a stand-in message; it does not stay `running` with a lease renewed forever."""
    app = faulty.build(broker_url, queue)
    async with running(app):
        handle = await app.tasks["faulty:unprintable"].enqueue()
        err = await dead_error(handle)
    assert err.type == "Unprintable" and err.reason == "exception"
    assert "unprintable" in err.message
    info = await handle.info()
    assert info is not None and info.state == "dead" and info.attempts == 2
    assert not await handle.cancel()  # finished: cancel says so instead of pretending


class _ExitingHook(asyncq.Middleware):
    """Hooks that break the worker's own paths (SystemExit is no Exception, so the hook runner
    does not swallow it)."""

    async def after_execute(self, ctx: asyncq.JobContext) -> None:
        if ctx.task == "boom":
            raise SystemExit("hook gives up")

    async def on_success(self, ctx: asyncq.JobContext, result: Any) -> None:
        raise SystemExit("too late to matter")


async def test_error_path_that_raises_still_records_an_outcome(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue, middleware=[_ExitingHook()])

    @app.task(name="boom")
    async def boom() -> None:
        raise ValueError("boom")

    @app.task(name="fine")
    async def fine() -> str:
        return "fine"

    async with running(app):
        handle = await boom.enqueue()
        err = await dead_error(handle)
        assert err.reason == "worker_error"
        assert "SystemExit" in err.type and "hook gives up" in err.message
        # The same hook breaks the success path after the ack: the result stands.
        assert await (await fine.enqueue()).result(timeout=10) == "fine"
    counts = await app.broker.counts(queue)
    assert counts.get("running", 0) == 0


async def test_sync_timeout_counts_from_the_start_of_execution(
    redis_server: RedisServer, queue: str, tmp_path: Path, ledger: Path, procs: list[WorkerProc]
) -> None:
    """--threads 1 -c 5: four 1.5 s jobs with a 2 s timeout all succeed (they take turns on the
    one thread; waiting for it is not execution time)."""
    app = faulty.build(redis_server.url, queue)
    procs.append(
        start_worker(tmp_path, redis_server.url, queue, ledger, "--threads", "1", "-c", "5")
    )
    task = app.tasks["faulty:sleep_sync"]
    handles = await task.enqueue_many([((1.5,), {}) for _ in range(4)])
    for h in handles:
        assert isinstance(await h.result(timeout=30), int)


async def test_sync_jobs_are_not_hoarded_by_one_worker(
    redis_server: RedisServer, queue: str, tmp_path: Path, ledger: Path, procs: list[WorkerProc]
) -> None:
    """Two workers with 2 threads each: neither leases more sync jobs than it can start, so
    both share the work (before the fix the first leased all 12 and the other sat idle)."""
    app = faulty.build(redis_server.url, queue)
    for name in ("w1", "w2"):
        procs.append(
            start_worker(tmp_path, redis_server.url, queue, ledger, "--threads", "2", name=name)
        )
    handles = await app.tasks["faulty:sleep_sync"].enqueue_many([((0.5,), {}) for _ in range(12)])
    pids = collections.Counter([await h.result(timeout=30) for h in handles])
    assert set(pids) == {procs[0].pid, procs[1].pid}, pids
    # Each holds at most 2 at a time; 12 jobs of 0.5 s cannot all go to one worker unless the
    # other never fetched. A floor of 2 leaves room for start-up skew on a busy machine.
    assert min(pids.values()) >= 2, pids


async def test_thread_timeout_is_explicit_and_keeps_its_slot(broker_url: str, queue: str) -> None:
    """A sync task past its timeout fails with a record that says its thread may still run;
    the thread's slot stays busy until the function returns, so with one thread the next sync
    job starts only then."""
    app = faulty.build(broker_url, queue)
    task = app.tasks["faulty:hang_sync"]
    async with running(app, threads=1) as worker:
        handle = await task.enqueue(1.5)
        err = await dead_error(handle)
        assert err.reason == "timeout" and err.type == "TimeoutError"
        assert "thread" in err.message and "executor='process'" in err.message
        assert worker._runner.pool.slots.busy == 1  # the function is still sleeping
        started = time.monotonic()
        assert await (await app.tasks["faulty:ok"].enqueue(1)).result(timeout=10) == 1
        quick = await app.tasks["faulty:sleep_sync"].enqueue(0.0)
        await quick.result(timeout=10)
        # It could only start once the hung thread returned (~1.2 s after the timeout).
        assert time.monotonic() - started > 0.5
    assert worker._runner.pool.slots.busy == 0


async def test_json_logs_carry_job_fields(
    redis_server: RedisServer, queue: str, tmp_path: Path, ledger: Path, procs: list[WorkerProc]
) -> None:
    app = faulty.build(redis_server.url, queue)
    worker = start_worker(
        tmp_path, redis_server.url, queue, ledger, "--log-format", "json", "--log-level", "debug"
    )
    procs.append(worker)
    handle = await app.tasks["faulty:exit_async"].enqueue(5)
    await dead_error(handle)
    assert await (await app.tasks["faulty:ok"].enqueue(1)).result(timeout=10) == 1
    worker.wait_log('"event": "job.succeeded"')
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    by_event = collections.defaultdict(list)
    for line in lines:
        by_event[line.get("event")].append(line)
    retry, dead = by_event["job.retrying"][0], by_event["job.failed"][0]
    for rec in (retry, dead):
        assert rec["job_id"] == handle.id and rec["task"] == "faulty:exit_async"
        assert rec["queue"] == queue and isinstance(rec["duration_ms"], float)
        assert rec["error"].startswith("SystemExit: ") and "sys.exit(code)" in rec["traceback"]
    assert (retry["attempt"], dead["attempt"]) == (1, 2)
    assert by_event["job.succeeded"][0]["attempt"] == 1
    stable = {"ts", "level", "event", "job_id", "task", "queue", "attempt", "duration_ms", "error"}
    for event in ("job.started", "job.succeeded", "job.retrying", "job.failed"):
        assert all(rec.keys() >= stable for rec in by_event[event]), event


def test_asyncio_errors_use_the_same_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    try:
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["logger"] == "asyncio" and line["level"] == "error"
    finally:
        configure_logging("info", "text")


async def test_cancel_of_a_sync_job_waiting_for_a_thread(broker_url: str, queue: str) -> None:
    """A sync job routed to a queue of async tasks waits for a thread; cancelling it then gives
    its reserved slot back (no slot leaks)."""
    app = faulty.build(broker_url, queue)
    async with running(app, threads=1) as worker:
        first = await app.tasks["faulty:sleep_sync"].enqueue(0.8)
        second = await app.tasks["faulty:sleep_sync"].enqueue(0.0)
        await first.result(timeout=10)
        await second.result(timeout=10)
        await asyncio.sleep(0.05)
        assert worker._runner.pool.slots.busy == 0


async def test_timeout_comes_from_the_envelope(broker_url: str, queue: str) -> None:
    """A producer's timeout travels with the job: a worker whose copy of the task declares
    another timeout still cancels at the enqueued one (Rust stops extending the lease there)."""
    producer = make_app(broker_url, queue)
    worker_app = make_app(broker_url, queue)

    @producer.task(name="slow", timeout=0.2)
    async def slow_p() -> None: ...

    @worker_app.task(name="slow")
    async def slow_w() -> None:
        await asyncio.sleep(30)

    async with running(worker_app):
        err = await dead_error(await slow_p.enqueue())
    assert err.reason == "timeout" and "0.2s" in err.message


async def test_a_mixed_queue_runs_async_jobs_while_its_threads_are_busy(
    broker_url: str, queue: str
) -> None:
    """A queue that mixes sync and async tasks is not fetched in batches cut to the free
    threads: with its only thread busy, async jobs are still leased and run, while a second
    sync job stays queued in the broker (free for another worker) until the thread frees up.
    (Before, the lane leased nothing at all while its threads were busy.) Prefetch is off: it
    would lease one sync job ahead per thread (next test)."""
    app = make_app(broker_url, queue)
    gate = threading.Event()

    @app.task(name="block")
    def block() -> str:
        gate.wait(20)
        return "sync"

    @app.task(name="quick")
    async def quick(i: int) -> int:
        return i

    try:
        async with running(app, threads=1, prefetch=False) as worker:
            first = await block.enqueue()
            while worker._runner.pool.slots.busy == 0:
                await asyncio.sleep(0.01)
            handles = await quick.enqueue_many([((i,), {}) for i in range(50)])
            second = await block.enqueue()
            assert [await h.result(timeout=20) for h in handles] == list(range(50))
            assert await second.status() == "queued"
            gate.set()
            assert [await first.result(timeout=10), await second.result(timeout=10)] == [
                "sync",
                "sync",
            ]
    finally:
        gate.set()


async def test_prefetch_leases_one_sync_job_ahead_per_thread(broker_url: str, queue: str) -> None:
    """With prefetch on (auto does the same while jobs run short) a worker leases one sync job
    per thread beyond what its threads can start: it waits here for a thread, and the rest stay
    queued for other workers."""
    app = make_app(broker_url, queue)
    gate = threading.Event()

    @app.task(name="block")
    def block() -> None:
        gate.wait(20)

    try:
        async with running(app, threads=1, prefetch=True) as worker:
            handles = [await block.enqueue()]
            while worker._runner.pool.slots.busy == 0:
                await asyncio.sleep(0.01)
            handles += await block.enqueue_many([((), {}) for _ in range(3)])
            # Leasing is done when the lane waits: give it time to fetch what it may.
            while worker._runner.pool.slots.busy < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            states = [await h.status() for h in handles]
            assert states == ["running", "running", "queued", "queued"], states
            assert worker._runner.pool.slots.busy == 2
            gate.set()
            for h in handles:
                await h.result(timeout=10)
    finally:
        gate.set()


async def test_async_jobs_behind_a_sync_backlog_are_not_held_by_stuck_threads(
    broker_url: str, queue: str
) -> None:
    """Sync jobs backed up behind a thread that does not finish: the lane holds its next
    fetch back only for about one short run, so an async job queued behind them still runs."""
    app = make_app(broker_url, queue)
    gate = threading.Event()

    @app.task(name="block")
    def block() -> None:
        gate.wait(20)

    @app.task(name="quick")
    async def quick() -> str:
        return "ran"

    try:
        async with running(app, threads=1, prefetch=True) as worker:
            first = await block.enqueue()
            while worker._runner.pool.slots.busy == 0:
                await asyncio.sleep(0.01)
            await block.enqueue_many([((), {}) for _ in range(5)])
            behind = await quick.enqueue()
            assert await behind.result(timeout=10) == "ran"
            assert await first.status() == "running"
            gate.set()
    finally:
        gate.set()
