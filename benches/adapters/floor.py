"""The thinnest possible worker: a Redis list, LPOP COUNT 100 / BLPOP, one asyncio task per job,
no acks, no state, no retries. Not a queue anyone should use; the floor a real one pays on top of.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

KEY = "floor:queue"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")


class FloorAdapter(Adapter):
    name = "floor"
    venv = "main"
    supports_delay = False
    notes = "Not a library: the W1 floor (list + LPOP COUNT 100/BLPOP + one task per job)."

    async def open(self) -> None:
        self.r = redis.asyncio.Redis.from_url(URL)

    async def close(self) -> None:
        await self.r.aclose()

    async def enqueue_bulk(self, body: str, args_list: list[tuple[Any, ...]]) -> None:
        await self.r.rpush(KEY, *(json.dumps([body, a]) for a in args_list))

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        await self.r.rpush(KEY, json.dumps([body, args]))

    async def queue_size(self) -> int | None:
        return int(await self.r.llen(KEY))

    async def run_worker(self, spec: WorkerSpec) -> None:
        r = redis.asyncio.Redis.from_url(URL)
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(spec.threads)
        free = asyncio.Semaphore(spec.concurrency)
        running: set[asyncio.Task[None]] = set()

        async def run(raw: bytes) -> None:
            try:
                name, args = json.loads(raw)
                fn = bodies.ASYNC[name]
                if asyncio.iscoroutinefunction(fn):
                    await fn(*args)
                else:
                    await loop.run_in_executor(pool, fn, *args)
            finally:
                free.release()

        while True:
            await free.acquire()
            room = 1
            while room < 100 and not free.locked():
                await free.acquire()
                room += 1
            items = await r.lpop(KEY, room) or []
            if not items:
                popped = await r.blpop([KEY], timeout=1)
                items = [popped[1]] if popped else []
            for _ in range(room - len(items)):
                free.release()
            for raw in items:
                t = asyncio.create_task(run(raw))
                running.add(t)
                t.add_done_callback(running.discard)


ADAPTER = FloorAdapter()
