"""Prometheus metrics (docs/operations.md): ``python -m examples.metrics`` runs a worker with
``metrics_port=0`` (a free port) in this process, runs three jobs (one fails), then scrapes
``/metrics`` once and prints the job counters.

Uses ``ASYNCQ_URL`` when set, else the in-process ``memory://`` broker.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request

import asyncq

app = asyncq.App(
    os.environ.get("ASYNCQ_URL", "memory://metrics-example"),
    metrics_port=0,
    metrics_host="127.0.0.1",
)


@app.task(name="example:add")
async def add(x: int, y: int) -> int:
    return x + y


@app.task(name="example:fail")
async def fail() -> None:
    raise RuntimeError("no")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


async def main() -> None:
    worker = app.worker(handle_signals=False)
    run = asyncio.ensure_future(worker.run())
    await worker.ready.wait()
    assert worker.metrics_port is not None
    print(await (await add.enqueue(1, 2)).result(timeout=10))
    print(await (await add.enqueue(3, 4)).result(timeout=10))
    try:
        await (await fail.enqueue()).result(timeout=10)
    except asyncq.JobFailed:
        print("failed")
    # The counters move once the broker's verdict is back, a moment after the result.
    for _ in range(100):
        text = await asyncio.to_thread(scrape, worker.metrics_port)
        lines = [line for line in text.splitlines() if line.startswith("asyncq_jobs_total")]
        if sum(float(line.rsplit(" ", 1)[1]) for line in lines) == 3:
            break
        await asyncio.sleep(0.05)
    for line in lines:
        if not line.endswith(" 0"):
            print(line)
    worker.stop()
    await run


if __name__ == "__main__":
    asyncio.run(main())
