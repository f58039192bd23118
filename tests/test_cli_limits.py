"""``asyncq limits``: list the limiter families of queues, set and clear run-time overrides;
and the limits lines of ``asyncq info``. The commands run as subprocesses against a private
redis-server, the way users run them (docs/flow-control.md, "asyncq limits")."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

import asyncq
from tests.conftest import RedisServer, make_app, running
from tests.procutil import PYTHONPATH, await_until, run_cli, sample_env

pytestmark = pytest.mark.timeout(60)


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def admin(url: str, *args: str, env: dict[str, str] | None = None) -> str:
    out = run_cli("asyncq", "--url", url, *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def listed(url: str, queue: str) -> dict[str, dict[str, Any]]:
    """``asyncq limits --queue Q --json``, by family."""
    rows = [
        json.loads(line) for line in admin(url, "limits", "--queue", queue, "--json").splitlines()
    ]
    assert all(r["queue"] == queue for r in rows)
    return {r["family"]: r for r in rows}


async def declare(app: asyncq.App, queue: str, families: dict[str, str]) -> None:
    """What a worker of ``queue`` does at start (``Worker._declare_limits``)."""
    assert await app.broker.set_limits(queue, "declare", sorted(families.items())) == len(families)


FAMILIES = {
    "@{q}": "c=10",
    "t:cli:send": "r=20 p=1000 b=0",
    "k:cli:send:tenant": "r=5 p=1000 b=0 c=2",
    "o:cli:send:account": "c=1",
}


def families_of(queue: str) -> dict[str, str]:
    return {f.format(q=queue): s for f, s in FAMILIES.items()}


async def test_limits_lists_each_family_and_info_shows_them(
    redis_server: RedisServer, queue: str
) -> None:
    url = redis_server.url
    app = make_app(url, queue)
    await declare(app, queue, families_of(queue))
    rows = listed(url, queue)
    assert list(rows) == sorted(families_of(queue))
    assert rows[f"@{queue}"] == {
        "queue": queue,
        "family": f"@{queue}",
        "declared": "c=10",
        "override": "",
        "effective": {"rate_limit": None, "burst": None, "concurrency_limit": 10},
        "running": 0,
        "waiting": 0,
        "keys_waiting": None,
    }
    keyed = rows["k:cli:send:tenant"]
    assert keyed["effective"] == {"rate_limit": "5/s", "burst": 0, "concurrency_limit": 2}
    assert keyed["running"] is None and keyed["waiting"] is None and keyed["keys_waiting"] == 0

    table = admin(url, "limits", "--queue", queue).splitlines()
    head = "queue family declared override effective running waiting keys waiting"
    assert table[0].split() == head.split()
    by_family = {line.split()[1]: line for line in table[1:]}
    assert list(by_family) == sorted(families_of(queue))
    assert "20/s" in by_family["t:cli:send"]
    assert "2 at once, 5/s per key" in by_family["k:cli:send:tenant"]

    # `info` lists a queue once a job was sent to it; its limits follow the counts.
    await app.broker.enqueue(queue, "cli:plain", [], [((), {})], asyncq.task.CoreOptions())
    info = admin(url, "info")
    mine = [line.split() for line in info.split("limits:")[1].splitlines() if queue in line]
    assert [r[1] for r in mine] == sorted(families_of(queue))
    assert mine[0][2:] == ["10", "at", "once", "0", "running,", "0", "group(s)", "waiting"]


async def test_set_writes_an_override_part_by_part_and_clear_drops_it(
    redis_server: RedisServer, queue: str
) -> None:
    url = redis_server.url
    app = make_app(url, queue)
    await declare(app, queue, families_of(queue))
    out = admin(
        url, "limits", "set", "cli:send", "rate_limit=50/s", "concurrency_limit=3", "--queue", queue
    )
    assert out.strip() == (
        f"set: t:cli:send in queue {queue!r}, override c=3 r=50 p=1000 b=0; "
        "in force: 3 at once, 50/s"
    )
    row = listed(url, queue)["t:cli:send"]
    assert row["declared"] == "r=20 p=1000 b=0" and row["override"] == "c=3 r=50 p=1000 b=0"
    assert row["effective"] == {"rate_limit": "50/s", "burst": 0, "concurrency_limit": 3}

    # Only the parts given change; the rest keep their override.
    admin(url, "limits", "set", "t:cli:send", "rate_limit=100/5m", "burst=4", "--queue", queue)
    row = listed(url, queue)["t:cli:send"]
    assert row["override"] == "c=3 r=100 p=300000 b=4"
    assert row["effective"] == {"rate_limit": "100/5m", "burst": 4, "concurrency_limit": 3}
    # off writes -1: that limit is gone, even though the declaration has one.
    admin(url, "limits", "set", "t:cli:send", "rate_limit=off", "--queue", queue)
    row = listed(url, queue)["t:cli:send"]
    assert row["override"] == "c=3 r=-1"
    assert row["effective"] == {"rate_limit": None, "burst": None, "concurrency_limit": 3}
    again = admin(url, "limits", "set", "t:cli:send", "rate_limit=off", "--queue", queue)
    assert again.startswith("unchanged")
    # A keyed family and the queue's own family (whose queue it names) are set as named.
    admin(url, "limits", "set", "k:cli:send:tenant", "concurrency_limit=off", "--queue", queue)
    admin(url, "limits", "set", f"@{queue}", "concurrency_limit=0")
    rows = listed(url, queue)
    assert rows["k:cli:send:tenant"]["effective"]["concurrency_limit"] is None
    assert rows["k:cli:send:tenant"]["effective"]["rate_limit"] == "5/s"
    assert rows[f"@{queue}"]["effective"]["concurrency_limit"] == 0

    cleared = admin(url, "limits", "clear", "cli:send", "--queue", queue)
    assert cleared.strip() == (
        f"cleared: t:cli:send in queue {queue!r}, no override; in force, as declared: 20/s"
    )
    row = listed(url, queue)["t:cli:send"]
    assert row["override"] == "" and row["effective"]["rate_limit"] == "20/s"
    twice = run_cli("asyncq", "--url", url, "limits", "clear", "cli:send", "--queue", queue)
    assert twice.returncode == 1
    assert f"t:cli:send has no override in queue(s) {queue!r}" in one_line_error(twice.stderr)


async def test_set_and_clear_find_the_queues_that_declare_the_family(
    redis_server: RedisServer, queue: str
) -> None:
    url = redis_server.url
    app = make_app(url, queue)
    other = f"{queue}-other"
    task = f"cli:{queue}"  # a family no other test declares
    for q in (queue, other):
        await declare(app, q, {f"t:{task}": "c=2"})
        await app.broker.enqueue(q, "cli:plain", [], [((), {})], asyncq.task.CoreOptions())
    out = admin(url, "limits", "set", task, "concurrency_limit=5").splitlines()
    assert sorted(out) == sorted(
        f"set: t:{task} in queue {q!r}, override c=5; in force: 5 at once" for q in (queue, other)
    )
    assert listed(url, other)[f"t:{task}"]["effective"]["concurrency_limit"] == 5
    admin(url, "limits", "clear", f"t:{task}")
    for q in (queue, other):
        assert listed(url, q)[f"t:{task}"]["override"] == ""
    # Not declared anywhere: refused, unless --queue says where.
    missing = run_cli("asyncq", "--url", url, "limits", "set", f"{task}x", "concurrency_limit=1")
    assert missing.returncode == 2
    line = one_line_error(missing.stderr)
    assert f"no queue declares limiter family 't:{task}x' (did you mean 't:{task}'?)" in line
    forced = run_cli(
        "asyncq", "--url", url, "limits", "set", f"{task}x", "--queue", queue, "concurrency_limit=1"
    )
    assert forced.returncode == 0, forced.stderr
    assert "no worker declared" in forced.stderr
    assert listed(url, queue)[f"t:{task}x"]["override"] == "c=1"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["cli:send", "rate-limit=5/s"], "no option 'rate-limit' (did you mean 'rate_limit'?)"),
        (["cli:send", "concurency_limit=1"], "(did you mean 'concurrency_limit'"),
        (["cli:send", "rate_limit=5/y"], 'rate_limit: a rate is "<starts>/<period>"'),
        (["cli:send", "rate_limit=0/s"], 'rate_limit: a rate is "<starts>/<period>"'),
        (["cli:send", "concurrency_limit=-1"], "concurrency_limit must be a whole number >= 0"),
        (["cli:send", "concurrency_limit=two"], "concurrency_limit must be a whole number >= 0"),
        (["cli:send", "burst=2"], "burst goes with rate_limit"),
        (["cli:send", "rate_limit=5/s", "burst=x"], "burst must be a whole number >= 0"),
        (["cli:send", "rate_limit=5/s", "rate_limit=6/s"], "rate_limit given twice"),
        (["cli:send", "rate_limit"], "takes OPTION=VALUE, got 'rate_limit'"),
        (["cli:send"], "asyncq limits set needs OPTION=VALUE"),
        ([], "asyncq limits set needs a task or a limiter family"),
        (["o:cli:send:account", "concurrency_limit=2"], "an ordered key's limiter"),
        (["@elsewhere", "concurrency_limit=2"], "is the limiter of queue 'elsewhere', not"),
    ],
)
async def test_bad_set_is_refused_with_one_line_and_writes_nothing(
    redis_server: RedisServer, queue: str, args: list[str], expect: str
) -> None:
    url = redis_server.url
    app = make_app(url, queue)
    await declare(app, queue, families_of(queue))
    out = run_cli("asyncq", "--url", url, "limits", "set", *args, "--queue", queue)
    assert out.returncode == 2
    assert expect in one_line_error(out.stderr)
    assert all(r["override"] == "" for r in listed(url, queue).values())


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["clear", "cli:send", "burst=1"], "clear takes no OPTION=VALUE"),
        (["clear"], "clear needs a task or a limiter family"),
        (["list", "cli:send"], "[list] takes no name"),
    ],
)
def test_other_misuses_are_refused(redis_server: RedisServer, args: list[str], expect: str) -> None:
    out = run_cli("asyncq", "--url", redis_server.url, "limits", *args)
    assert out.returncode == 2
    assert expect in one_line_error(out.stderr)


async def test_an_override_applies_at_once_to_waiting_jobs(
    redis_server: RedisServer, queue: str
) -> None:
    url = redis_server.url
    app = make_app(url, queue)

    @app.task(name="cli:held", concurrency_limit=0)  # holds every job until raised
    async def held(i: int) -> int:
        return i

    # idle_wait: without the wake-up of a limits change, the worker would sleep 30 s.
    async with running(app, idle_wait=30.0):
        handles = await held.enqueue_many([((i,), {}) for i in range(3)])

        async def parked() -> bool:
            return listed(url, queue)["t:cli:held"]["waiting"] == 1

        await await_until(parked, 10, "the group to wait on its full limiter")
        await asyncio.sleep(0.3)
        assert [await h.status() for h in handles] == ["queued"] * 3
        t0 = time.monotonic()
        admin(url, "limits", "set", "cli:held", "concurrency_limit=1", "--queue", queue)
        assert [await h.result(timeout=5) for h in handles] == [0, 1, 2]
        assert time.monotonic() - t0 < 5
        row = listed(url, queue)["t:cli:held"]
        assert row["declared"] == "c=0" and row["effective"]["concurrency_limit"] == 1
        assert row["waiting"] == 0 and row["running"] == 0

        # Cleared: the declaration (0) holds new jobs again.
        admin(url, "limits", "clear", "cli:held", "--queue", queue)
        late = await held.enqueue(9)
        await asyncio.sleep(0.5)
        assert await late.status() == "queued"
        admin(url, "limits", "set", "cli:held", "concurrency_limit=off", "--queue", queue)
        assert await late.result(timeout=5) == 9


def build_app(url: str, queue: str) -> asyncq.App:
    """The app of the ``--app`` test; its module (written by the test) calls this."""
    app = asyncq.App(url, default_queue=queue)
    app.queue_options(queue, concurrency_limit=4)

    @app.task(name="limapp:two", concurrency_limit=2)
    async def two(i: int) -> int:
        return i

    @app.task(name="limapp:tenant", limits=[asyncq.RateLimit("1/s", key="tenant")])
    async def per_tenant(tenant: str) -> str:
        return tenant

    return app


async def test_with_app_a_task_name_is_checked_against_its_limits(
    redis_server: RedisServer, queue: str, tmp_path: Path
) -> None:
    url = redis_server.url
    (tmp_path / "limapp.py").write_text(
        f"from tests.test_cli_limits import build_app\n\napp = build_app({url!r}, {queue!r})\n"
    )
    env = sample_env(url, queue)
    env["PYTHONPATH"] = f"{tmp_path}:{PYTHONPATH}"
    families = build_app(url, queue).limit_families(queue)
    assert sorted(families) == [f"@{queue}", "k:limapp:tenant:tenant", "t:limapp:two"]
    await declare(make_app(url, queue), queue, families)

    def with_app(*args: str) -> Any:
        return run_cli("asyncq", "--app", "limapp:app", "limits", *args, env=env)

    # Without --queue, the app's queues are listed too (nothing was enqueued to this one).
    out = with_app()
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert sorted(r[1] for r in rows if r[0] == queue) == sorted(families)
    done = with_app("set", "limapp:two", "concurrency_limit=3")
    assert done.returncode == 0, done.stderr
    assert "override c=3; in force: 3 at once" in done.stdout
    assert listed(url, queue)["t:limapp:two"]["effective"]["concurrency_limit"] == 3

    keyed = with_app("set", "limapp:tenant", "rate_limit=2/s")
    assert keyed.returncode == 2
    assert (
        "task 'limapp:tenant' has no task-wide limit (rate_limit=, concurrency_limit=); "
        "its limiter families: k:limapp:tenant:tenant"
    ) in one_line_error(keyed.stderr)
    unknown = with_app("set", "limapp:tow", "concurrency_limit=1")
    assert unknown.returncode == 2
    assert "limapp:app has no task 'limapp:tow' (did you mean 'limapp:two'" in one_line_error(
        unknown.stderr
    )
    # The family itself works with or without the app.
    family = with_app("set", "k:limapp:tenant:tenant", "rate_limit=2/s")
    assert family.returncode == 0, family.stderr
    assert listed(url, queue)["k:limapp:tenant:tenant"]["effective"]["rate_limit"] == "2/s"
