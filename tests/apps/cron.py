"""An app with 1-second schedules, for scheduler subprocesses (``tests.apps.cron:app``).

``ASYNCQ_TEST_URL`` and ``ASYNCQ_TEST_QUEUE`` point it at a test's private redis-server. Its
schedules only enqueue: the tests read what was fired from Redis and the schedulers' logs.
"""

from __future__ import annotations

import os

import asyncq

app = asyncq.App(
    os.environ.get("ASYNCQ_TEST_URL", "memory://cron"),
    default_queue=os.environ.get("ASYNCQ_TEST_QUEUE", "default"),
)


@app.task(name="cron:tick")
async def tick(label: str) -> str:
    return label


# The default catch-up policy (skip) and the one that leaves no gap after a downtime (all).
app.schedule("tick-skip", tick, every=1, args=("skip",))
app.schedule("tick-all", tick, every=1, args=("all",), catchup="all")
