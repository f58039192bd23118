"""``asyncq-worker`` and ``asyncq`` run as subprocesses, the way users run them."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncq
from tests.apps import sample
from tests.conftest import RedisServer, free_port
from tests.procutil import SAMPLE, WorkerProc, await_until, run_cli, sample_env

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def procs() -> Iterator[list[WorkerProc]]:
    started: list[WorkerProc] = []
    yield started
    for p in started:
        p.close()


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
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)


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
