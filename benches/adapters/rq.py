"""rq: one SimpleWorker process (rq runs one job at a time per process)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from redis import Redis
from rq import Queue

from benches import bodies
from benches.adapters.base import Adapter, WorkerSpec

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")


class RqAdapter(Adapter):
    name = "rq"
    package = "rq"
    sync_producer = True
    notes = (
        "`rq worker --worker-class rq.worker.SimpleWorker --with-scheduler`: one process, one "
        "job at a time (rq has no in-process concurrency; its default Worker forks per job and is "
        "slower still). Sync body twins (`*_sync`). Bulk = `Queue.enqueue_many`; delays = "
        "`enqueue_in` (rq's scheduler polls once a second)."
    )

    async def open(self) -> None:
        self.queue = Queue("default", connection=Redis.from_url(URL))

    def enqueue_one_sync(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        fn = bodies.SYNC[body]
        if delay:
            self.queue.enqueue_in(dt.timedelta(seconds=delay), fn, *args)
        else:
            self.queue.enqueue(fn, *args)

    async def enqueue_bulk(self, body: str, args_list: list[tuple[Any, ...]]) -> None:
        fn = bodies.SYNC[body]
        self.queue.enqueue_many([Queue.prepare_data(fn, a) for a in args_list])

    async def queue_size(self) -> int | None:
        return len(self.queue)

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        return [
            "rq",
            "worker",
            "--worker-class",
            "rq.worker.SimpleWorker",
            "--with-scheduler",
            "-u",
            URL,
            "default",
        ]


ADAPTER = RqAdapter()
