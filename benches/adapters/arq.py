"""arq: in-process Worker(max_jobs=N), uvloop. arq has no bulk enqueue and no sync functions."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker, func

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

SETTINGS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
_pool = ThreadPoolExecutor(8)


def _wrap(name: str, fn: Any) -> Any:
    if asyncio.iscoroutinefunction(fn):

        async def job(ctx: dict[str, Any], *args: Any) -> None:
            await fn(*args)
    else:

        async def job(ctx: dict[str, Any], *args: Any) -> None:
            await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)

    return func(job, name=name)


FUNCTIONS = [_wrap(name, fn) for name, fn in bodies.ASYNC.items()]


class ArqAdapter(Adapter):
    name = "arq"
    package = "arq"
    supports_bulk = False
    notes = (
        "in-process `Worker(functions, max_jobs=N)`, uvloop, defaults otherwise (so poll_delay "
        "0.5 s, results kept 1 h). No bulk enqueue API (W2 bulk n/a; pre-queueing uses 64 "
        "concurrent `enqueue_job`). arq runs only coroutines: W6's plain function is awaited "
        "through `run_in_executor` on an 8-thread pool."
    )

    async def open(self) -> None:
        self.pool = await create_pool(SETTINGS)

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        if delay:
            await self.pool.enqueue_job(body, *args, _defer_by=dt.timedelta(seconds=delay))
        else:
            await self.pool.enqueue_job(body, *args)

    async def queue_size(self) -> int | None:
        return int(await self.pool.zcard("arq:queue"))

    async def run_worker(self, spec: WorkerSpec) -> None:
        worker = Worker(
            functions=FUNCTIONS,
            redis_settings=SETTINGS,
            max_jobs=spec.concurrency,
            handle_signals=False,
        )
        await worker.async_run()


ADAPTER = ArqAdapter()
