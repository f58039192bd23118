"""dramatiq with its Redis broker and AsyncIO middleware (async actors), one process."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)


def _register(name: str, fn: Any) -> Any:
    if asyncio.iscoroutinefunction(fn):

        async def job(*args: Any) -> None:
            await fn(*args)
    else:

        def job(*args: Any) -> None:
            fn(*args)

    return dramatiq.actor(job, actor_name=name, max_retries=0)


ACTORS = {name: _register(name, fn) for name, fn in bodies.ASYNC.items()}


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    package = "dramatiq"
    supports_bulk = False
    sync_producer = True
    notes = (
        "`dramatiq benches.adapters.dramatiq --processes 1 --threads N` with the AsyncIO "
        "middleware (async actors run on one event loop; each worker thread waits on one), so "
        "concurrency = threads: N for async bodies, 8 for W6. max_retries=0, no results. "
        "`send` is synchronous: 64 concurrent = 64 threads. No bulk API (W2 bulk n/a)."
    )

    def enqueue_one_sync(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        actor = ACTORS[body]
        if delay:
            actor.send_with_options(args=args, delay=int(delay * 1000))
        else:
            actor.send(*args)

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        threads = spec.threads if spec.sync else spec.concurrency
        return [
            "dramatiq",
            "benches.adapters.dramatiq",
            "--processes",
            "1",
            "--threads",
            str(threads),
        ]


ADAPTER = DramatiqAdapter()
