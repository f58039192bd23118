"""Partitioned queues (docs/scaling.md): ``python -m examples.partitions`` stores one queue
in four partitions, enqueues orders for three accounts (each account's orders kept in one
partition, in enqueue order, by ``partition_key``) and emails spread round-robin, drains them
with one worker, and prints where the jobs went.

Uses ``ASYNCQ_URL`` when set (a Redis, or a ``redis+cluster://`` one, where the partitions
land on different primaries), else the in-process ``memory://`` broker; the worker runs in
this process, so there is nothing else to start.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import asyncq

app = asyncq.App(
    os.environ.get("ASYNCQ_URL", "memory://partitions-example"),
    default_queue="work",
    partitions={"work": 4},
)
ran: list[tuple[str, int]] = []


@app.task()
async def charge(account: str, n: int) -> None:
    ran.append((account, n))


@app.task()
async def email(n: int) -> None:
    ran.append(("email", n))


async def main() -> None:
    orders: dict[str, list[asyncq.JobHandle[None]]] = {}
    for n in range(5):
        for account in ("acme", "globex", "initech"):
            job = await charge.options(partition_key=account).enqueue(account, n)
            orders.setdefault(account, []).append(job)
    emails = await email.enqueue_many([((n,), {}) for n in range(8)])
    worker = app.worker(handle_signals=False)
    task = asyncio.ensure_future(worker.run())
    try:
        for job in [*emails, *(j for jobs in orders.values() for j in jobs)]:
            await job.result(timeout=30)
    finally:
        worker.stop()
        await task
    spread = Counter(job.queue for job in emails)
    print("emails per partition:", ", ".join(f"{q} {n}" for q, n in sorted(spread.items())))
    for account, jobs in orders.items():
        (partition,) = {job.queue for job in jobs}  # one partition per account
        order = [n for a, n in ran if a == account]
        print(f"{account}: all in {partition}, ran in order {order}")


if __name__ == "__main__":
    asyncio.run(main())
