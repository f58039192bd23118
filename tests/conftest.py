"""Fixtures: real redis-server processes on free loopback ports, apps and running workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncq
from tests.cluster import RedisCluster
from tests.procutil import WorkerProc

# ASYNCQ_TEST_SERVER runs another server binary instead (make test-valkey: valkey-server).
REDIS = shutil.which(os.environ.get("ASYNCQ_TEST_SERVER", "redis-server"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """The server exited at start: another process took its port first."""


class RedisServer:
    """A private redis-server process for tests."""

    def __init__(self, *extra: str) -> None:
        if REDIS is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is required when CI is set")
            pytest.skip("redis-server not installed")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="asyncq-redis-")
        self.args = [
            REDIS,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        for _ in range(4):
            try:
                self.start()
                return
            except PortTaken:
                self.port = free_port()
                self.args[2] = str(self.port)
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # Checked first: a server that exited (its port was taken by another process after
            # free_port() found it free) must not be mistaken for that process's server.
            if self.proc.poll() is not None:
                raise PortTaken(self.port)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                # A server with a password answers -NOAUTH: it is up all the same.
                if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                    time.sleep(0.02)  # a failed bind exits at once: make sure it is ours
                    if self.proc.poll() is None:
                        return
                    raise PortTaken(self.port)
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private 3-primary, 3-replica Redis Cluster (tests/cluster.py)."""
    if REDIS is None:
        pytest.fail("redis-server is required for the cluster tests")
    cluster = RedisCluster()
    yield cluster
    cluster.stop()


# ASYNCQ_TEST_CLUSTER=1 (make test-cluster) runs the Redis case of every behaviour test on a
# Redis Cluster instead of one server.
ON_CLUSTER = bool(os.environ.get("ASYNCQ_TEST_CLUSTER"))


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each behaviour test runs on both brokers, so they cannot drift apart."""
    if request.param == "memory":
        return f"memory://t{uuid.uuid4().hex[:10]}"
    if ON_CLUSTER:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def queue() -> str:
    """A queue name of this test's own, so tests never see each other's jobs."""
    return f"q{uuid.uuid4().hex[:10]}"


# Settings for a bare consumer made with ``app.broker.consumer(...)`` in tests.
CONSUMER: dict[str, Any] = dict(
    lease=2.0,
    heartbeat=0.1,
    reap=0.2,
    idle_wait=1.0,
    result_ttl=60.0,
    dead_ttl=60.0,
    max_payload=1 << 20,
)


def make_app(url: str, queue: str, **kwargs: Any) -> asyncq.App:
    """An App with short timings suited to tests."""
    kwargs.setdefault("lease", 2.0)
    kwargs.setdefault("reaper", 0.2)
    return asyncq.App(url, default_queue=queue, **kwargs)


@pytest.fixture
def app(broker_url: str, queue: str) -> asyncq.App:
    return make_app(broker_url, queue)


@contextlib.asynccontextmanager
async def running(app: asyncq.App, **kwargs: Any) -> AsyncIterator[asyncq.Worker]:
    """Run a worker for the duration of the block, then stop it gracefully."""
    kwargs.setdefault("handle_signals", False)
    kwargs.setdefault("grace", 5.0)
    worker = app.worker(**kwargs)
    task = asyncio.ensure_future(worker.run())
    ready = asyncio.ensure_future(worker.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def procs() -> Iterator[list[WorkerProc]]:
    """Worker subprocesses started by the test; killed afterwards whatever happened."""
    started: list[WorkerProc] = []
    yield started
    for p in started:
        p.close()


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the sample tasks append to, in subprocess workers and in this process alike."""
    path = tmp_path / "ledger"
    monkeypatch.setenv("ASYNCQ_TEST_LEDGER", str(path))
    return path
