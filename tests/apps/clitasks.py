"""An app whose task declares its own queue, retries, timeout and priority, for CLI enqueue tests.

Loaded as ``tests.apps.clitasks:app``; ``ASYNCQ_TEST_URL`` and ``ASYNCQ_TEST_QUEUE`` configure it
like the sample app. The task's queue is ``<ASYNCQ_TEST_QUEUE>-reports``.
"""

from __future__ import annotations

import os

import asyncq

QUEUE = os.environ.get("ASYNCQ_TEST_QUEUE", "default")
REPORTS = f"{QUEUE}-reports"

app = asyncq.App(os.environ.get("ASYNCQ_TEST_URL", "memory://clitasks"), default_queue=QUEUE)


@app.task(name="reports:build", queue=REPORTS, retries=4, timeout=7.5, priority=3)
async def build(year: int, month: int = 1) -> str:
    return f"{year}-{month:02d}"
