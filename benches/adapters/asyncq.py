"""asyncq, from the main .venv (release build)."""

from __future__ import annotations

import os
from typing import Any

import asyncq
from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

app = asyncq.App(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
TASKS = {name: app.task(name=name)(fn) for name, fn in bodies.ASYNC.items()}


class AsyncqAdapter(Adapter):
    name = "asyncq"
    venv = "main"
    package = "asyncq"
    notes = (
        "`asyncq-worker benches.adapters.asyncq:app -q default=N --threads 8`: the CLI with its "
        "defaults (uvloop where installed, prefetch deciding by itself); only the workload's "
        "concurrency and thread count are given, as for every peer."
    )
    #: The app, its bench tasks, and the app's import path for ``asyncq-worker``.
    app, tasks, target = app, TASKS, "benches.adapters.asyncq:app"

    async def enqueue_bulk(self, body: str, args_list: list[tuple[Any, ...]]) -> None:
        await self.tasks[body].enqueue_many([(a, {}) for a in args_list])

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        task = self.tasks[body]
        if delay:
            await task.options(delay=delay).enqueue(*args)
        else:
            await task.enqueue(*args)

    async def queue_size(self) -> int | None:
        counts = await self.app.broker.counts(self.app.default_queue)
        return counts.get("queued")

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        return [
            "asyncq-worker",
            self.target,
            "-q",
            f"{self.app.default_queue}={spec.concurrency}",
            "--threads",
            str(spec.threads),
        ]


ADAPTER = AsyncqAdapter()
