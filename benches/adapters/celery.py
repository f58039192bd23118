"""celery: one worker process with the threads pool (celery has no asyncio execution)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
app = Celery("bench", broker=URL)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
TASKS = {name: app.task(name=name)(fn) for name, fn in bodies.SYNC.items()}


class CeleryAdapter(Adapter):
    name = "celery"
    package = "celery"
    supports_bulk = False
    sync_producer = True
    notes = (
        "`celery worker --pool threads -c N --without-gossip --without-mingle "
        "--without-heartbeat` (one process; prefork with N processes would not be one worker "
        "process on 2 cores), results ignored, sync body twins (celery does not run coroutines). "
        "Concurrency = threads: N, 8 for W6. No bulk enqueue (W2 bulk n/a); delays = "
        "`apply_async(countdown=…)`."
    )

    def enqueue_one_sync(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        if delay:
            TASKS[body].apply_async(args, countdown=delay)
        else:
            TASKS[body].apply_async(args)

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        threads = spec.threads if spec.sync else spec.concurrency
        return [
            "celery",
            "-A",
            "benches.adapters.celery:app",
            "worker",
            "--pool",
            "threads",
            "-c",
            str(threads),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ]


ADAPTER = CeleryAdapter()
