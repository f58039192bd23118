"""Progress and events (docs/events.md): ``python -m examples.progress`` runs an import job that
reports its progress, follows it with ``handle.events()``, and watches the whole queue with
``app.events()``.

Uses ``ASYNCQ_URL`` when set (a Redis), else the in-process ``memory://`` broker; the worker
runs in this process, so there is nothing else to start.
"""

from __future__ import annotations

import asyncio
import os

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_URL", "memory://progress-example"), default_queue="imports")


@app.task
async def import_rows(rows: int) -> int:
    job = asyncq.current_job()
    for done in range(100, rows + 1, 100):
        await asyncio.sleep(0.05)  # a chunk of real work
        job.progress(done / rows, f"{done} of {rows} rows")
    return rows


@app.task
def resize(path: str) -> str:
    """A sync task reports the same way, from its thread."""
    asyncq.current_job().progress(0.5, "decoded")
    return path.replace(".png", "-small.png")


async def main() -> None:
    worker = app.worker(handle_signals=False)
    running = asyncio.ensure_future(worker.run())
    try:
        # Every job of the queue, as it happens (subscribed when the block starts).
        async with app.events() as queue_events:
            handle = await import_rows.enqueue(300)
            # One job, from its current state to its ending.
            async for event in handle.events():
                if event.progress is not None:
                    print(f"  {event.progress.fraction:4.0%}  {event.progress.message}")
                else:
                    print(f"  {event.state}")
            print("latest report:", await handle.progress())

            small = await resize.enqueue("cat.png")
            await small.result(timeout=10)
            seen: list[str] = []
            async for event in queue_events:
                seen.append(event.state or "progress")
                if event.job_id == small.id and event.final:
                    break
            print("queue saw:", " ".join(seen))
    finally:
        worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
