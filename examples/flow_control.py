"""Flow control (docs/flow-control.md): ``python -m examples.flow_control`` shows a task that
snoozes, a unique job, a throttled one and a debounced one.

Uses ``ASYNCQ_URL`` when set (a Redis), else the in-process ``memory://`` broker; the worker
runs in this process, so there is nothing else to start.
"""

from __future__ import annotations

import asyncio
import os

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_URL", "memory://flow-control-example"))
calls = {"partner": 0}


def partner_is_busy() -> bool:
    """The partner's API says "try again" twice, then takes the order."""
    calls["partner"] += 1
    return calls["partner"] <= 2


@app.task(retries=0)
async def call_partner(order: int) -> str:
    if partner_is_busy():
        raise asyncq.Snooze(0.2)  # run again in 0.2 s; no attempt used
    return f"order {order} sent after {calls['partner'] - 1} snoozes"


@app.task
async def build_report(customer: int) -> str:
    await asyncio.sleep(0.1)
    return f"report for customer {customer}"


@app.task
async def send_digest(team: str) -> str:
    return f"digest sent to {team}"


@app.task
async def rebuild_index(reason: str) -> str:
    return f"index rebuilt ({reason})"


async def main() -> None:
    worker = app.worker(handle_signals=False)
    running = asyncio.ensure_future(worker.run())
    try:
        print(await (await call_partner.enqueue(7)).result(timeout=10))

        # One report per customer at a time: a second enqueue returns the first job.
        report = build_report.options(unique=asyncq.Unique("report:42", ttl=3600))
        first, second = await report.enqueue(42), await report.enqueue(42)
        print("unique:", second.deduplicated, second.id == first.id)

        # At most one digest per 60 s; the rest are dropped (their handles name the kept one).
        digest = send_digest.options(throttle=60, key="digest:team-a")
        kept = [await digest.enqueue("team-a") for _ in range(5)]
        print("throttle:", len({h.id for h in kept}), "job for 5 enqueues")

        # Rebuild 0.5 s after the last change, but at most 2 s after the first one.
        rebuild = rebuild_index.options(debounce=0.5, max_wait=2, key="index")
        handles = [await rebuild.enqueue(f"change {i}") for i in range(1, 4)]
        print("debounce:", await handles[-1].result(timeout=10))
    finally:
        worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
