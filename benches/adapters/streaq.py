"""streaq: in-process Worker(concurrency=N, sync_concurrency=8), uvloop."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import Any

from streaq import Worker

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")


def make_worker(concurrency: int = 100, threads: int = 8) -> tuple[Worker, dict[str, Any]]:
    worker = Worker(
        redis_url=URL,
        concurrency=concurrency,
        sync_concurrency=threads,
        handle_signals=False,
        anyio_kwargs={"use_uvloop": True},
    )
    tasks = {}
    for name, fn in bodies.ASYNC.items():
        if asyncio.iscoroutinefunction(fn):

            async def job(*args: Any, _fn: Any = fn) -> None:
                await _fn(*args)
        else:

            def job(*args: Any, _fn: Any = fn) -> None:
                _fn(*args)

        tasks[name] = worker.task(name=name)(job)
    return worker, tasks


class StreaqAdapter(Adapter):
    name = "streaq"
    package = "streaq"
    notes = (
        "in-process `Worker(concurrency=N, sync_concurrency=8)`, uvloop via anyio, defaults "
        "otherwise (pickle serializer). Bulk = `Worker.enqueue_many` (one pipeline)."
    )

    async def open(self) -> None:
        self.worker, self.tasks = make_worker()
        await self.worker.__aenter__()

    async def close(self) -> None:
        await self.worker.__aexit__(None, None, None)

    async def enqueue_bulk(self, body: str, args_list: list[tuple[Any, ...]]) -> None:
        task = self.tasks[body]
        await self.worker.enqueue_many([task.enqueue(*a) for a in args_list])

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        t = self.tasks[body].enqueue(*args)
        if delay:
            t = t.start(delay=dt.timedelta(seconds=delay))
        await t

    async def queue_size(self) -> int | None:
        return int(await self.worker.queue_size())

    async def run_worker(self, spec: WorkerSpec) -> None:
        worker, _ = make_worker(spec.concurrency, spec.threads)
        await worker.run_async()


ADAPTER = StreaqAdapter()
