"""Progress reports and event streams, on both brokers: reports from async, thread and process
tasks; a job's events from queued to its ending, retries included; a queue's live stream;
history read back from the record; bad reports refused with a clear error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import asyncq
from asyncq.context import check_progress
from tests.apps import proc_tasks
from tests.conftest import RedisServer, make_app, running

# Reports are sent in the background; results wait this long at most on a loaded machine.
WAIT = 20.0


@pytest.fixture
def ev_app(broker_url: str, queue: str) -> asyncq.App:
    app = make_app(broker_url, queue)

    @app.task(name="ev:async_steps")
    async def async_steps(steps: int) -> int:
        job = asyncq.current_job()
        for i in range(1, steps + 1):
            await asyncio.sleep(0.05)
            job.progress(i / steps, f"step {i} of {steps}")
        return steps

    app.task(name="ev:thread_steps")(proc_tasks.report_steps)
    app.task(name="ev:process_steps", executor="process")(proc_tasks.report_steps)

    attempts: dict[str, int] = {}

    @app.task(name="ev:flaky", retries=2, backoff=asyncq.Exponential(base=0.05, cap=0.05))
    async def flaky(key: str) -> str:
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    @app.task(name="ev:gated")
    async def gated() -> str:
        asyncq.current_job().progress(0.5, "half")
        await asyncio.sleep(0.2)
        return "done"

    return app


def task(app: asyncq.App, name: str) -> asyncq.Task[Any, Any]:
    return app.tasks[f"ev:{name}"]


@pytest.mark.parametrize("kind", ["async_steps", "thread_steps", "process_steps"])
async def test_progress_reports_reach_the_handle_from_every_executor(
    ev_app: asyncq.App, kind: str
) -> None:
    async with running(ev_app, processes=1):
        h = await task(ev_app, kind).enqueue(4)
        assert await h.result(timeout=WAIT) == 4
    latest = await h.progress()
    assert latest is not None
    # The last report is flushed before the ack, so it is always there; earlier ones may have
    # been merged into later ones (reports faster than flushes), never reordered.
    assert (latest.fraction, latest.message) == (1.0, "step 4 of 4")
    info = await h.info()
    assert info is not None
    fractions = [f for _, f, _ in info.progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(at <= (info.finished_at or 0) for at, _, _ in info.progress)


async def test_a_job_that_reports_nothing_has_no_progress(ev_app: asyncq.App) -> None:
    async with running(ev_app):
        h = await task(ev_app, "flaky").enqueue("quiet")
        assert await h.result(timeout=WAIT) == "ok"
    assert await h.progress() is None


async def test_job_events_follow_a_job_from_queued_to_its_ending(ev_app: asyncq.App) -> None:
    h = await task(ev_app, "async_steps").enqueue(3)
    seen: list[asyncq.Event] = []

    async def follow() -> None:
        async for event in h.events():
            seen.append(event)

    follower = asyncio.ensure_future(follow())
    await asyncio.sleep(0.3)  # the stream is open and has read the record: queued
    assert [e.state for e in seen] == ["queued"]
    async with running(ev_app):
        await asyncio.wait_for(follower, WAIT)
    states = [e.state for e in seen if e.kind == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert seen[-1].final and seen[-1].state == "succeeded"
    reports = [e.progress for e in seen if e.progress is not None]
    assert reports and reports[-1].fraction == 1.0 and reports[-1].message == "step 3 of 3"
    assert [p.fraction for p in reports] == sorted(p.fraction for p in reports)
    # Progress comes between the start and the ending.
    kinds = [e.kind if e.kind == "progress" else e.state for e in seen]
    assert kinds.index("running") < kinds.index("progress") < kinds.index("succeeded")
    assert all(e.job_id == h.id and e.queue == h.queue for e in seen)


async def test_job_events_show_a_retry(ev_app: asyncq.App) -> None:
    h = await task(ev_app, "flaky").enqueue("retry")
    events = h.events(history=False)
    first = await anext(events)  # the stream is open before the job first runs
    assert first.state == "queued"
    async with running(ev_app):
        states = [e.state async for e in events if e.kind == "state"]
    # The failed attempt waits in scheduled as 'failed', is promoted to 'queued' when due, then
    # runs again and succeeds.
    assert states == ["running", "failed", "queued", "running", "succeeded"]
    assert (await h.info()).attempts == 2  # type: ignore[union-attr]


async def test_events_of_an_ended_job_are_its_history(ev_app: asyncq.App) -> None:
    async with running(ev_app):
        h = await task(ev_app, "async_steps").enqueue(3)
        await h.result(timeout=WAIT)
    events = [e async for e in h.events()]
    assert events[-1].state == "succeeded"
    assert all(e.kind == "progress" for e in events[:-1])
    # Each report the record kept (reports faster than flushes may have been merged).
    fractions = [e.progress.fraction for e in events[:-1] if e.progress]
    assert 1 <= len(fractions) <= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [e.at for e in events] == sorted(e.at for e in events)
    latest_only = [e async for e in h.events(history=False)]
    assert [e.kind for e in latest_only] == ["progress", "state"]


async def test_a_missing_job_has_no_events(ev_app: asyncq.App) -> None:
    with pytest.raises(asyncq.JobNotFound):
        async for _ in ev_app.job("no-such-job").events():
            pass
    with pytest.raises(asyncq.JobNotFound):
        await ev_app.job("no-such-job").progress()


async def test_app_events_stream_every_job_of_the_queue(ev_app: asyncq.App) -> None:
    by_job: dict[str, list[str]] = {}
    done = asyncio.Event()
    handles: list[asyncq.JobHandle[Any]] = []

    async with ev_app.events() as events:

        async def collect() -> None:
            async for e in events:
                key = e.kind if e.kind != "state" else f"{e.state}"
                by_job.setdefault(e.job_id, []).append(key)
                if handles and all("succeeded" in by_job.get(x.id, []) for x in handles):
                    done.set()

        collector = asyncio.ensure_future(collect())
        try:
            async with running(ev_app):
                handles.extend([await task(ev_app, "gated").enqueue() for _ in range(10)])
                await asyncio.wait_for(done.wait(), WAIT)
        finally:
            collector.cancel()
    for h in handles:
        # Every change was published while the stream was open, in order.
        assert by_job[h.id] == ["queued", "running", "progress", "succeeded"], by_job[h.id]


async def test_a_report_after_the_ending_and_a_stale_one_are_dropped(ev_app: asyncq.App) -> None:
    kept: list[asyncq.JobContext] = []

    @ev_app.task(name="ev:leaky")
    async def leaky() -> None:
        kept.append(asyncq.current_job())

    async with running(ev_app):
        h = await leaky.enqueue()
        await h.result(timeout=WAIT)
        kept[0].progress(0.9, "too late")  # the job ended: ignored, no error
        await asyncio.sleep(0.3)
    assert await h.progress() is None


def test_bad_reports_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"fraction from 0\.0 to 1\.0, got 1\.5"):
        check_progress(1.5, None)
    with pytest.raises(ValueError, match=r"(?i)got nan"):
        check_progress(float("nan"), None)
    with pytest.raises(TypeError, match="must be a number"):
        check_progress("half", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str"):
        check_progress(0.5, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 1024 bytes, got 2000"):
        check_progress(0.5, "é" * 1000)
    check_progress(0, "")
    check_progress(1, "x" * 1024)


async def test_a_bad_report_fails_the_task_that_made_it(ev_app: asyncq.App) -> None:
    @ev_app.task(name="ev:bad", retries=0)
    async def bad() -> None:
        asyncq.current_job().progress(2.0)

    async with running(ev_app):
        h = await bad.enqueue()
        with pytest.raises(asyncq.JobFailed, match=r"fraction from 0\.0 to 1\.0"):
            await h.result(timeout=WAIT)


async def test_a_job_stream_outlives_its_dropped_connection(queue: str) -> None:
    server = RedisServer()  # its own server: killing connections must not touch other tests
    try:
        app = make_app(server.url, queue)
        gate = asyncio.Event()

        @app.task(name="ev:waits")
        async def waits() -> str:
            await gate.wait()
            asyncq.current_job().progress(1.0, "done")
            return "ok"

        async with running(app):
            h = await waits.enqueue()
            events = h.events(history=False)
            while (await anext(events)).state != "running":
                pass
            # A proxy or a server restart drops the pub/sub connection (the one the stream
            # listens on); the stream must subscribe again and still see the ending.
            assert server.cli("CLIENT", "LIST", "TYPE", "pubsub").strip()
            server.cli("CLIENT", "KILL", "TYPE", "pubsub")
            gate.set()
            rest = [e async for e in events]
        assert rest[-1].state == "succeeded"
        assert any(e.progress is not None and e.progress.message == "done" for e in rest)
    finally:
        server.stop()
