"""Workflows (docs/workflows.md): ``python -m examples.flows`` runs a chord and a chain.

Uses ``ASYNCQ_URL`` when set (a Redis), else the in-process ``memory://`` broker; the worker
runs in this process, so there is nothing else to start.
"""

from __future__ import annotations

import asyncio
import os

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_URL", "memory://flows-example"))


@app.task
async def fetch_price(symbol: str) -> float:
    await asyncio.sleep(0.01)  # a call to a price service
    return {"ACME": 12.5, "INITECH": 7.25}.get(symbol, 1.0)


@app.task(queue="reports")
def total(prices: list[float]) -> float:
    """A sync task: runs in the worker's thread pool, in a flow as anywhere."""
    return sum(prices)


@app.task(queue="reports")
async def publish(amount: float, channel: str) -> str:
    return f"{channel}: {amount:.2f}"


async def main() -> None:
    # Fetch three prices in parallel, total them once all are in, then publish the total.
    flow = asyncq.chain(
        asyncq.chord([fetch_price.s(s) for s in ("ACME", "INITECH", "HOOLI")], total.s()),
        publish.s("#prices"),
    )
    worker = app.worker({"default": 10, "reports": 2}, handle_signals=False)
    running = asyncio.ensure_future(worker.run())
    try:
        handle = await flow.enqueue()
        print(await handle.result(timeout=10))  # #prices: 20.75
    finally:
        worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
