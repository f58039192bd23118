"""Races between the worker's shutdown or heartbeats and its jobs (issue 8), on both brokers."""

from __future__ import annotations

import asyncio
import collections
import logging
import random

import pytest

from tests.conftest import make_app, running

pytestmark = pytest.mark.timeout(120)


async def test_stop_now_while_fetching_leaves_no_job_leased(broker_url: str, queue: str) -> None:
    """An immediate stop that cancels a fetch in flight must hand its batch back at once: no
    job stays `running` once the worker returned, and none reruns as a second attempt."""
    # A lease and reaper far longer than the test: only a hand-back can requeue a job.
    app = make_app(broker_url, queue, lease=60.0, reaper=60.0)
    runs: collections.Counter[int] = collections.Counter()

    @app.task
    async def quick(i: int) -> int:
        runs[i] += 1
        await asyncio.sleep(0)
        return i

    handles = await quick.enqueue_many([((i,), {}) for i in range(2000)])
    rng = random.Random(8)
    for round_ in range(100):
        # Small concurrency: every finished job starts a new fetch, so one is nearly always
        # on the wire when the stop lands.
        worker = app.worker(concurrency=2, handle_signals=False)
        task = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(worker.ready.wait(), 30)
        await asyncio.sleep(rng.uniform(0.0, 0.02))
        worker.stop(now=True)
        await asyncio.wait_for(task, 30)
        counts = await app.broker.counts(queue)
        assert counts.get("running", 0) == 0, f"round {round_}: {counts}"
    async with running(app):
        assert [await h.result(timeout=30) for h in handles] == list(range(2000))
    infos = [await h.info() for h in handles]
    # A job cancelled mid-run is released, its attempt not counted; nothing waited out a lease.
    assert {i.attempts for i in infos if i is not None} == {1}
    assert (await app.broker.counts(queue)).get("dead", 0) == 0


async def test_fast_heartbeats_never_report_finished_jobs_lost(
    broker_url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Heartbeats every 5 ms cross the flusher's acks all the time; none of these finished
    jobs may be reported lost or refused."""
    app = make_app(broker_url, queue, lease=30.0, heartbeat=0.005)

    @app.task
    async def noop(i: int) -> int:
        return i

    handles = await noop.enqueue_many([((i,), {}) for i in range(3000)])
    with caplog.at_level(logging.WARNING, logger="asyncq"):
        async with running(app, concurrency=50):
            assert [await h.result(timeout=60) for h in handles[::300]] == list(range(0, 3000, 300))
            while (await app.broker.counts(queue)).get("succeeded_total", 0) < 3000:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.05)  # a few more heartbeats after the last ack
    events = [getattr(r, "event", "") for r in caplog.records]
    assert [e for e in events if e in ("job.lease_lost", "job.gone", "job.refused")] == []
