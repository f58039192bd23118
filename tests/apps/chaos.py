"""The chaos-suite app; worker subprocesses load it as ``tests.apps.chaos:app``.

Configured from the environment:

- ``ASYNCQ_CHAOS_URL``: broker URL (the workers usually reach Redis through the fault proxy)
- ``ASYNCQ_CHAOS_QUEUE``: default queue
- ``ASYNCQ_CHAOS_LEASE`` / ``ASYNCQ_CHAOS_REAPER``: seconds (default 5 and 1, as the suite demands)
- ``ASYNCQ_CHAOS_LEDGER``: file every task appends ``start|done <id> <attempt> <pid> <t>`` to,
  ``t`` being CLOCK_MONOTONIC (system-wide on Linux, not faked by the clock-skew case)
- ``ASYNCQ_CHAOS_RESULT_TTL``: seconds results are kept (default 3600)
- ``ASYNCQ_CHAOS_KEYS``: comma-separated signing keys (first one signs), optional

The ledger is written with one unbuffered ``os.write`` on an ``O_APPEND`` descriptor per line, so
a line written before a SIGKILL is never lost and lines from several processes never interleave.
It is never faulted: it is a local file, not the Redis under test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncq

_fd: int | None = None


def note(what: str) -> None:
    global _fd
    path = os.environ.get("ASYNCQ_CHAOS_LEDGER")
    if not path:
        return
    if _fd is None:
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    ctx = asyncq.current_job()
    line = f"{what} {ctx.job_id} {ctx.attempt} {os.getpid()} {time.monotonic():.4f}\n"
    os.write(_fd, line.encode())


def build(url: str, queue: str, lease: float = 5.0, reaper: float = 1.0) -> asyncq.App:
    """An App with the chaos tasks registered under fixed names."""
    keys = [k for k in os.environ.get("ASYNCQ_CHAOS_KEYS", "").split(",") if k]
    extra = {"signing_keys": keys} if keys else {}
    result_ttl = float(os.environ.get("ASYNCQ_CHAOS_RESULT_TTL", "3600"))
    app = asyncq.App(
        url, default_queue=queue, lease=lease, reaper=reaper, result_ttl=result_ttl, **extra
    )

    @app.task(name="chaos:noop")
    async def noop(i: int) -> int:
        note("start")
        note("done")
        return i

    @app.task(name="chaos:sleep")
    async def sleep(seconds: float) -> int:
        note("start")
        await asyncio.sleep(seconds)
        note("done")
        return os.getpid()

    @app.task(name="chaos:block")
    async def block(seconds: float) -> int:
        """Blocks the asyncio loop (a sync sleep inside an async task)."""
        note("start")
        time.sleep(seconds)
        note("done")
        return os.getpid()

    @app.task(name="chaos:killer")
    async def killer() -> None:
        """Kills the worker process that runs it, every time."""
        note("start")
        os.kill(os.getpid(), signal.SIGKILL)

    return app


app = build(
    os.environ.get("ASYNCQ_CHAOS_URL", "memory://chaos"),
    os.environ.get("ASYNCQ_CHAOS_QUEUE", "chaos"),
    float(os.environ.get("ASYNCQ_CHAOS_LEASE", "5")),
    float(os.environ.get("ASYNCQ_CHAOS_REAPER", "1")),
)
