"""Flows on both brokers: chains (across queues), groups, chords, nesting, each failure policy,
cancellation; and a 1,000-member chord whose header workers are SIGKILLed over and over."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

import asyncq
from tests.conftest import RedisServer, make_app, running
from tests.procutil import PYTHONPATH, WorkerProc, await_until


@pytest.fixture
def flow_app(broker_url: str, queue: str) -> asyncq.App:
    app = make_app(broker_url, queue)
    other = f"{queue}-other"

    @app.task(name="t:add")
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(random.uniform(0, 0.01))  # members end out of order
        return x + y

    @app.task(name="t:mul", queue=other)
    async def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="t:total")
    def total(xs: list[int]) -> int:  # a sync callback, in a thread
        return sum(xs)

    @app.task(name="t:boom")
    async def boom(x: int) -> int:
        raise ValueError(f"no {x}")

    @app.task(name="t:show")
    async def show(x: Any) -> str:
        return repr(x)

    @app.task(name="t:slow")
    async def slow(x: int) -> int:
        await asyncio.sleep(30)
        return x

    return app


def t(app: asyncq.App, name: str) -> asyncq.Task[Any, Any]:
    return app.tasks[f"t:{name}"]


def queues(app: asyncq.App) -> dict[str, int]:
    return {app.default_queue: 20, f"{app.default_queue}-other": 20}


async def test_a_chain_across_two_queues_passes_each_result_on(flow_app: asyncq.App) -> None:
    add, mul = t(flow_app, "add"), t(flow_app, "mul")
    async with running(flow_app, queues=queues(flow_app)):
        h = await asyncq.chain(add.s(1, 2), mul.s(10), add.s(5)).enqueue()
        assert await h.result(timeout=10) == 35
        h2 = asyncq.chain(add.s(1, 1), mul.s(3)).enqueue_sync
        sync_handle = await asyncio.get_running_loop().run_in_executor(None, h2)
        assert await sync_handle.result(timeout=10) == 6


async def test_a_chord_gets_every_result_in_member_order(flow_app: asyncq.App) -> None:
    add, total, show = t(flow_app, "add"), t(flow_app, "total"), t(flow_app, "show")
    async with running(flow_app, queues=queues(flow_app)):
        h = await asyncq.chord([add.s(i, i) for i in range(50)], total.s()).enqueue()
        assert await h.result(timeout=20) == sum(2 * i for i in range(50))
        h = await asyncq.chord(asyncq.group([add.s(i, 0) for i in range(5)]), show.s()).enqueue()
        assert await h.result(timeout=10) == repr([0, 1, 2, 3, 4])


async def test_groups_results_progress_and_nesting(flow_app: asyncq.App) -> None:
    add, mul, total, show = (t(flow_app, n) for n in ("add", "mul", "total", "show"))
    async with running(flow_app, queues=queues(flow_app)):
        # A group of chains, and a group inside a group (its members join the outer one).
        g = await asyncq.group(
            [add.s(1, 1), asyncq.chain(add.s(2, 2), mul.s(3)), asyncq.group([add.s(0, 7)])]
        ).enqueue()
        assert await g.results(timeout=10) == [2, 12, 7]
        assert await g.progress() == asyncq.Progress(done=3, failed=0, total=3)
        assert len(g.ids) == 3
        # A chain of groups: each member of the second group gets the first group's list.
        h = await asyncq.chain(
            asyncq.group([add.s(1, 1), add.s(2, 2)]),
            asyncq.group([total.s(), total.s()]),
            show.s(),
        ).enqueue()
        assert await h.result(timeout=10) == repr([6, 6])


async def test_on_failure_fail_stops_what_follows(flow_app: asyncq.App) -> None:
    add, boom = t(flow_app, "add"), t(flow_app, "boom")
    total = t(flow_app, "total")
    async with running(flow_app, queues=queues(flow_app)):
        h = await asyncq.chain(boom.s(1), add.s(1), add.s(2)).enqueue()
        with pytest.raises(asyncq.JobFailed) as err:
            await h.result(timeout=10)
        assert err.value.reason == "upstream_failed"
        assert "ValueError: no 1" in err.value.message
        assert await h.status() == "dead"
        chord = await asyncq.chord([add.s(1, 1), boom.s(2)], total.s()).enqueue()
        with pytest.raises(asyncq.JobFailed):
            await chord.result(timeout=10)
        # Only the member that ran and failed is a dead letter (to inspect and retry).
        dead = await flow_app.broker.dead_ids(flow_app.default_queue, 100)
        assert len(dead) == 2


async def test_on_failure_continue_and_ignore(flow_app: asyncq.App) -> None:
    add, boom, show = t(flow_app, "add"), t(flow_app, "boom"), t(flow_app, "show")
    async with running(flow_app, queues=queues(flow_app)):
        h = await asyncq.chain(boom.s(1).options(on_failure="continue"), show.s()).enqueue()
        shown = await h.result(timeout=10)
        assert shown.startswith("Failed(") and "'ValueError'" in shown and "no 1" in shown
        h = await asyncq.chord([boom.s(1), add.s(1, 1)], show.s(), on_failure="ignore").enqueue()
        assert await h.result(timeout=10) == repr([2])
        h = await asyncq.chord([boom.s(1), add.s(2, 2)], show.s(), on_failure="continue").enqueue()
        shown = await h.result(timeout=10)
        assert shown.startswith("[Failed(") and shown.endswith(", 4]")


async def test_cancelling_a_group_cancels_its_pending_members_and_what_follows(
    flow_app: asyncq.App,
) -> None:
    slow, total = t(flow_app, "slow"), t(flow_app, "total")
    async with running(flow_app, queues=queues(flow_app)):
        g = await asyncq.group([slow.s(i) for i in range(3)]).enqueue()
        h = await asyncq.chord([slow.s(9)], total.s()).enqueue()
        await await_until(lambda: _running(g), 10, "the members running")
        assert await g.cancel() == 3
        with pytest.raises(asyncq.JobCancelled):
            await g.results(timeout=10)
        assert await g.progress() == asyncq.Progress(done=0, failed=3, total=3)
        # A chord's handle cancels its whole flow: the running member and the callback.
        assert isinstance(h, asyncq.FlowJobHandle) and len(h.flow) == 2
        assert await h.cancel_flow() == 2  # the callback first, then what it waits on
        with pytest.raises(asyncq.JobCancelled):
            await h.result(timeout=10)
        with pytest.raises(asyncq.JobCancelled):
            await h.flow[0].result(timeout=10)  # queued or running, it ends cancelled


async def _running(g: asyncq.GroupHandle) -> bool:
    return all([await m.status() == "running" for m in g.members])


def test_bad_flows_are_refused_when_built_or_enqueued(flow_app: asyncq.App) -> None:
    add = t(flow_app, "add")
    with pytest.raises(ValueError, match="at least one"):
        asyncq.group([])
    with pytest.raises(ValueError, match="at least one"):
        asyncq.chain()
    with pytest.raises(ValueError, match="on_failure"):
        asyncq.chain(add.s(1, 2), on_failure="maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="signature"):
        asyncq.chain(add)  # type: ignore[arg-type]
    # A step after another gets its result first: add.s(1, 2) there has one argument too many.
    with pytest.raises(TypeError):
        asyncq.chain(add.s(1, 2), add.s(1, 2)).enqueue_sync()
    with pytest.raises(ValueError, match="idempotency key"):
        asyncq.chain(add.options(key="k").s(1, 2)).enqueue_sync()


@pytest.mark.timeout(180)
async def test_a_1000_member_chord_survives_repeated_worker_kills(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    queue = f"chord{uuid.uuid4().hex[:8]}"
    ledger = tmp_path / "callback"
    env = dict(os.environ, ASYNCQ_TEST_URL=redis_server.url, ASYNCQ_TEST_QUEUE=queue)
    env.update(ASYNCQ_TEST_LEDGER=str(ledger), PYTHONPATH=PYTHONPATH)
    app_path = "tests.apps.flows:app"
    # The producer's side of tests.apps.flows: the same task names and queues.
    producer = asyncq.App(redis_server.url, default_queue=queue)

    @producer.task(name="flows:square")
    async def square(i: int) -> int: ...

    @producer.task(name="flows:collect", queue=f"{queue}-cb")
    async def collect(results: list[int]) -> int: ...

    # The header's workers get killed; the callback's worker is left alone, so its runs count
    # the callback's releases: one, whatever the kills did to the header.
    cb_worker = WorkerProc(tmp_path, env, "-q", f"{queue}-cb", name="cb", app=app_path)
    workers = [
        WorkerProc(tmp_path, env, "-q", queue, "-c", "10", name=f"h{i}", app=app_path)
        for i in range(3)
    ]
    started = len(workers)
    rng = random.Random(3)
    try:
        cb_worker.started(30)
        for w in workers:
            w.started(30)
        handle = await asyncq.chord([square.s(i) for i in range(1000)], collect.s()).enqueue()
        kills = 0
        while not ledger.exists() and kills < 100:
            # Kills 1.5-2 s apart: a job its worker took down comes back after its lease (1 s)
            # and a reap (0.2 s) and runs 0.2 s, so the next kill seldom finds it again. A job
            # killed three times is dead-lettered by design (stalls), which would fail the
            # chord: that is not what this test is about.
            await asyncio.sleep(rng.uniform(1.5, 2.0))
            i = rng.randrange(len(workers))
            workers[i].proc.send_signal(signal.SIGKILL)
            workers[i].proc.wait(10)
            workers[i] = WorkerProc(
                tmp_path, env, "-q", queue, "-c", "10", name=f"h{started}", app=app_path
            )
            started += 1
            kills += 1
        assert await handle.result(timeout=60) == sum(i * i for i in range(1000))
        await asyncio.sleep(1.0)  # a second release would have run by now
        runs = [json.loads(line) for line in ledger.read_text().splitlines()]
        assert runs == [{"n": 1000, "ok": True}], runs
        assert kills >= 3, "the chord finished before the test could kill much"
    finally:
        cb_worker.close()
        for w in workers:
            w.close()


async def test_a_batch_runs_on_complete_with_failures_and_on_success_only_if_all_succeed(
    flow_app: asyncq.App,
) -> None:
    add, boom, show = t(flow_app, "add"), t(flow_app, "boom"), t(flow_app, "show")
    async with running(flow_app, queues=queues(flow_app)):
        b = await asyncq.batch(
            [add.s(1, 1), add.s(2, 2)], on_complete=show.s(), on_success=show.s()
        ).enqueue()
        assert b.on_complete is not None and b.on_success is not None
        assert await b.on_complete.result(timeout=10) == repr([2, 4])
        assert await b.on_success.result(timeout=10) == repr([2, 4])
        b = await asyncq.batch(
            [add.s(1, 1), boom.s(3)], on_complete=show.s(), on_success=show.s()
        ).enqueue()
        assert b.on_complete is not None and b.on_success is not None
        shown = await b.on_complete.result(timeout=10)
        assert shown.startswith("[2, Failed(") and "no 3" in shown
        with pytest.raises(asyncq.JobFailed) as err:
            await b.on_success.result(timeout=10)
        assert err.value.reason == "upstream_failed"
        assert await b.progress() == asyncq.Progress(done=1, failed=1, total=2)


async def test_jobs_added_to_an_open_batch_are_waited_for(flow_app: asyncq.App) -> None:
    add, total = t(flow_app, "add"), t(flow_app, "total")
    gate = asyncio.Event()

    @flow_app.task(name="t:gated")
    async def gated(x: int) -> int:
        await gate.wait()
        return x

    async with running(flow_app, queues=queues(flow_app)):
        b = await asyncq.batch([gated.s(100)], on_success=total.s()).enqueue()
        # While the first job is held, more join; the callback waits for them all.
        added = await b.add([add.s(i, 0) for i in range(3)])
        assert len(added) == 3 and len(b.jobs) == 4
        assert [await h.result(timeout=10) for h in added] == [0, 1, 2]
        assert await b.on_success.status() == "waiting"  # type: ignore[union-attr]
        gate.set()
        assert await b.on_success.result(timeout=10) == 103  # type: ignore[union-attr]
        with pytest.raises(asyncq.BatchFinished):
            await b.add([add.s(9, 9)])
    with pytest.raises(ValueError, match="at least one job"):
        asyncq.batch([], on_complete=total.s())
