"""Flow control seen from tasks, on both brokers: ``raise asyncq.Snooze(seconds)`` puts a job
off without using an attempt, from async, thread and process tasks alike."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

import asyncq
from tests.apps import proc_tasks
from tests.conftest import make_app, running

# Seconds a result may take on a loaded machine; the snoozes here are 0.2 to 0.3 s.
WAIT = 20.0


@pytest.fixture
def fc_app(broker_url: str, queue: str) -> asyncq.App:
    app = make_app(broker_url, queue)
    runs: dict[str, list[float]] = {}

    @app.task(name="fc:snoozy", retries=0)
    async def snoozy(key: str, times: int) -> int:
        runs.setdefault(key, []).append(time.monotonic())
        if len(runs[key]) <= times:
            raise asyncq.Snooze(0.3)
        return len(runs[key])

    app.task(name="fc:thread_snooze", retries=0)(proc_tasks.snooze_once)
    app.task(name="fc:process_snooze", retries=0, executor="process")(proc_tasks.snooze_once)
    app.runs = runs  # type: ignore[attr-defined]
    return app


def task(app: asyncq.App, name: str) -> asyncq.Task[Any, Any]:
    return app.tasks[f"fc:{name}"]


async def test_a_snooze_runs_the_job_again_later_without_using_an_attempt(
    fc_app: asyncq.App,
) -> None:
    async with running(fc_app) as worker:
        h = await task(fc_app, "snoozy").enqueue("a", 3)
        states = [e.state async for e in h.events() if e.kind == "state"]
        # retries=0: one attempt only, yet three snoozes and a success.
        assert await h.result(timeout=WAIT) == 4
        assert worker.stats.snoozed == 3
    info = await h.info()
    assert info is not None and info.attempts == 1
    runs = fc_app.runs["a"]  # type: ignore[attr-defined]
    # Each run came at least the snooze's 0.3 s after the one before (the broker's clock; the
    # margin is for the clocks of one host, which agree to well under 50 ms).
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(runs))
    assert states[-1] == "succeeded" and states.count("scheduled") == 3


@pytest.mark.parametrize("kind", ["thread_snooze", "process_snooze"])
async def test_sync_and_process_tasks_snooze_too(
    fc_app: asyncq.App, kind: str, tmp_path: Path
) -> None:
    async with running(fc_app, processes=1) as worker:
        h = await task(fc_app, kind).enqueue(str(tmp_path / "marker"))
        assert await h.result(timeout=WAIT) == "woke"
        assert worker.stats.snoozed == 1
    info = await h.info()
    assert info is not None and info.attempts == 1


def test_a_snooze_takes_seconds_from_zero_to_a_year() -> None:
    assert asyncq.Snooze(0).seconds == 0.0
    assert asyncq.Snooze(2).seconds == 2.0
    for bad in (-1, 366 * 86400, float("nan"), "5", True):
        with pytest.raises(ValueError, match=r"(?i)snooze"):
            asyncq.Snooze(bad)  # type: ignore[arg-type]


# ---- keyed enqueues: unique, throttle, debounce, with 8 producers at once ---------------------

PRODUCERS = 8


@pytest.fixture
def keyed_app(broker_url: str, queue: str) -> asyncq.App:
    app = make_app(broker_url, queue)
    ran: list[tuple[str, float]] = []

    @app.task(name="fc:record")
    async def record(value: str) -> str:
        ran.append((value, time.monotonic()))
        return value

    app.ran = ran  # type: ignore[attr-defined]
    return app


async def from_producers(make: Any) -> list[asyncq.JobHandle[Any]]:
    """Each of 8 producers enqueues 5 times, all at once; every handle, in no order."""

    async def producer(p: int) -> list[asyncq.JobHandle[Any]]:
        return [await make(f"{p}-{i}") for i in range(5)]

    batches = await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
    return [h for batch in batches for h in batch]


async def test_unique_admits_one_job_among_concurrent_producers(keyed_app: asyncq.App) -> None:
    record = task(keyed_app, "record")
    until_end = record.options(unique=asyncq.Unique("report-7", ttl=60))
    handles = await from_producers(until_end.enqueue)
    assert len({h.id for h in handles}) == 1
    assert sum(not h.deduplicated for h in handles) == 1
    async with running(keyed_app):
        await handles[0].result(timeout=WAIT)
        # Ended: the key is free, the next one is a new job.
        again = await until_end.enqueue("after")
        assert not again.deduplicated and again.id != handles[0].id
        await again.result(timeout=WAIT)
    # One run for the 40 enqueues, one for the enqueue after it ended.
    assert [v for v, _ in keyed_app.ran][1:] == ["after"]  # type: ignore[attr-defined]


async def test_unique_until_start_admits_one_more_while_it_runs(keyed_app: asyncq.App) -> None:
    gate = asyncio.Event()

    @keyed_app.task(name="fc:held")
    async def held() -> None:
        await gate.wait()

    until_start = held.options(unique=asyncq.Unique("sync", ttl=60, until="start"))
    first = await until_start.enqueue()
    assert (await until_start.enqueue()).id == first.id
    # `first` holds the only slot, and nothing is leased ahead of it.
    async with running(keyed_app, concurrency=1, prefetch=False):
        while (await first.status()) != "running":
            await asyncio.sleep(0.02)
        second = await until_start.enqueue()  # freed when `first` started
        assert not second.deduplicated
        assert (await until_start.enqueue()).id == second.id
        gate.set()
        await first.result(timeout=WAIT)
        await second.result(timeout=WAIT)


async def test_throttle_keeps_the_first_of_the_period(keyed_app: asyncq.App) -> None:
    record = task(keyed_app, "record")
    throttled = record.options(throttle=60, key="digest")
    handles = await from_producers(throttled.enqueue)
    kept = {h.id for h in handles}
    assert len(kept) == 1
    async with running(keyed_app):
        await handles[0].result(timeout=WAIT)
    # Its success does not end the period.
    assert (await throttled.enqueue("late")).id in kept
    assert len(keyed_app.ran) == 1  # type: ignore[attr-defined]


async def test_debounce_runs_once_with_the_last_arguments(keyed_app: asyncq.App) -> None:
    record = task(keyed_app, "record")
    debounced = record.options(debounce=0.5, key="search-index")
    async with running(keyed_app):
        handles = await from_producers(debounced.enqueue)
        last_enqueue = time.monotonic()
        assert len({h.id for h in handles}) == 1
        value = await handles[0].result(timeout=WAIT)
    ran = keyed_app.ran  # type: ignore[attr-defined]
    assert len(ran) == 1 and ran[0][0] == value
    # It started only once the enqueues had stopped for the debounce period (the broker's
    # clock; this host's, so only scheduling slack separates them: 0.1 s of margin).
    assert ran[0][1] >= last_enqueue + 0.4


async def test_debounce_max_wait_starts_it_while_enqueues_keep_coming(
    keyed_app: asyncq.App,
) -> None:
    record = task(keyed_app, "record")
    debounced = record.options(debounce=0.4, max_wait=0.8, key="feed")
    first_at = time.monotonic()
    async with running(keyed_app):
        ids = set()
        # 3 s of enqueues every 0.1 s: without max_wait nothing would start until they stop.
        while time.monotonic() - first_at < 3.0:
            ids.add((await debounced.enqueue(f"{time.monotonic():.2f}")).id)
            await asyncio.sleep(0.1)
        handles = [keyed_app.job(i) for i in ids]
        for h in handles:
            await h.result(timeout=WAIT)
    ran = keyed_app.ran  # type: ignore[attr-defined]
    assert len(ran) == len(ids) >= 2
    # The first started by first enqueue + max_wait (+ 1.2 s for a loaded machine).
    assert min(t for _, t in ran) - first_at < 0.8 + 1.2


def test_keyed_options_that_do_not_go_together_are_refused(keyed_app: asyncq.App) -> None:
    record = task(keyed_app, "record")
    with pytest.raises(ValueError, match="needs key="):
        record.options(debounce=1)
    with pytest.raises(ValueError, match="needs key="):
        record.options(throttle=1)
    with pytest.raises(ValueError, match="choose one"):
        record.options(key="k", debounce=1, throttle=1)
    with pytest.raises(ValueError, match="its own key"):
        record.options(key="k", unique=asyncq.Unique("u", ttl=1))
    with pytest.raises(ValueError, match="max_wait goes with debounce"):
        record.options(key="k", max_wait=1)
    with pytest.raises(ValueError, match="drop delay"):
        record.options(key="k", debounce=1, delay=2)
    with pytest.raises(ValueError, match="above 0"):
        record.options(key="k", debounce=0)
    with pytest.raises(ValueError, match="until must be"):
        asyncq.Unique("u", ttl=1, until="end")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="above 0"):
        asyncq.Unique("u", ttl=-1)
