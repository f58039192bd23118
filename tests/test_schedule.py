"""Periodic schedules: cron and interval fire times (time zones, DST both ways), catch-up and
overlap policies, workers and standalone schedulers firing each fire time exactly once, and
the ``asyncq schedules`` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import asyncq
from asyncq._cron import Cron, zone
from asyncq.schedule import CATCHUP_LIMIT, Schedule, Scheduler, fire_job_id, fire_of, schedule_infos

from .conftest import RedisServer, make_app, running
from .procutil import PYTHONPATH, ROOT, await_until, run_cli, script, wait_until

UTC = dt.timezone.utc
BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


def ms(d: dt.datetime) -> int:
    return round(d.timestamp() * 1000)


def fires(expr: str, start: dt.datetime, n: int, tz: dt.tzinfo = UTC) -> list[str]:
    """The next ``n`` fire times of ``expr`` after ``start``, as ISO strings in ``tz``."""
    cron, t, out = Cron.parse(expr), ms(start), []
    for _ in range(n):
        nxt = cron.next_after(t, tz)
        assert nxt is not None
        out.append(dt.datetime.fromtimestamp(nxt / 1000, tz).isoformat())
        t = nxt
    return out


# ---- cron expressions --------------------------------------------------------------------------


def test_cron_fields_ranges_steps_lists_and_names() -> None:
    start = dt.datetime(2026, 12, 1, tzinfo=UTC)  # a Tuesday
    assert fires("*/20 9-10 * * mon-fri", start, 4) == [
        "2026-12-01T09:00:00+00:00",
        "2026-12-01T09:20:00+00:00",
        "2026-12-01T09:40:00+00:00",
        "2026-12-01T10:00:00+00:00",
    ]
    assert fires("0 0 1 jan,jul *", start, 2) == [
        "2027-01-01T00:00:00+00:00",
        "2027-07-01T00:00:00+00:00",
    ]
    # 7 is Sunday like 0; ranges with a step.
    assert fires("0 12 * * 7", start, 1) == fires("0 12 * * sun", start, 1)
    assert fires("0 1-10/4 * * *", start, 3) == [
        "2026-12-01T01:00:00+00:00",
        "2026-12-01T05:00:00+00:00",
        "2026-12-01T09:00:00+00:00",
    ]


def test_cron_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron: the 13th of the month OR any Friday.
    start = dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert fires("0 9 13 * fri", start, 3) == [
        "2026-12-04T09:00:00+00:00",
        "2026-12-11T09:00:00+00:00",
        "2026-12-13T09:00:00+00:00",
    ]


def test_cron_seconds_field_macros_and_leap_days() -> None:
    start = dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert fires("*/15 * * * * *", start, 2) == [
        "2026-12-01T00:00:15+00:00",
        "2026-12-01T00:00:30+00:00",
    ]
    assert fires("@daily", start, 1) == ["2026-12-02T00:00:00+00:00"]
    assert fires("@hourly", start, 1) == ["2026-12-01T01:00:00+00:00"]
    assert fires("0 0 29 2 *", start, 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("* * *", "expected 5 fields"),
        ("61 * * * *", "outside 0-59"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "runs backwards"),
        ("x * * * *", "not a number"),
        ("0 0 30 2 *", "matches no time"),
        ("1,,2 * * * *", "empty item"),
    ],
)
def test_bad_cron_expressions_are_refused_with_the_reason(expr: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Cron.parse(expr)


def test_a_wall_time_skipped_by_the_spring_change_fires_the_length_of_the_jump_later() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    start = dt.datetime(2026, 3, 28, 12, tzinfo=BERLIN)
    assert fires("30 2 * * *", start, 2, BERLIN) == [
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # Every half hour: the skipped ones land on real times that fire anyway, once each.
    start = dt.datetime(2026, 3, 29, 1, 10, tzinfo=BERLIN)
    assert fires("*/30 * * * *", start, 3, BERLIN) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    # A skipped time that lands after a real one does not hide it (02:45 lands at 03:45).
    start = dt.datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN)
    assert fires("45 2 * * *", start, 1, BERLIN) == ["2026-03-29T03:45:00+02:00"]
    assert fires("15,45 2,3 * * *", start, 3, BERLIN) == [
        "2026-03-29T03:15:00+02:00",
        "2026-03-29T03:45:00+02:00",
        "2026-03-30T02:15:00+02:00",
    ]


def test_a_wall_time_repeated_by_the_autumn_change_fires_once_at_its_first_occurrence() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    start = dt.datetime(2026, 10, 24, 12, tzinfo=BERLIN)
    assert fires("30 2 * * *", start, 2, BERLIN) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # America/New_York, 2026-11-01: 01:00-02:00 happens twice; hourly fires once at 01:00.
    start = dt.datetime(2026, 11, 1, 0, 30, tzinfo=NEW_YORK)
    assert fires("0 * * * *", start, 3, NEW_YORK) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]
    # From inside the second pass, the repeated times are not fired again.
    second_pass = dt.datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NEW_YORK)
    assert fires("30 1 * * *", second_pass, 1, NEW_YORK) == ["2026-11-02T01:30:00-05:00"]


# ---- catch-up and overlap policies (pure: fire times given last and now) ---------------------


@pytest.fixture
def task() -> asyncq.Task[Any, Any]:
    app = asyncq.App("memory://policies")

    @app.task(name="policies:noop")
    async def noop(x: int = 0) -> int:
        return x

    return noop


def sched(task: asyncq.Task[Any, Any], **kw: Any) -> Schedule:
    kw.setdefault("cron", None)
    kw.setdefault("every", None)
    kw.setdefault("args", ())
    kw.setdefault("kwargs", None)
    kw.setdefault("tz", "UTC")
    kw.setdefault("overlap", "allow")
    kw.setdefault("catchup", "skip")
    kw.setdefault("jitter", 0.0)
    return Schedule.make("s", task, **kw)


def test_interval_fire_times_are_multiples_since_the_epoch(task: asyncq.Task[Any, Any]) -> None:
    s = sched(task, every=dt.timedelta(minutes=1))
    assert s.next_after(ms(dt.datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC))) == ms(
        dt.datetime(2026, 12, 1, 10, 1, tzinfo=UTC)
    )
    # Nothing due before the first fire time after `last`; then the due one.
    assert s.due(60_000, 119_999) == []
    assert s.due(60_000, 120_000) == [(120_000, "allow")]


def test_catchup_policies_after_a_downtime(task: asyncq.Task[Any, Any]) -> None:
    every = 1000
    last, now = 1000, 5500
    assert sched(task, every=1).due(last, now) == [(5000, "allow")]
    assert sched(task, every=1, catchup="once").due(last, now) == [(5000, "allow")]
    assert sched(task, every=1, catchup="all").due(last, now) == [
        (t, "allow") for t in range(2000, 5001, every)
    ]
    # "all" is bounded: the most recent CATCHUP_LIMIT fire times.
    due = sched(task, every=1, catchup="all").due(0, 1000 * 500)
    assert len(due) == CATCHUP_LIMIT
    assert due[-1] == (500_000, "allow")
    assert due[0] == (500_000 - (CATCHUP_LIMIT - 1) * 1000, "allow")


def test_skip_passes_a_fire_time_missed_by_more_than_a_minute_and_once_runs_it(
    task: asyncq.Task[Any, Any],
) -> None:
    nine = dt.datetime(2026, 12, 1, 9, tzinfo=UTC)
    last = ms(nine - dt.timedelta(days=2))
    three_hours_late = ms(nine + dt.timedelta(hours=3))
    half_a_minute_late = ms(nine + dt.timedelta(seconds=30))
    daily = {"cron": "0 9 * * *"}
    assert sched(task, **daily).due(last, three_hours_late) == [(ms(nine), "pass")]
    assert sched(task, **daily).due(last, half_a_minute_late) == [(ms(nine), "allow")]
    assert sched(task, **daily, catchup="once").due(last, three_hours_late) == [(ms(nine), "allow")]
    assert sched(task, **daily, catchup="all").due(last, three_hours_late) == [
        (ms(nine - dt.timedelta(days=1)), "allow"),
        (ms(nine), "allow"),
    ]
    # Overlap "skip" travels to the script, which knows whether the previous job is done.
    assert sched(task, **daily, overlap="skip").due(last, half_a_minute_late) == [
        (ms(nine), "skip")
    ]


def test_jitter_is_fixed_per_fire_time_and_bounded(task: asyncq.Task[Any, Any]) -> None:
    s = sched(task, every=60, jitter=5.0)
    delays = [s.jitter_ms(t) for t in range(0, 6_000_000, 60_000)]
    assert all(0 <= d <= 5000 for d in delays)
    assert len(set(delays)) > 50
    assert delays == [s.jitter_ms(t) for t in range(0, 6_000_000, 60_000)]
    assert sched(task, every=60).jitter_ms(60_000) == 0


def test_bad_schedules_are_refused_at_declaration(task: asyncq.Task[Any, Any]) -> None:
    app = task.app
    for kw, says in [
        ({}, "exactly one of cron= and every="),
        ({"cron": "* * * * *", "every": 5}, "exactly one"),
        ({"every": 0.5}, "at least 1 second"),
        ({"every": 5, "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 5, "overlap": "never"}, "overlap must be"),
        ({"every": 5, "catchup": "some"}, "catchup must be"),
        ({"cron": "99 * * * *"}, "outside 0-59"),
    ]:
        with pytest.raises(ValueError, match=says):
            app.schedule("bad", task, **kw)
    with pytest.raises(ValueError, match="is not valid"):
        app.schedule("has space", task, every=5)
    with pytest.raises(ValueError, match="no task named"):
        app.schedule("x", "nope:nope", every=5)
    with pytest.raises(TypeError):
        app.schedule("x", task, every=5, args=(1, 2, 3))
    app.schedule("fine", "policies:noop", every=5)
    with pytest.raises(ValueError, match="already declared"):
        app.schedule("fine", task, every=5)


# ---- firing, on both brokers ------------------------------------------------------------------


async def test_a_worker_fires_its_apps_schedule_each_second(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)
    ran: list[tuple[str, float]] = []

    @app.task
    async def tick(label: str) -> None:
        ran.append((asyncq.current_job().job_id, time.time()))

    app.schedule(f"tick-{queue}", tick, every=1, args=("x",))
    async with running(app):
        await await_until(lambda: _at_least(ran, 3), 10, "three fires")
    ids = [job_id for job_id, _ in ran]
    times = [fire_ms(i) for i in ids]
    assert times == list(range(times[0], times[0] + 1000 * len(times), 1000)), ids
    for (_, started), fire in zip(ran, times, strict=True):
        # Started after its fire time (Redis' clock and ours are one host's: no skew here).
        assert started >= fire / 1000 - 0.05
    infos = await schedule_infos(app.broker, [queue])
    assert [i.name for i in infos] == [f"tick-{queue}"]
    assert infos[0].fired >= len(ran) and infos[0].next_fire is not None


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def test_several_schedulers_in_one_process_enqueue_each_fire_once(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue)

    @app.task
    async def tick() -> None: ...

    name = f"many-{queue}"
    app.schedule(name, tick, every=1)
    stop = asyncio.Event()
    runs = [asyncio.ensure_future(Scheduler(app).run(stop)) for _ in range(5)]
    # 3.5 s: three or four fire times, each asked for by five schedulers at the same moment.
    await asyncio.sleep(3.5)
    stop.set()
    await asyncio.gather(*runs)
    ids = await app.broker.job_ids(queue, "queued", 0, 100)
    times = sorted(fire_ms(i) for i in ids)
    assert len(times) >= 3
    assert times == list(range(times[0], times[-1] + 1, 1000))
    (info,) = await schedule_infos(app.broker, [queue])
    assert info.fired == len(times)


async def test_overlap_skip_passes_fire_times_while_the_previous_job_runs(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue)
    ran: list[str] = []

    @app.task
    async def slow() -> None:
        ran.append(asyncq.current_job().job_id)
        await asyncio.sleep(2.5)

    name = f"slow-{queue}"
    app.schedule(name, slow, every=1, overlap="skip")
    async with running(app):
        await asyncio.sleep(4.2)
    (info,) = await schedule_infos(app.broker, [queue])
    # A run takes 2.5 s, so at most one fire in every two or three seconds gets through.
    assert 1 <= len(ran) <= 2
    assert info.fired == len(ran)
    assert info.skipped >= 2


async def test_pause_resume_and_remove_take_effect_on_running_schedulers(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue)

    @app.task
    async def tick() -> None: ...

    name = f"ctl-{queue}"
    app.schedule(name, tick, every=1)
    broker = app.broker
    stop = asyncio.Event()
    run = asyncio.ensure_future(Scheduler(app).run(stop))
    try:
        await await_until(lambda: _fired(app, queue, 1), 5, "a first fire")
        assert await broker.change_schedule(queue, name, "pause")
        (paused,) = await schedule_infos(broker, [queue])
        await asyncio.sleep(2.2)
        (still,) = await schedule_infos(broker, [queue])
        assert still.paused and still.fired == paused.fired
        assert still.skipped >= paused.skipped + 1
        assert await broker.change_schedule(queue, name, "resume")
        await await_until(lambda: _fired(app, queue, paused.fired + 1), 5, "a fire after resume")
        assert await broker.change_schedule(queue, name, "remove")
        before = len(await broker.job_ids(queue, "queued", 0, 100))
        await asyncio.sleep(2.2)
        assert len(await broker.job_ids(queue, "queued", 0, 100)) == before
        assert await schedule_infos(broker, [queue]) == []
    finally:
        stop.set()
        await run


async def _fired(app: asyncq.App, queue: str, n: int) -> bool:
    infos = await schedule_infos(app.broker, [queue])
    return bool(infos) and infos[0].fired >= n


async def test_a_schedule_whose_job_cannot_be_encoded_is_reported_and_fires_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = asyncq.App(f"memory://bad{uuid.uuid4().hex[:8]}", max_payload=200)

    @app.task
    async def tick(x: Any) -> None: ...

    app.schedule("unencodable", tick, every=1, args=(object(),))
    app.schedule("oversized", tick, every=1, args=("x" * 1000,))
    stop = asyncio.Event()
    run = asyncio.ensure_future(Scheduler(app).run(stop))
    await asyncio.sleep(2.3)
    stop.set()
    await asyncio.wait_for(run, 10)  # still running: it did not crash on either
    errors = [r.getMessage() for r in caplog.records if "cannot enqueue" in r.getMessage()]
    assert len(errors) == 2, errors  # once each, not once per fire
    assert any("cannot serialize argument 'x'" in e for e in errors)
    assert await app.broker.job_ids(app.default_queue, "queued", 0, 10) == []


async def test_a_scheduler_rides_out_an_unreachable_broker(tmp_path: Path) -> None:
    server = RedisServer()
    try:
        queue = f"q{uuid.uuid4().hex[:8]}"
        app = make_app(server.url, queue)

        @app.task
        async def tick() -> None: ...

        app.schedule("outage", tick, every=1)
        stop = asyncio.Event()
        run = asyncio.ensure_future(Scheduler(app).run(stop))
        await await_until(lambda: _fired(app, queue, 1), 5, "a first fire")
        server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        await asyncio.sleep(1.5)
        server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        (before,) = await schedule_infos(app.broker, [queue])
        await await_until(lambda: _fired(app, queue, before.fired + 2), 10, "fires after it")
        stop.set()
        await asyncio.wait_for(run, 10)
    finally:
        server.stop()


# ---- scheduler processes on a real Redis -------------------------------------------------------


class SchedulerProc:
    """An ``asyncq scheduler tests.apps.cron:app`` subprocess logging to a file."""

    def __init__(self, tmp: Path, env: dict[str, str], n: int) -> None:
        self.path = tmp / f"scheduler-{n}.log"
        with open(self.path, "wb") as log:
            self.proc = subprocess.Popen(
                [script("asyncq"), "scheduler", "tests.apps.cron:app"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def log(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace")

    def synced(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"scheduler exited ({self.proc.returncode}):\n{self.log()}")
        return "schedule tick-all: every 1s" in self.log()

    def fired(self, name: str) -> int:
        return self.log().count(f"schedule {name}: fired ")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def term(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(15) == 0, self.log()


@pytest.fixture
def cron_env(redis_server: RedisServer) -> tuple[dict[str, str], str]:
    queue = f"cron{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, ASYNCQ_TEST_URL=redis_server.url, ASYNCQ_TEST_QUEUE=queue)
    env["PYTHONPATH"] = PYTHONPATH
    return env, queue


async def fire_times(url: str, queue: str, name: str) -> list[int]:
    ids = await asyncq.App(url).broker.job_ids(queue, "queued", 0, 100_000)
    fires = [fire_of(i) for i in ids]
    return sorted(f[1] for f in fires if f is not None and f[0] == name)


def fire_ms(job_id: str) -> int:
    """The fire time of a job a schedule enqueued."""
    fire = fire_of(job_id)
    assert fire is not None, job_id
    return fire[1]


def gaps(times: list[int]) -> list[int]:
    """The 1-second fire times missing between the first and the last of ``times``."""
    have = set(times)
    return [t for t in range(times[0], times[-1] + 1, 1000) if t not in have]


# How long five schedulers race: 20 s in `make test` (20 one-second fire times each for two
# schedules), a minute or more in `make cron-soak` (ASYNCQ_CRON_SOAK_S=60, as docs/schedules.md
# reports).
CRON_RACE_S = float(os.environ.get("ASYNCQ_CRON_SOAK_S", "20"))


@pytest.mark.timeout(120 + 2 * CRON_RACE_S)
async def test_five_schedulers_racing_enqueue_each_fire_once_without_a_gap(
    tmp_path: Path, redis_server: RedisServer, cron_env: tuple[dict[str, str], str]
) -> None:
    env, queue = cron_env
    procs = [SchedulerProc(tmp_path, env, n) for n in range(5)]
    try:
        wait_until(lambda: all(p.synced() for p in procs), 30, "five schedulers up")
        began = time.time()
        await asyncio.sleep(CRON_RACE_S)
        for p in procs:
            p.term()
        ended = time.time()
    finally:
        for p in procs:
            p.kill()
    infos = {i.name: i for i in await schedule_infos(asyncq.App(redis_server.url).broker, [queue])}
    for name in ("tick-skip", "tick-all"):
        times = await fire_times(redis_server.url, queue, name)
        # Every fire time of the run, once: one job per time, and one "fired" across logs.
        assert gaps(times) == [], name
        assert times[0] <= began * 1000 + 1000 and times[-1] >= ended * 1000 - 2000, name
        assert sum(p.fired(name) for p in procs) == len(times) == infos[name].fired, name
        assert len(times) >= CRON_RACE_S - 1, name


@pytest.mark.timeout(120)
async def test_schedulers_killed_and_restarted_leave_no_duplicate_and_gaps_only_as_policy_says(
    tmp_path: Path, redis_server: RedisServer, cron_env: tuple[dict[str, str], str]
) -> None:
    env, queue = cron_env
    rng = random.Random(7)
    procs = [SchedulerProc(tmp_path, env, n) for n in range(3)]
    started = len(procs)
    every: list[SchedulerProc] = list(procs)
    try:
        wait_until(lambda: all(p.synced() for p in procs), 30, "three schedulers up")
        # Rolling SIGKILLs: one scheduler at a time dies mid-run and comes back.
        for _ in range(4):
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            i = rng.randrange(len(procs))
            procs[i].kill()
            procs[i] = SchedulerProc(tmp_path, env, started)
            every.append(procs[i])
            started += 1
        await asyncio.sleep(2)
        # Then all of them at once, for about four seconds.
        for p in procs:
            p.kill()
        down = time.time()
        await asyncio.sleep(4)
        procs = [SchedulerProc(tmp_path, env, started + n) for n in range(2)]
        every.extend(procs)
        wait_until(lambda: all(p.synced() for p in procs), 30, "two schedulers back")
        up = time.time()
        await asyncio.sleep(3)
        for p in procs:
            p.term()
    finally:
        for p in every:
            p.kill()
    infos = {i.name: i for i in await schedule_infos(asyncq.App(redis_server.url).broker, [queue])}
    # catchup="all": not one fire time lost, killed schedulers and downtime included.
    all_times = await fire_times(redis_server.url, queue, "tick-all")
    assert gaps(all_times) == []
    assert infos["tick-all"].fired == len(all_times)
    # catchup="skip": the fire times of the downtime are skipped, and only those (a margin of
    # a second each side: a fire time is taken within about a millisecond of coming due, but
    # the kill and the restart are observed from here).
    skip_times = await fire_times(redis_server.url, queue, "tick-skip")
    missing = gaps(skip_times)
    assert missing, "the downtime skipped nothing"
    assert all(down * 1000 - 1000 <= t <= up * 1000 + 1000 for t in missing), (missing, down, up)
    assert infos["tick-skip"].fired == len(skip_times)
    assert skip_times[-1] >= up * 1000  # and it fired again after the restart
    # A killed scheduler may die between its fire and its log line, never log one twice.
    for name, times in (("tick-all", all_times), ("tick-skip", skip_times)):
        assert sum(p.fired(name) for p in every) <= len(times)


def test_the_schedules_commands_list_pause_resume_and_remove(
    tmp_path: Path, redis_server: RedisServer, cron_env: tuple[dict[str, str], str]
) -> None:
    env, queue = cron_env
    url = ["--url", redis_server.url]
    proc = SchedulerProc(tmp_path, env, 0)
    try:
        wait_until(proc.synced, 30, "the scheduler up")
        listed = run_cli("asyncq", *url, "schedules", "--queue", queue)
        assert listed.returncode == 0, listed.stderr
        rows = listed.stdout.splitlines()
        assert [r.split()[0] for r in rows] == ["tick-all", "tick-skip"]
        assert "every 1s" in rows[1] and "cron:tick('skip')" in rows[1]
        paused = run_cli("asyncq", *url, "schedules", "pause", "tick-skip")
        assert paused.returncode == 0 and "paused schedule 'tick-skip'" in paused.stdout
        listed = run_cli("asyncq", *url, "schedules", "--queue", queue)
        assert "next paused" in listed.stdout.splitlines()[1]
        before = proc.fired("tick-skip")
        time.sleep(2.2)
        assert proc.fired("tick-skip") == before
        assert run_cli("asyncq", *url, "schedules", "resume", "tick-skip").returncode == 0
        wait_until(lambda: proc.fired("tick-skip") > before, 5, "a fire after resume")
        removed = run_cli("asyncq", *url, "schedules", "remove", "tick-skip")
        assert removed.returncode == 0 and "removed" in removed.stdout
        listed = run_cli("asyncq", *url, "schedules", "--queue", queue, "--json")
        assert [r for r in listed.stdout.splitlines() if '"tick-skip"' in r] == []
        missing = run_cli("asyncq", *url, "schedules", "pause", "nope")
        assert missing.returncode == 1 and "no schedule named 'nope'" in missing.stderr
        needs = run_cli("asyncq", *url, "schedules", "pause")
        assert needs.returncode == 2 and "needs the schedule's name" in needs.stderr
    finally:
        proc.kill()


def test_worker_no_scheduler_fires_nothing(
    tmp_path: Path, redis_server: RedisServer, cron_env: tuple[dict[str, str], str]
) -> None:
    env, queue = cron_env
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [script("asyncq-worker"), "tests.apps.cron:app", "--no-scheduler"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(lambda: " started: queues " in log_path.read_text(), 30, "the worker up")
        time.sleep(1.5)
        assert "schedule tick" not in log_path.read_text()
        listed = run_cli("asyncq", "--url", redis_server.url, "schedules", "--queue", queue)
        assert listed.stdout == ""
    finally:
        proc.kill()
        proc.wait(10)


def test_a_fire_job_id_names_its_schedule_and_time() -> None:
    assert fire_job_id("nightly.db", 1_700_000_000_000) == "sched:nightly.db:1700000000000"
    assert fire_of("sched:a:b:12") == ("a:b", 12)  # names may hold ':'
    assert fire_of(fire_job_id("x", 5)) == ("x", 5)
    for other in ("job-1", "sched:", "sched:x:", "sched::5", "sched:x:1e3"):
        assert fire_of(other) is None


async def test_the_schedulers_sleep_ends_quietly_when_its_time_is_up() -> None:
    # On Python 3.10 asyncio.wait_for raises asyncio.TimeoutError, which is not the builtin
    # TimeoutError until 3.11: suppressing the builtin alone let it escape and end the worker
    # ("internal loop ended unexpectedly") about a second after a schedule's first fire.
    from asyncq.schedule import _wait  # noqa: PLC0415 (the private helper under test)

    started = time.monotonic()
    await _wait(asyncio.Event(), 0.01)
    assert time.monotonic() - started < 5
