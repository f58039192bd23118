"""A sample app for process-level tests; subprocess workers load it as ``tests.apps.sample:app``.

Configured from the environment so a test can point a worker at its private redis-server:

- ``ASYNCQ_TEST_URL``: broker URL (default ``memory://sample``)
- ``ASYNCQ_TEST_QUEUE``: default queue (default ``default``)
- ``ASYNCQ_TEST_LEASE``: lease in seconds (default 2); the reaper runs every 0.2 s
- ``ASYNCQ_TEST_LEDGER``: file every task appends ``start|done <job id> <attempt> <pid>`` to
- ``ASYNCQ_TEST_PARTITIONS``: ``queue=n,...``, the app's partitioned queues
"""

from __future__ import annotations

import asyncio
import os

import asyncq


def note(what: str) -> None:
    """Append ``what``, the running job's id and attempt and this pid to the ledger file."""
    path = os.environ.get("ASYNCQ_TEST_LEDGER")
    if not path:
        return
    ctx = asyncq.current_job()
    # One short O_APPEND write per line: lines from several processes never interleave.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{what} {ctx.job_id} {ctx.attempt} {os.getpid()}\n")


def build(
    url: str, queue: str, lease: float = 2.0, partitions: dict[str, int] | None = None
) -> asyncq.App:
    """An App with the sample tasks registered under fixed names."""
    app = asyncq.App(url, default_queue=queue, lease=lease, reaper=0.2, partitions=partitions)

    @app.task(name="sample:sleep")
    async def sleep(seconds: float) -> dict[str, int]:
        note("start")
        await asyncio.sleep(seconds)
        note("done")
        ctx = asyncq.current_job()
        return {"attempt": ctx.attempt, "pid": os.getpid()}

    @app.task(name="sample:add")
    async def add(x: int, y: int) -> int:
        note("start")
        return x + y

    @app.task(name="sample:noop")
    async def noop(i: int) -> int:
        return i

    @app.task(name="sample:boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


app = build(
    os.environ.get("ASYNCQ_TEST_URL", "memory://sample"),
    os.environ.get("ASYNCQ_TEST_QUEUE", "default"),
    float(os.environ.get("ASYNCQ_TEST_LEASE", "2")),
    {
        name: int(n)
        for name, _, n in (
            pair.partition("=") for pair in os.environ.get("ASYNCQ_TEST_PARTITIONS", "").split(",")
        )
        if name
    },
)
