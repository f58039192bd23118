# ruff: noqa: PLC0415, E501
"""saq: in-process Worker(concurrency=N), uvloop."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio
from saq import Queue, Worker
from saq.queue.redis import RedisQueue
from saq.worker import ensure_coroutine_function

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
ARG = {"latency": "enqueued", "lateness": "due"}  # saq passes keyword arguments only
_pool = ThreadPoolExecutor(8)


def _wrap(name: str, fn: Any) -> Any:
    inner = fn if asyncio.iscoroutinefunction(fn) else ensure_coroutine_function(fn, _pool)

    async def job(ctx: dict[str, Any], **kwargs: Any) -> None:
        await inner(*kwargs.values())

    return (name, job)


FUNCTIONS = [_wrap(name, fn) for name, fn in bodies.ASYNC.items()]


class SaqAdapter(Adapter):
    name = "saq"
    package = "saq"
    supports_bulk = False
    notes = (
        "in-process `Worker(queue, functions, concurrency=N)`, uvloop, defaults otherwise. No "
        "bulk enqueue (`Queue.map` also waits for results), so W2 bulk n/a and pre-queueing uses "
        "64 concurrent `enqueue`. W6's plain function runs through saq's own "
        "`ensure_coroutine_function` on an 8-thread pool (saq's default pool is unbounded). Worker connection pool sized concurrency + 50 "
        "(redis-py 8's default cap of 100 starves saq at concurrency 1,000)."
    )

    async def open(self) -> None:
        self.queue = Queue.from_url(URL)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        kwargs = {ARG[body]: args[0]} if args else {}
        if delay:
            import time

            kwargs["scheduled"] = time.time() + delay
        await self.queue.enqueue(body, **kwargs)

    async def queue_size(self) -> int | None:
        return int(await self.queue.count("queued"))

    async def run_worker(self, spec: WorkerSpec) -> None:
        # redis-py 8 caps a pool at 100 connections; saq's dequeuers each hold one (W5: 1,000).
        queue = RedisQueue(redis.asyncio.from_url(URL, max_connections=spec.concurrency + 50))
        worker = Worker(queue, functions=FUNCTIONS, concurrency=spec.concurrency)
        await worker.start()


ADAPTER = SaqAdapter()
