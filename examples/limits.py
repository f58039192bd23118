"""Limits and fairness (docs/flow-control.md): ``python -m examples.limits`` runs an
API-calling task limited to 10 starts a second, at most 2 at once per tenant, with tenants
served in turns, and prints what it saw.

Uses ``ASYNCQ_URL`` when set (a Redis), else the in-process ``memory://`` broker; the worker
runs in this process, so there is nothing else to start.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_URL", "memory://limits-example"))
started: list[tuple[str, float]] = []
running: dict[str, int] = {}
most: dict[str, int] = {}


@app.task(
    rate_limit="10/s",  # the upstream API allows 10 calls a second, from all workers together
    limits=[asyncq.ConcurrencyLimit(2, key="tenant")],  # and 2 at once per tenant
    fair_key="tenant",  # a tenant with a backlog does not starve the others
)
async def call_api(tenant: str, n: int) -> int:
    started.append((tenant, time.monotonic()))
    running[tenant] = running.get(tenant, 0) + 1
    most[tenant] = max(most.get(tenant, 0), running[tenant])
    await asyncio.sleep(0.25)
    running[tenant] -= 1
    return n


async def main() -> None:
    worker = app.worker(handle_signals=False)
    task = asyncio.ensure_future(worker.run())
    try:
        # "big" queues 12 calls first, then "small" queues 3.
        calls = [call_api.call("big", i) for i in range(12)]
        jobs = await call_api.enqueue_many(calls + [call_api.call("small", i) for i in range(3)])
        for job in jobs:
            await job.result(timeout=30)
        times = [t for _, t in started]
        in_a_second = max(sum(1 for u in times if t <= u < t + 1) for t in times)
        print(f"rate: at most {in_a_second} starts in any second (limit 10)")
        print(f"at once per tenant, at most: {max(most.values())} (limit 2)")
        # Tenants take turns: small's 3 calls come among big's first ones, not after all 12.
        last = max(i for i, (tenant, _) in enumerate(started) if tenant == "small")
        print(f"turns: small's 3 calls started among the first {last + 1} of 15")
    finally:
        worker.stop()
        await task


if __name__ == "__main__":
    asyncio.run(main())
