"""taskiq + taskiq-redis: RedisStreamBroker (the acked broker taskiq-redis recommends), run by
taskiq's own CLI with one worker process."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from taskiq_redis import RedisStreamBroker

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

broker = RedisStreamBroker(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))


def _register(name: str, fn: Any) -> Any:
    if asyncio.iscoroutinefunction(fn):

        async def job(*args: Any) -> None:
            await fn(*args)
    else:

        def job(*args: Any) -> None:
            fn(*args)

    return broker.task(task_name=name)(job)


TASKS = {name: _register(name, fn) for name, fn in bodies.ASYNC.items()}


class TaskiqAdapter(Adapter):
    name = "taskiq"
    package = "taskiq"
    supports_bulk = False
    supports_delay = False
    notes = (
        "`taskiq worker benches.adapters.taskiq:broker --workers 1 --max-async-tasks N "
        "--max-threadpool-threads 8` (uvloop picked up automatically), `RedisStreamBroker` "
        "(acked, recommended by taskiq-redis), no result backend. No bulk `kiq` (W2 bulk n/a). "
        "Delays need taskiq's separate scheduler process with a schedule source (1 s "
        "resolution): W4 n/a."
    )

    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        await TASKS[body].kiq(*args)

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        return [
            "taskiq",
            "worker",
            "benches.adapters.taskiq:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(spec.concurrency),
            "--max-threadpool-threads",
            str(spec.threads),
            "--no-configure-logging",
        ]


ADAPTER = TaskiqAdapter()
