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
    app, tasks, target = app, TASKS, "benches.adapters.asyncq_limited:app"


ADAPTER = LimitedAdapter()
