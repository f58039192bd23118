"""``asyncq-worker`` and ``asyncq`` run as subprocesses, the way users run them."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import asyncq
from tests.apps import sample
from tests.conftest import RedisServer, free_port
from tests.procutil import (
    PYTHONPATH,
    ROOT,
    SAMPLE,
    WorkerProc,
    await_until,
    run_cli,
    sample_env,
    script,
)

pytestmark = pytest.mark.timeout(60)


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("prog", ["asyncq-worker", "asyncq"])
def test_version(prog: str) -> None:
    out = run_cli(prog, "--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"asyncq {asyncq.__version__}"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["nope.missing:app"], "cannot import 'nope.missing'"),
        (["tests.apps.sample:nothing"], "is not an asyncq.App"),
        ([SAMPLE, "-q", "emails=x"], "bad queue spec 'emails=x'"),
    ],
)
def test_worker_usage_errors(redis_server: RedisServer, args: list[str], expect: str) -> None:
    env = sample_env(redis_server.url, "unused")
    out = run_cli("asyncq-worker", *args, env=env)
    assert out.returncode != 0
    assert expect in one_line_error(out.stderr)
    debug = run_cli("asyncq-worker", *args, "--log-level", "debug", env=env)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and expect in debug.stderr


def _garbage_server(reply: bytes | None) -> tuple[int, socket.socket]:
    """A TCP server that answers every connection with ``reply`` (or never answers)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if reply is not None:
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], srv


@pytest.mark.parametrize("kind", ["refused", "not-redis", "silent"])
def test_worker_unreachable_redis_fails_fast(kind: str) -> None:
    srv = None
    if kind == "refused":
        port = free_port()
    else:
        port, srv = _garbage_server(
            b"HTTP/1.1 400 Bad Request\r\n\r\n" if kind == "not-redis" else None
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        t0 = time.monotonic()
        out = run_cli("asyncq-worker", SAMPLE, env=sample_env(url, "q"))
        elapsed = time.monotonic() - t0
        line = one_line_error(out.stderr)
        assert out.returncode == 2, out.stderr  # not a crash at exit (134/139)
        assert line.startswith(f"error: cannot reach broker {url}")
        assert elapsed < 8
        admin = run_cli("asyncq", "--url", url, "info")
        assert admin.returncode == 2 and url in one_line_error(admin.stderr)
    finally:
        if srv is not None:
            srv.close()


async def test_worker_json_logs_and_config_file(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    app = sample.build(redis_server.url, queue)
    env = sample_env(redis_server.url, queue)
    config = tmp_path / "worker.toml"
    config.write_text(f'[worker]\napp = "{SAMPLE}"\nqueues = "{queue}=5"\nlog_format = "json"\n')
    for args in (
        [SAMPLE, "-q", f"{queue}=5", "--log-format", "json"],
        ["--config", str(config)],
    ):
        worker = WorkerProc(tmp_path, env, *args[1:], app=args[0], name=f"w{len(procs)}")
        procs.append(worker)
        worker.started()
        handles = await app.tasks["sample:add"].enqueue_many([((i, 1), {}) for i in range(10)])
        assert [await h.result(timeout=10) for h in handles] == [i + 1 for i in range(10)]
        worker.signal(signal.SIGTERM)
        assert worker.wait(10) == 0
        records = [json.loads(line) for line in worker.log().splitlines()]
        assert any(f"{queue}" in r["message"] and "started" in r["message"] for r in records)
        assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)


async def test_admin_commands(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    url = redis_server.url
    app = sample.build(url, queue)
    env = sample_env(url, queue)

    def admin(*args: str) -> str:
        out = run_cli("asyncq", "--url", url, *args, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # enqueue by name; nothing runs it yet
    job_id = admin("enqueue", "sample:add", "--args", "[1,2]", "--queue", queue).strip()
    assert json.loads(admin("job", job_id))["state"] == "queued"
    info = admin("info")
    row = next(ln.split() for ln in info.splitlines() if ln.startswith(queue))
    assert row[1:3] == ["0", "1"]  # scheduled, queued

    worker = WorkerProc(tmp_path, env, "-q", f"{queue}=5")
    procs.append(worker)
    worker.started()
    assert await app.job(job_id).result(timeout=10) == 3
    shown = json.loads(admin("job", job_id, "--queue", queue))
    assert shown["id"] == job_id and shown["state"] == "succeeded" and shown["result"] == 3
    info = admin("info")
    assert "workers: 1" in info and f":{worker.pid}:" in info
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0

    # a dead job goes back with retry; purge deletes queued, scheduled and dead jobs
    dead = await app.tasks["sample:boom"].enqueue()
    worker = WorkerProc(tmp_path, env, "-q", f"{queue}=5", name="w2")
    procs.append(worker)
    worker.started()
    await await_until(lambda: _state_is(dead, "dead"), 10, "the job to be dead-lettered")
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert "moved 1 job(s)" in admin("retry", queue)
    assert await dead.status() == "queued"
    await app.tasks["sample:add"].options(delay=60).enqueue(1, 1)
    await app.tasks["sample:add"].enqueue(1, 1)
    assert "deleted 3 job(s)" in admin("purge", queue, "--yes")
    counts = await app.broker.counts(queue)
    assert counts.get("queued", 0) == counts.get("scheduled", 0) == counts.get("dead", 0) == 0
    missing = run_cli("asyncq", "--url", url, "job", "nope", "--queue", queue, env=env)
    assert missing.returncode != 0 and "no job nope" in one_line_error(missing.stderr)


async def _state_is(handle: asyncq.JobHandle[object], state: str) -> bool:
    return await handle.status() == state


# ---- asyncq-worker --config, --url (issue 7, point 8) -------------------------------------------


def _config(tmp_path: Path, body: str, name: str = "worker.toml") -> str:
    path = tmp_path / name
    path.write_text(f"[worker]\n{body}\n")
    return str(path)


def _served_queues(worker: WorkerProc) -> dict[str, int]:
    """The ``{queue: concurrency}`` a started worker logged."""
    line = next(ln for ln in worker.log().splitlines() if " started: queues " in ln)
    queues, _, _loop = line.partition(" started: queues ")[2].rpartition(", ")
    served: dict[str, int] = ast.literal_eval(queues)
    return served


def _loop_of(worker: WorkerProc) -> str:
    """The event loop a started worker logged (``uvloop`` or ``asyncio``)."""
    line = next(ln for ln in worker.log().splitlines() if " started: queues " in ln)
    return line.rpartition(", ")[2].removesuffix(" loop")


@pytest.mark.parametrize(
    ("args", "config", "expect"),
    [
        ([], None, "uvloop"),  # the default: uvloop where it is installed
        (["--loop", "asyncio"], None, "asyncio"),
        (["--loop", "uvloop"], None, "uvloop"),
        ([], 'loop = "asyncio"', "asyncio"),
        (["--loop", "uvloop"], 'loop = "asyncio"', "uvloop"),  # the flag wins
    ],
    ids=["default", "asyncio", "uvloop", "config", "flag-over-config"],
)
async def test_worker_runs_on_uvloop_by_default_and_loop_chooses(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    procs: list[WorkerProc],
    args: list[str],
    config: str | None,
    expect: str,
) -> None:
    if config is not None:
        args = [*args, "--config", _config(tmp_path, config)]
    worker = WorkerProc(tmp_path, sample_env(redis_server.url, queue), *args)
    procs.append(worker)
    worker.started()
    assert _loop_of(worker) == expect
    app = sample.build(redis_server.url, queue)
    assert await (await app.tasks["sample:add"].enqueue(2, 3)).result(timeout=10) == 5


@pytest.mark.parametrize(
    ("queues", "expect"),
    [
        ("{{ {q} = 3, {q}-b = 2 }}", (3, 2)),
        ('"{q}=3,{q}-b"', (3, 4)),
        ('["{q}", "{q}-b"]', (4, 4)),
    ],
    ids=["table", "string", "list"],
)
async def test_worker_config_queues_as_table_string_or_list(
    redis_server: RedisServer,
    queue: str,
    tmp_path: Path,
    procs: list[WorkerProc],
    queues: str,
    expect: tuple[int, int],
) -> None:
    app = sample.build(redis_server.url, queue)
    config = _config(tmp_path, f"concurrency = 4\nqueues = {queues.format(q=queue)}")
    worker = WorkerProc(tmp_path, sample_env(redis_server.url, queue), "--config", config)
    procs.append(worker)
    worker.started()
    assert _served_queues(worker) == {queue: expect[0], f"{queue}-b": expect[1]}
    assert await (await app.tasks["sample:add"].enqueue(2, 3)).result(timeout=10) == 5


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("concurency = 5", "unknown key 'concurency' (did you mean 'concurrency'?); known keys: "),
        ('queue = "a"', "unknown key 'queue' (did you mean 'queues'?); known keys: app, url,"),
        ('concurrency = "5"', "concurrency must be an integer >= 1, got '5'"),
        ("concurrency = 0", "concurrency must be an integer >= 1, got 0"),
        ("queues = { a = 0 }", "bad concurrency 0 for queue 'a' in queues"),
        ("queues = 5", "queues must be a string"),
        ("prefetch = 1", "prefetch must be true or false, got 1"),
        ("grace = -1", "grace must be a number of seconds >= 0, got -1"),
        ('log_level = "loud"', "log_level must be one of debug, info, warning, error"),
        ("wait_for_redis = true", "wait_for_redis must be a number of seconds >= 0, got True"),
        ('loop = "trio"', "loop must be one of auto, asyncio, uvloop"),
    ],
)
def test_worker_config_errors_are_one_line(
    redis_server: RedisServer, tmp_path: Path, body: str, expect: str
) -> None:
    config = _config(tmp_path, body)
    out = run_cli(
        "asyncq-worker", SAMPLE, "--config", config, env=sample_env(redis_server.url, "q")
    )
    assert out.returncode == 2
    line = one_line_error(out.stderr)
    assert line.startswith(f"error: config {config!r}: ") and expect in line, line


async def test_worker_url_from_config_and_flag_override_the_app(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    app = sample.build(redis_server.url, queue)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    env = sample_env(nowhere, queue)  # the app itself points at a port nobody listens on
    runs = [
        ("--config", _config(tmp_path, f'url = "{redis_server.url}"', "good.toml")),
        ("--config", _config(tmp_path, f'url = "{nowhere}"', "bad.toml"), "--url", app.url),
    ]
    for i, args in enumerate(runs):
        worker = WorkerProc(tmp_path, env, *args, "-q", f"{queue}=2", name=f"w{i}")
        procs.append(worker)
        worker.started()
        assert _served_queues(worker) == {queue: 2}  # -q on the command line beats the file
        assert await (await app.tasks["sample:add"].enqueue(i, 1)).result(timeout=10) == i + 1
        worker.signal(signal.SIGTERM)
        assert worker.wait(10) == 0


# ---- asyncq enqueue (point 9) --------------------------------------------------------------------

REPORTS_APP = "tests.apps.clitasks:app"


async def _lease_one(app: asyncq.App, queue: str) -> asyncq.Job:
    """Lease the job waiting in ``queue`` with a bare consumer, to read what it carries."""
    consumer = await app.broker.consumer(
        queue, "cli-test", ["reports:build"], lease=30, heartbeat=10, reap=5,
        idle_wait=0.1, result_ttl=60, dead_ttl=60, max_payload=1 << 20,
    )  # fmt: skip
    try:
        jobs = await consumer.fetch(1)
        assert len(jobs) == 1
        consumer.release(jobs[0])
        return jobs[0]
    finally:
        await consumer.close(5)


async def test_enqueue_with_app_uses_the_task_options(
    redis_server: RedisServer, queue: str
) -> None:
    env = sample_env(redis_server.url, queue)
    app = asyncq.App(redis_server.url)
    reports = f"{queue}-reports"

    def enqueue(*args: str) -> str:
        out = run_cli("asyncq", "--app", REPORTS_APP, "enqueue", "reports:build", *args, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    job_id = enqueue("--args", "[2024]", "--kwargs", '{"month": 5}')
    info = await app.broker.job(reports, job_id)
    assert info is not None, "the job went to the task's queue"
    assert (info.state, info.max_attempts, info.priority) == ("queued", 5, 3)
    leased = await _lease_one(app, reports)
    assert (leased.id, leased.timeout, leased.args, leased.kwargs) == (
        job_id, 7.5, (2024,), {"month": 5},
    )  # fmt: skip

    other = f"{queue}-other"
    job_id = enqueue("--args", "[2024]", "--queue", other, "--priority", "8", "--delay", "60")
    info = await app.broker.job(other, job_id)
    assert info is not None
    assert (info.state, info.max_attempts, info.priority) == ("scheduled", 5, 8)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--delay", "-5"], "--delay must be >= 0 seconds, got -5"),
        (["--priority", "10"], "--priority must be between 0 and 9, got 10"),
        (["--priority", "-1"], "--priority must be between 0 and 9, got -1"),
        (["--args", '{"x": 1}'], "--args must be a JSON list"),
        (["--kwargs", "[1]"], "--kwargs must be a JSON object"),
        (["--args", "[1,"], "--args/--kwargs must be JSON"),
        (["--retries", "2"], "--retries is for tasks enqueued without --app"),
        (["--args", "[1, 2, 3]"], "build() takes from 1 to 2 positional arguments but 3 were"),
        (["--args", "[1]", "--kwargs", '{"day": 1}'], "unexpected keyword argument 'day'"),
        (
            ["--app-task", "reports:buld"],
            "has no task 'reports:buld' (did you mean 'reports:build'?)",
        ),
        (["--raw", "--retries", "-1"], "--retries must be >= 0, got -1"),
        (["--raw", "--delay", "-5"], "--delay must be >= 0 seconds, got -5"),
    ],
)
async def test_enqueue_refuses_bad_options(
    redis_server: RedisServer, queue: str, args: list[str], expect: str
) -> None:
    task = "reports:build"
    prefix = ["--app", REPORTS_APP]
    if args[0] == "--app-task":
        task, args = args[1], args[2:]
    elif args[0] == "--raw":
        prefix, args = ["--url", redis_server.url], [*args[1:], "--queue", queue]
    env = sample_env(redis_server.url, queue)
    out = run_cli("asyncq", *prefix, "enqueue", task, *args, env=env)
    assert out.returncode == 2
    assert expect in one_line_error(out.stderr)
    broker = asyncq.App(redis_server.url).broker
    for q in (queue, f"{queue}-reports"):
        counts = await broker.counts(q)
        assert counts.get("queued", 0) == counts.get("scheduled", 0) == 0, "nothing enqueued"


# ---- asyncq jobs, pipes, purge (point 10) --------------------------------------------------------


async def _dead_letter(
    url: str, queue: str, n: int, tmp_path: Path, procs: list[WorkerProc]
) -> list[str]:
    """Enqueue ``n`` failing jobs and let a real worker dead-letter them all."""
    app = sample.build(url, queue)
    handles = await app.tasks["sample:boom"].enqueue_many([((), {})] * n)
    worker = WorkerProc(tmp_path, sample_env(url, queue), "-q", f"{queue}=50", name="dl")
    procs.append(worker)
    worker.started()

    async def all_dead() -> bool:
        return (await app.broker.counts(queue)).get("dead", 0) == n

    # Generous: n immediate failures take well under a second; a busy CI box may be slow.
    await await_until(all_dead, 40, f"{n} jobs to be dead-lettered")
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    return [h.id for h in handles]


async def test_jobs_lists_dead_jobs_with_their_error(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    url = redis_server.url
    ids = await _dead_letter(url, queue, 3, tmp_path, procs)
    waiting = await sample.build(url, queue).tasks["sample:add"].enqueue(1, 2)

    out = run_cli("asyncq", "--url", url, "jobs", queue, "--state", "dead")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["id", "task", "state", "tries"]
    assert sorted(r.split()[0] for r in rows) == sorted(ids)
    for row in rows:
        assert row.split()[1:4] == ["sample:boom", "dead", "1/1"]
        assert row.endswith("  RuntimeError: boom [exception]")

    out = run_cli("asyncq", "--url", url, "jobs", queue, "--state", "dead", "--json")
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(r["id"] for r in records) == sorted(ids)
    for r in records:
        assert (r["task"], r["state"], r["attempts"], r["max_attempts"]) == (
            "sample:boom",
            "dead",
            1,
            1,
        )
        assert r["error"]["type"] == "RuntimeError" and r["error"]["message"] == "boom"
        assert "raise RuntimeError" in r["error"]["traceback"]
        assert r["enqueued_at"] <= r["started_at"] <= r["finished_at"]

    out = run_cli("asyncq", "--url", url, "jobs", queue, "--state", "queued", "--json")
    assert [json.loads(line)["id"] for line in out.stdout.splitlines()] == [waiting.id]
    bad = run_cli("asyncq", "--url", url, "jobs", queue, "--state", "succeeded")
    assert bad.returncode == 2 and "invalid choice: 'succeeded'" in bad.stderr


async def test_jobs_pages_through_more_than_one_page_and_survives_head(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    url = redis_server.url
    ids = await _dead_letter(url, queue, 250, tmp_path, procs)
    out = run_cli("asyncq", "--url", url, "jobs", queue, "--limit", "230", "--json")
    assert out.returncode == 0, out.stderr
    listed = [json.loads(line)["id"] for line in out.stdout.splitlines()]
    assert len(listed) == 230 and len(set(listed)) == 230 and set(listed) <= set(ids)
    out = run_cli("asyncq", "--url", url, "jobs", queue, "--limit", "1000")
    assert len(out.stdout.splitlines()) == 1 + 250
    out = run_cli("asyncq", "--url", url, "jobs", queue, "--limit", "230")
    assert len(out.stdout.splitlines()) == 1 + 230
    assert out.stderr.strip() == "(230 of 250 dead jobs shown; see --limit)"

    # 250 JSON records with tracebacks exceed a pipe's 64 KiB buffer, so the writer surely hits
    # a closed pipe once head has exited.
    for cmd in (f"jobs {queue} --limit 1000 --json", f"jobs {queue}", "info"):
        piped = subprocess.run(
            ["bash", "-c", f"{script('asyncq')} --url {url} {cmd} | head -1"],
            capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=PYTHONPATH),
            timeout=20, check=False,
        )  # fmt: skip
        assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 1
        assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


async def test_purge_without_a_terminal_needs_yes(redis_server: RedisServer, queue: str) -> None:
    app = sample.build(redis_server.url, queue)
    await app.tasks["sample:add"].enqueue(1, 1)
    out = subprocess.run(
        [script("asyncq"), "--url", redis_server.url, "purge", queue],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=20, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "pass --yes" in one_line_error(out.stderr)
    assert (await app.broker.counts(queue))["queued"] == 1, "nothing was deleted"


async def test_pause_holds_every_partition_until_resume(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    url = redis_server.url
    app = sample.build(url, queue, partitions={queue: 2})
    add = app.tasks["sample:add"]
    await add.enqueue(0, 0)  # the queue (both partitions) exists before the worker starts
    env = dict(sample_env(url, queue), ASYNCQ_TEST_PARTITIONS=f"{queue}=2")
    worker = WorkerProc(tmp_path, env)
    procs.append(worker)
    worker.started()
    out = run_cli("asyncq", "--url", url, "pause", queue)
    assert out.returncode == 0 and out.stdout.strip() == f"paused {queue!r}", out
    assert (
        run_cli("asyncq", "--url", url, "pause", queue)
        .stdout.strip()
        .endswith("was already paused")
    )
    handles = [await add.enqueue(i, 1) for i in range(4)]  # round-robin: both partitions
    # Held: the worker is idle and would run them within milliseconds otherwise.
    time.sleep(1.0)
    assert {await h.status() for h in handles} == {"queued"}
    info = run_cli("asyncq", "--url", url, "info").stdout
    assert f"{queue}" in info and "(paused)" in info, info
    out = run_cli("asyncq", "--url", url, "resume", queue)
    assert out.returncode == 0 and out.stdout.strip() == f"resumed {queue!r}", out
    assert [await h.result(timeout=10) for h in handles] == [1, 2, 3, 4]


# ---- asyncq-worker --wait-for-redis (point 11) ---------------------------------------------------


async def test_wait_for_redis_starts_once_redis_comes_up(
    queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    server = RedisServer()
    assert server.proc is not None
    server.proc.kill()  # keep its port, start it again once the worker is waiting
    server.proc.wait()
    server.proc = None
    try:
        env = sample_env(server.url, queue)
        worker = WorkerProc(tmp_path, env, "-q", f"{queue}=2", "--wait-for-redis", "10")
        procs.append(worker)
        worker.wait_log("waiting for Redis at redis://127.0.0.1:")
        time.sleep(2)
        server.start()
        worker.started(timeout=15)  # the worker retries every <= 0.5 s; 15 s is slack for CI
        log = worker.log()
        assert log.count("waiting for Redis at") == 1 and log.count("answered") == 1
        app = sample.build(server.url, queue)
        assert await (await app.tasks["sample:add"].enqueue(1, 2)).result(timeout=10) == 3
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["flag", "config"])
def test_wait_for_redis_gives_up_with_a_clear_error(tmp_path: Path, how: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    args = ["--wait-for-redis", "1"]
    if how == "config":
        args = ["--config", _config(tmp_path, "wait_for_redis = 1")]
    t0 = time.monotonic()
    out = run_cli("asyncq-worker", SAMPLE, *args, env=sample_env(url, "q"))
    elapsed = time.monotonic() - t0
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert sum("waiting for Redis at" in ln for ln in lines) == 1
    assert lines[-1].startswith(f"error: Redis at {url} did not answer within 1s: ")
    assert 1 <= elapsed < 15  # at least the second it was told to wait; 15 s is slack for CI
