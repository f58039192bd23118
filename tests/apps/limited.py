"""An app of tasks under limits, for tests with several worker processes; loaded as
``tests.apps.limited:app``. Configured like ``tests.apps.sample`` (``ASYNCQ_TEST_URL``,
``ASYNCQ_TEST_QUEUE``, ``ASYNCQ_TEST_LEASE``, ``ASYNCQ_TEST_LEDGER``). Every task appends
``<start|end> <task> <key> <wall time, µs> <pid>`` lines to the ledger: one short O_APPEND
write per line, so lines of several processes never interleave.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncq


def note(what: str, task: str, key: object) -> None:
    path = os.environ.get("ASYNCQ_TEST_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{what} {task} {key} {time.time_ns() // 1000} {os.getpid()}\n")


def build(url: str, queue: str, lease: float = 2.0) -> asyncq.App:
    app = asyncq.App(url, default_queue=queue, lease=lease, reaper=0.2)

    @app.task(name="lim:rated", rate_limit="20/s", burst=1)
    async def rated(i: int) -> int:
        note("start", "rated", i)
        return i

    @app.task(name="lim:two", concurrency_limit=2)
    async def two(i: int, seconds: float) -> int:
        note("start", "two", i)
        if asyncq.current_job().attempt == 1:  # a re-run after a lost lease is quick
            await asyncio.sleep(seconds)
        note("end", "two", i)
        return i

    @app.task(name="lim:tenant", limits=[asyncq.RateLimit("1/s", key="tenant")])
    async def per_tenant(tenant: str, i: int) -> int:
        note("start", "tenant", tenant)
        return i

    @app.task(name="lim:fair", fair_key="tenant", concurrency_limit=4)
    async def fair(tenant: str, i: int) -> int:
        note("start", "fair", tenant)
        await asyncio.sleep(0.002)
        return i

    @app.task(name="lim:ordered", ordered_key="account")
    async def ordered(account: str, i: int) -> int:
        note("start", "ordered", f"{account}:{i}")
        await asyncio.sleep(0.003)
        note("end", "ordered", f"{account}:{i}")
        return i

    @app.task(name="lim:paced", rate_limit="2/s")
    async def paced(i: int, seconds: float) -> int:
        note("start", "paced", i)
        await asyncio.sleep(seconds)
        return i

    return app


app = build(
    os.environ.get("ASYNCQ_TEST_URL", "memory://limited"),
    os.environ.get("ASYNCQ_TEST_QUEUE", "default"),
    float(os.environ.get("ASYNCQ_TEST_LEASE", "2")),
)
