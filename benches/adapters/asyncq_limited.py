"""asyncq with a generous task-wide limit on every task: the cost of the limit check.

The same tasks and CLI-default worker as the ``asyncq`` adapter, each task declared with
``concurrency_limit=1_000_000`` (never reached), so every job goes through its group and its
limiter (docs/flow-control.md) while nothing ever waits: the row beside ``asyncq`` is what
a limit costs per job.
"""

from __future__ import annotations

import os

import asyncq
from benches import bodies
from benches.adapters.asyncq import AsyncqAdapter
from benches.adapters.base import WorkerSpec

app = asyncq.App(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
TASKS = {
    name: app.task(name=name, concurrency_limit=1_000_000)(fn) for name, fn in bodies.ASYNC.items()
}


class LimitedAdapter(AsyncqAdapter):
    name = "asyncq_limited"
    notes = (
        "`asyncq-worker benches.adapters.asyncq_limited:app`, as the asyncq row, every task "
        "with `concurrency_limit=1_000_000`: the limit is checked for every job, never reached."
    )

    async def enqueue_bulk(self, body: str, args_list: list[tuple[object, ...]]) -> None:
        await TASKS[body].enqueue_many([(a, {}) for a in args_list])

    async def enqueue_one(self, body: str, args: tuple[object, ...], delay: float | None) -> None:
        task = TASKS[body]
        if delay:
            await task.options(delay=delay).enqueue(*args)
        else:
            await task.enqueue(*args)

    async def queue_size(self) -> int | None:
        counts = await app.broker.counts(app.default_queue)
        return counts.get("queued")

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        argv = super().worker_argv(spec)
        assert argv is not None
        argv[1] = "benches.adapters.asyncq_limited:app"
        return argv


ADAPTER = LimitedAdapter()
