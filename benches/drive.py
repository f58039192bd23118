# ruff: noqa: PLC0415
"""Producer and worker entry points, run in the adapter's own interpreter by the harness.

    python -m benches.drive ADAPTER produce MODE BODY N [GAP DELAY CAP]
    python -m benches.drive ADAPTER worker CONCURRENCY THREADS SYNC(0|1)

``produce`` prints one JSON line: ``{"elapsed": s, "done": jobs, "queued": n|null}``.
Modes: ``fill`` (bulk if the library has it, else 64 concurrent singles; untimed pre-queueing),
``bulk`` (chunks of 1,000), ``single`` (awaited one by one), ``concurrent`` (64 at once),
``trickle`` (one every GAP s; BODY gets enqueue time, or due time with DELAY), ``ping``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benches.adapters.base import Adapter, WorkerSpec

CHUNK = 1000
CONCURRENT = 64


def load(name: str) -> Adapter:
    module = importlib.import_module(f"benches.adapters.{name}")
    return module.ADAPTER  # type: ignore[no-any-return]


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _one(a: Adapter, body: str, args: tuple[Any, ...], delay: float | None) -> None:
    if a.sync_producer:
        await asyncio.to_thread(a.enqueue_one_sync, body, args, delay)
    else:
        await a.enqueue_one(body, args, delay)


async def produce(a: Adapter, mode: str, body: str, n: int, gap: float, delay: float, cap: float):
    await a.open()
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + cap
    try:
        if mode == "fill" and a.supports_bulk:
            mode = "bulk"
        elif mode == "fill":
            mode = "concurrent"
        if mode == "ping":
            await _one(a, "ping", (), None)
            done = 1
        elif mode == "bulk":
            if not a.supports_bulk:
                return {"elapsed": None, "done": 0, "queued": None, "unsupported": True}
            for i in range(0, n, CHUNK):
                k = min(CHUNK, n - i)
                await a.enqueue_bulk(body, [()] * k)
                done += k
                if time.perf_counter() > deadline:
                    break
        elif mode == "single":
            if a.sync_producer:
                while done < n and time.perf_counter() < deadline:
                    a.enqueue_one_sync(body, (), None)
                    done += 1
            else:
                while done < n and time.perf_counter() < deadline:
                    await a.enqueue_one(body, (), None)
                    done += 1
        elif mode == "concurrent":
            per = [n // CONCURRENT + (1 if i < n % CONCURRENT else 0) for i in range(CONCURRENT)]
            counts = [0] * CONCURRENT
            if a.sync_producer:

                def loop_sync(i: int) -> None:
                    while counts[i] < per[i] and time.perf_counter() < deadline:
                        a.enqueue_one_sync(body, (), None)
                        counts[i] += 1

                with ThreadPoolExecutor(CONCURRENT) as pool:
                    list(pool.map(loop_sync, range(CONCURRENT)))
            else:

                async def loop(i: int) -> None:
                    while counts[i] < per[i] and time.perf_counter() < deadline:
                        await a.enqueue_one(body, (), None)
                        counts[i] += 1

                await asyncio.gather(*(loop(i) for i in range(CONCURRENT)))
            done = sum(counts)
        elif mode == "trickle":
            if delay and not a.supports_delay:
                return {"elapsed": None, "done": 0, "queued": None, "unsupported": True}
            for i in range(n):
                pause = t0 + i * gap - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                arg = time.time() + delay
                await _one(a, body, (arg,), delay or None)
                done += 1
        else:
            raise SystemExit(f"unknown mode {mode}")
        elapsed = time.perf_counter() - t0
        queued = await a.queue_size()
        return {"elapsed": elapsed, "done": done, "queued": queued}
    finally:
        await a.close()


def main() -> None:
    name, role = sys.argv[1], sys.argv[2]
    a = load(name)
    if role == "produce":
        mode, body, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
        gap = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
        delay = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
        cap = float(sys.argv[8]) if len(sys.argv) > 8 else 1e9
        result = _run(produce(a, mode, body, n, gap, delay, cap))
        print(json.dumps(result), flush=True)
    elif role == "worker":
        spec = WorkerSpec(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1")
        _run(a.run_worker(spec))
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    threading.current_thread().name = "bench-main"
    main()
