"""Periodic jobs (docs/scheduling.md): run with ``asyncq-worker examples.schedules:app``.

The broker URL comes from ``ASYNCQ_URL`` (default ``redis://localhost:6379/0``). Any number of
workers (or ``asyncq scheduler examples.schedules:app`` processes) may run: each fire time is
enqueued once.
"""

from __future__ import annotations

import os

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_URL", "redis://localhost:6379/0"))


@app.task(name="reports.digest")
async def send_digest(team: str) -> str:
    return f"digest sent to {team}"


@app.task(name="db.vacuum")
def vacuum() -> None:
    """A plain function: runs in the worker's thread pool, as any sync task."""


# Weekdays at 09:00 Berlin time, whatever daylight saving says.
app.schedule(
    "digest-berlin", send_digest, cron="0 9 * * mon-fri", args=("berlin",), tz="Europe/Berlin"
)
# Every 10 minutes, never two at once, and after a downtime catch up once.
app.schedule("vacuum", vacuum, every=600, overlap="skip", catchup="once")
# Every second, to watch it work.
app.schedule("digest-demo", send_digest, every=1, args=("demo",))
