# ruff: noqa: SIM105
"""The job bodies, defined once and shared by every adapter.

Each body does its work, then calls ``_complete``: that counts completions in-process (thread
safe) and, on the first and the N-th, snapshots wall time, this process's CPU time and the Redis
server's CPU time. The N-th completion pushes a JSON report to ``bench:done`` (the harness waits
on it with BLPOP). A daemon thread publishes the in-process count to ``bench:final`` every 0.2 s,
so the harness can check count == N after the run settles (no loss, no duplicates).

W1's body counts in Redis instead (INCR's reply is the count), so duplicates show as a counter
above N.

Async bodies are used by every library that runs coroutines. Libraries that only run plain
functions (celery, rq) get the ``*_sync`` twins: the same work with redis-py's sync client and
``time.sleep``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from typing import Any

import redis
import redis.asyncio

N = int(os.environ.get("BENCH_N", "0"))
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
REDIS_PID = int(os.environ.get("BENCH_REDIS_PID", "0"))
COUNT_KEY = "bench:count"
DONE_KEY = "bench:done"
READY_KEY = "bench:ready"
FINAL_KEY = "bench:final"
PAYLOAD = bytes(range(256)) * 4  # 1 KiB
SLEEP = 0.05
_TICK = os.sysconf("SC_CLK_TCK")

_lock = threading.Lock()
_count = 0
_first: dict[str, float] | None = None
_samples: list[float] = []
_sync_client: redis.Redis | None = None
_async_clients: dict[int, redis.asyncio.Redis] = {}


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds, from /proc/<pid>/stat."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _snapshot() -> dict[str, float]:
    return {
        "t": time.time(),
        "cpu": _proc_cpu(os.getpid()),
        "rcpu": _proc_cpu(REDIS_PID),
    }


def sync_client() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(URL)
    return _sync_client


def async_client() -> redis.asyncio.Redis:
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = _async_clients[loop_id] = redis.asyncio.Redis.from_url(
            URL, max_connections=10_000
        )  # redis-py 8 caps async pools at 100 by default
    return client


def _reporter() -> None:
    client = redis.Redis.from_url(URL)
    while True:
        time.sleep(0.2)
        try:
            client.set(FINAL_KEY, f"{_count} {_first['t'] if _first else 0}")
        except redis.RedisError:
            pass


def _report(first: dict[str, float], last: dict[str, float], samples: list[float]) -> None:
    report = {"first": first, "last": last, "pid": os.getpid(), "samples": samples}
    redis.Redis.from_url(URL).rpush(DONE_KEY, json.dumps(report))


def _complete(sample: float | None = None, count: int | None = None) -> None:
    """Record one completion; ``count`` overrides the in-process counter (W1: INCR's reply)."""
    global _count, _first
    with _lock:
        _count += 1
        c = _count if count is None else count
        if sample is not None:
            _samples.append(sample)
        if _first is None:
            _first = _snapshot()
            threading.Thread(target=_reporter, daemon=True).start()
        if c != N:
            return
        last = _snapshot()
        first, samples = _first, list(_samples)
    _report(first, last, samples)


# ---- async bodies ----------------------------------------------------------------------------


async def incr() -> None:
    """W1: INCR a Redis counter through redis-py asyncio."""
    _complete(count=await async_client().incr(COUNT_KEY))


async def noop() -> None:
    """W1n: nothing but the in-process counter."""
    _complete()


async def sleep() -> None:
    """W5: io-bound."""
    await asyncio.sleep(SLEEP)
    _complete()


def hash1k() -> None:
    """W6: a plain function (runs in the library's thread pool)."""
    hashlib.sha256(PAYLOAD).digest()
    _complete()


async def latency(enqueued: float) -> None:
    """W3: start - enqueue time."""
    _complete(time.time() - enqueued)


async def lateness(due: float) -> None:
    """W4: start - due time."""
    _complete(time.time() - due)


async def ping() -> None:
    """Readiness probe: the harness waits for it before W3/W4."""
    await async_client().rpush(READY_KEY, 1)


# ---- the same bodies for libraries that only run plain functions -----------------------------


def incr_sync() -> None:
    _complete(count=sync_client().incr(COUNT_KEY))


def noop_sync() -> None:
    _complete()


def sleep_sync() -> None:
    time.sleep(SLEEP)
    _complete()


def latency_sync(enqueued: float) -> None:
    _complete(time.time() - enqueued)


def lateness_sync(due: float) -> None:
    _complete(time.time() - due)


def ping_sync() -> None:
    sync_client().rpush(READY_KEY, 1)


ASYNC: dict[str, Any] = {
    "incr": incr,
    "noop": noop,
    "sleep": sleep,
    "hash1k": hash1k,
    "latency": latency,
    "lateness": lateness,
    "ping": ping,
}
SYNC: dict[str, Any] = {
    "incr": incr_sync,
    "noop": noop_sync,
    "sleep": sleep_sync,
    "hash1k": hash1k,
    "latency": latency_sync,
    "lateness": lateness_sync,
    "ping": ping_sync,
}
