"""asyncq.testing (docs/testing.md): drain() runs what can run at the virtual clock's now;
retries, delays, schedules, flows and rate limits wait for clock.advance(); enqueued() lists what
code under test enqueued; the pytest fixtures work in a user's own test run (pytester)."""

from __future__ import annotations

import pytest

import asyncq
from asyncq.backoff import Exponential
from asyncq.testing import VirtualClock, drain, enqueued

pytest_plugins = ["pytester"]


async def test_a_retry_waits_for_the_clock(
    asyncq_app: asyncq.App, asyncq_clock: VirtualClock
) -> None:
    runs: list[int] = []

    @asyncq_app.task(name="t:flaky", retries=2, backoff=Exponential(base=60, cap=60, jitter=0))
    async def flaky() -> str:
        runs.append(asyncq.current_job().attempt)
        if len(runs) == 1:
            raise RuntimeError("once")
        return "ok"

    handle = await flaky.enqueue()
    assert await drain(asyncq_app) == 1
    assert runs == [1] and await handle.status() == "failed"  # waiting 60 s for its retry
    await asyncq_clock.advance(59)
    assert await drain(asyncq_app) == 0
    await asyncq_clock.advance(1)
    assert await drain(asyncq_app) == 1
    assert runs == [1, 2] and await handle.result(timeout=1) == "ok"


async def test_a_rate_limit_lets_the_next_job_through_as_the_clock_moves(
    asyncq_app: asyncq.App, asyncq_clock: VirtualClock
) -> None:
    ran: list[int] = []

    @asyncq_app.task(name="t:slow", rate_limit="1/m")
    async def slow(i: int) -> None:
        ran.append(i)

    for i in range(3):
        await slow.enqueue(i)
    assert await asyncq_app.drain() == 1  # the limit holds the other two
    await asyncq_clock.advance(30)
    assert await asyncq_app.drain() == 0
    # (No window of 60 s may hold two starts: 61 s, clear of the edge.)
    await asyncq_clock.advance(31)
    assert await asyncq_app.drain() == 1
    await asyncq_clock.advance(61)
    assert await asyncq_app.drain() == 1
    assert ran == [0, 1, 2]


async def test_schedules_fire_as_the_clock_moves(
    asyncq_app: asyncq.App, asyncq_clock: VirtualClock
) -> None:
    fired: list[float] = []

    @asyncq_app.task(name="t:tick")
    async def tick() -> None:
        fired.append(await asyncq_clock.now())

    asyncq_app.schedule("every-minute", tick, every=60)
    assert await asyncq_app.drain() == 0
    # Any 60 s of the clock hold one fire time of a schedule every 60 s.
    for _ in range(3):
        await asyncq_clock.advance(60)
        assert await asyncq_app.drain() == 1
    # Ten minutes on: catchup="skip" (the default) fires the latest fire time only.
    await asyncq_clock.advance(600)
    assert await asyncq_app.drain() == 1
    assert len(fired) == 4


async def test_a_delayed_job_runs_once_its_time_comes(
    asyncq_app: asyncq.App, asyncq_clock: VirtualClock
) -> None:
    @asyncq_app.task(name="t:later")
    async def later() -> str:
        return "ran"

    handle = await later.options(delay=3600).enqueue()
    assert await asyncq_app.drain() == 0
    await asyncq_clock.advance(3599)
    assert await asyncq_app.drain() == 0 and await handle.status() == "scheduled"
    await asyncq_clock.advance(1)
    assert await asyncq_app.drain() == 1
    assert await handle.result(timeout=1) == "ran"


async def test_a_flow_runs_through_in_one_drain(asyncq_app: asyncq.App) -> None:
    @asyncq_app.task(name="t:add")
    async def add(x: int, y: int) -> int:
        return x + y

    chain = await asyncq.chain(add.s(1, 2), add.s(10), add.s(100)).enqueue()
    assert await asyncq_app.drain() == 3
    assert await chain.result(timeout=1) == 113


async def test_enqueued_lists_what_code_under_test_enqueued(asyncq_app: asyncq.App) -> None:
    @asyncq_app.task(name="t:mail")
    async def send_mail(to: str, *, subject: str = "") -> None:
        return None

    @asyncq_app.task(name="t:other")
    async def other() -> None:
        return None

    await send_mail.enqueue("a@example.com", subject="hi")
    await other.enqueue()
    await send_mail.options(delay=30).enqueue("b@example.com")
    calls = [(j.args, j.kwargs, j.state) for j in await asyncq_app.enqueued(send_mail)]
    assert calls == [
        (("a@example.com",), {"subject": "hi"}, "queued"),
        (("b@example.com",), {}, "scheduled"),
    ]
    assert len(await enqueued(asyncq_app)) == 3
    await asyncq_app.drain()
    assert [j.args for j in await asyncq_app.enqueued("t:mail")] == [("b@example.com",)]


def test_drain_refuses_an_app_on_redis() -> None:
    app = asyncq.App("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="memory://"):
        app.drain_sync()


def test_the_fixtures_work_in_a_users_test_run(pytester: pytest.Pytester) -> None:
    # A user's project: its own app module and tests using the plugin's fixtures, run by a
    # pytest of its own (the plugin is loaded by the entry point asyncq installs).
    pytester.makepyfile(
        myapp="""
        import asyncq

        app = asyncq.App("redis://production:6379/0")

        @app.task(retries=1)
        async def charge(cents: int) -> int:
            if cents < 0:
                raise ValueError("negative")
            return cents
        """,
        test_billing="""
        import asyncq
        import myapp

        def test_charge_runs_on_memory(asyncq_app_factory):
            app = asyncq_app_factory(myapp.app)
            handle = myapp.charge.enqueue_sync(250)
            assert app.drain_sync() == 1
            assert handle.result_sync(timeout=1) == 250

        async def test_retries_need_the_clock(asyncq_app_factory, asyncq_clock):
            app = asyncq_app_factory(myapp.app)
            handle = await myapp.charge.enqueue(-1)
            assert await app.drain() == 1
            assert await handle.status() == "failed"
            await asyncq_clock.advance(3600)
            assert await app.drain() == 1
            assert await handle.status() == "dead"
        """,
    )
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_eager_mode_runs_tasks_inline_with_the_real_encoding() -> None:
    app = asyncq.App("memory://eager-sync", eager=True)
    ran: list[tuple[int, int]] = []

    @app.task
    def add(x: int, y: int) -> int:
        ran.append((x, y))
        return x + y

    @app.task
    async def later(x: int) -> tuple[int, ...]:
        return (x,)

    @app.task
    def broken() -> None:
        raise ValueError("the task's own error")

    handle = add.enqueue_sync(1, 2)
    assert ran == [(1, 2)] and handle.result_sync() == 3
    assert later.enqueue_sync(4).result_sync() == (4,)  # an async task on a loop of its own
    with pytest.raises(ValueError, match="the task's own error"):
        broken.enqueue_sync()
    # The same checks as a real enqueue: the signature, then what can travel.
    with pytest.raises(TypeError):
        add.enqueue_sync(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="argument 'y'"):
        add.enqueue_sync(1, object())  # type: ignore[arg-type]
    assert ran == [(1, 2)]


async def test_eager_mode_from_async_code_and_what_it_refuses() -> None:
    app = asyncq.App("memory://eager-async", eager=True)

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    handle = await double.enqueue(21)
    assert await handle.result() == 42 and await handle.status() == "succeeded"
    assert [await h.result() for h in await double.enqueue_many([((1,), {}), ((2,), {})])] == [
        2,
        4,
    ]
    assert await app.enqueued() == []  # nothing was written
    with pytest.raises(RuntimeError, match=r"await task\.enqueue"):
        double.enqueue_sync(1)  # an async task, from inside a running loop
    with pytest.raises(RuntimeError, match="eager mode"):
        await asyncq.chain(double.s(1), double.s()).enqueue()
