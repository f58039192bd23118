"""ardiq (Rust core, Redis Streams): in-process `Ardiq(concurrency=N).run()`, Python 3.12 venv."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ardiq import Ardiq

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")


def make_app(**kwargs: Any) -> tuple[Ardiq, dict[str, Any]]:
    app = Ardiq(redis_url=URL, queue_name="bench", **kwargs)
    tasks = {}
    for name, fn in bodies.ASYNC.items():
        if asyncio.iscoroutinefunction(fn):

            async def job(*args: Any, _fn: Any = fn) -> None:
                await _fn(*args)
        else:

            def job(*args: Any, _fn: Any = fn) -> None:
                _fn(*args)

        job.__name__ = job.__qualname__ = name
        tasks[name] = app.task()(job)
    return app, tasks


class ArdiqAdapter(Adapter):
    name = "ardiq"
    venv = "peers312"
    package = "ardiq"
    notes = (
        "in-process `Ardiq(concurrency=N)` + `app.run()`, uvloop, defaults otherwise; runs on "
        "Python 3.12 (its minimum) in benches/.peers312. Sync tasks go through "
        "`asyncio.to_thread`: the loop's default executor is set to 8 threads for W6."
    )

    async def open(self) -> None:
        self.app, self.tasks = make_app()

    async def enqueue_bulk(self, body: str, args_list: list[tuple[Any, ...]]) -> None:
        task = self.tasks[body]
        await self.app.enqueue_many([task.prepare(*a) for a in args_list])

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        task = self.tasks[body]
        if delay:
            await task.options(delay_ms=int(delay * 1000)).enqueue(*args)
        else:
            await task.enqueue(*args)

    async def queue_size(self) -> int | None:
        return int(await self.app.queue_size())

    async def run_worker(self, spec: WorkerSpec) -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(spec.threads))
        app, _ = make_app(concurrency=spec.concurrency)
        await app.run()


ADAPTER = ArdiqAdapter()
