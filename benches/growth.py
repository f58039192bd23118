# ruff: noqa: E501
"""How asyncq's cost grows: worker processes, queue depth, number of queues, memory per job.

    python -m benches.growth            # make bench-growth (about 3 minutes)
    python -m benches.growth --quick    # smaller sizes, for a smoke run

asyncq alone, on a private redis-server, with `asyncq-worker` subprocesses at their defaults
(apart from the queues they serve). Prints Markdown tables; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benches.growth_app import app, fail, noop
from benches.run import ROOT, RedisServer, proc_cpu

CHUNK = 5_000
PROBES = 300
WORKER = str(Path(sys.executable).parent / "asyncq-worker")


def start_worker(url: str, queues: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, ASYNCQ_GROWTH_URL=url, PYTHONPATH=str(ROOT))
    spec = ",".join(f"{q}=50" for q in queues)
    return subprocess.Popen(
        [WORKER, "benches.growth_app:app", "-q", spec, "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def clients(r: redis.Redis) -> int:
    return len(r.client_list())


async def fill(queue: str, n: int, delay: float | None = None) -> None:
    task = noop.options(queue=queue, delay=delay) if delay else noop.options(queue=queue)
    for start in range(0, n, CHUNK):
        await task.enqueue_many([((i,), {}) for i in range(start, min(n, start + CHUNK))])


async def until(check: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not finish")
        await asyncio.sleep(0.05)


async def counts(queue: str) -> dict[str, int]:
    return await app.broker.counts(queue)


async def memory(r: redis.Redis, url: str, n: int) -> list[tuple[str, float]]:
    rows = []
    r.flushall()
    base = r.info("memory")["used_memory"]
    await fill("mem", n)
    rows.append(("waiting (queued)", (r.info("memory")["used_memory"] - base) / n))
    procs = [start_worker(url, ["mem"])]
    await until(lambda: _done("mem", n))
    stop(procs)
    rows.append(("finished (result kept 1 day)", (r.info("memory")["used_memory"] - base) / n))
    r.flushall()
    base = r.info("memory")["used_memory"]
    for start in range(0, n, CHUNK):
        await fail.enqueue_many([((), {})] * min(CHUNK, n - start))
    procs = [start_worker(url, [app.default_queue])]
    await until(lambda: _dead(app.default_queue, n))
    stop(procs)
    rows.append(("dead (error kept 7 days)", (r.info("memory")["used_memory"] - base) / n))
    return rows


async def _done(queue: str, n: int) -> bool:
    return (await counts(queue)).get("succeeded_total", 0) >= n


async def _dead(queue: str, n: int) -> bool:
    return (await counts(queue)).get("dead", 0) >= n


async def probe(queue: str) -> tuple[float, float]:
    """Median µs of one awaited enqueue, and of one fetch of 1 job plus its ack."""
    enq = []
    for i in range(PROBES):
        t = time.perf_counter()
        await noop.options(queue=queue).enqueue(i)
        enq.append(time.perf_counter() - t)
    consumer = await app.broker.consumer(
        queue, "growth-probe", ["growth:noop"], lease=30, heartbeat=10, reap=5,
        idle_wait=1, result_ttl=60, dead_ttl=60, max_payload=1 << 20, prefetch=False,
    )  # fmt: skip
    fetch = []
    for _ in range(PROBES):
        t = time.perf_counter()
        jobs = await consumer.fetch(1)
        fetch.append(time.perf_counter() - t)
        for job in jobs:
            consumer.ack(job, None, None)
    await consumer.close(10)
    return statistics.median(enq) * 1e6, statistics.median(fetch) * 1e6


async def depth(r: redis.Redis, sizes: list[int]) -> list[tuple[str, float, float]]:
    rows = []
    for scheduled in (False, True):
        for size in sizes:
            r.flushall()
            await fill("deep", size, delay=3600 if scheduled else None)
            enq, fetch = await probe("deep")
            what = "scheduled" if scheduled else "queued"
            rows.append((f"{size:,} {what}", enq, fetch))
    return rows


async def queues(r: redis.Redis, url: str, sizes: list[int]) -> list[tuple[int, int, float, float]]:
    rows = []
    for n in sizes:
        r.flushall()
        names = [f"g{i}" for i in range(n)]
        before = clients(r)
        procs = [start_worker(url, names)]
        await asyncio.sleep(3)  # started and idle
        held = clients(r) - before
        cpu0 = proc_cpu(procs[0].pid)
        await asyncio.sleep(5)
        idle_cpu = (proc_cpu(procs[0].pid) - cpu0) / 5 * 100
        rtt = []
        for i in range(100):
            t = time.perf_counter()
            handle = await noop.options(queue=names[i % n]).enqueue(i)
            await handle.result(timeout=30)
            rtt.append(time.perf_counter() - t)
        stop(procs)
        rows.append((n, held, idle_cpu, statistics.median(rtt) * 1e3))
    return rows


async def workers(
    r: redis.Redis, url: str, n: int, counts_: list[int], pid: int
) -> list[tuple[int, float, float]]:
    rows = []
    for w in counts_:
        r.flushall()
        await fill("drain", n)
        cpu0, t0 = proc_cpu(pid), time.perf_counter()
        procs = [start_worker(url, ["drain"]) for _ in range(w)]
        await until(lambda: _done("drain", n))
        elapsed = time.perf_counter() - t0
        rcpu = proc_cpu(pid) - cpu0
        stop(procs)
        rows.append((w, n / elapsed, rcpu / n * 1e6))
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    server = RedisServer()
    url = server.url
    app.broker = app.broker.with_url(url)
    app.url = url
    r = redis.Redis.from_url(url)
    try:
        n = 5_000 if args.quick else 20_000
        print(
            f"Redis {server.version}; asyncq-worker defaults; {time.strftime('%Y-%m-%d %H:%M')}\n"
        )
        print("Worker processes draining one queue (includes each worker's start-up):\n")
        print("| workers | jobs/s | Redis CPU per job (µs) |\n| --- | --- | --- |")
        for w, rate, rcpu in await workers(r, url, n, [1, 2, 4], server.proc.pid):
            print(f"| {w} | {rate:,.0f} | {rcpu:.1f} |")
        sizes = [0, 10_000, 100_000] if args.quick else [0, 100_000, 1_000_000]
        print("\nCost with jobs already waiting (client-observed medians of 300):\n")
        print(
            "| already in the queue | awaited enqueue (µs) | fetch of 1 (µs) |\n| --- | --- | --- |"
        )
        for what, enq, fetch in await depth(r, sizes):
            print(f"| {what} | {enq:.0f} | {fetch:.0f} |")
        print("\nOne worker on many queues (idle, then 100 jobs round-robin):\n")
        print(
            "| queues | connections held | idle CPU (% of a core) | enqueue → result p50 (ms) |\n| --- | --- | --- | --- |"
        )
        for q, held, cpu, rtt in await queues(r, url, [1, 10, 100]):
            print(f"| {q} | {held} | {cpu:.1f} | {rtt:.2f} |")
        print("\nRedis memory per job (used_memory delta over 10,000 jobs, 8-byte arguments):\n")
        print("| job | bytes |\n| --- | --- |")
        for what, b in await memory(r, url, 10_000):
            print(f"| {what} | {b:,.0f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
