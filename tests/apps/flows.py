"""An app for flow tests in worker subprocesses (``tests.apps.flows:app``).

``ASYNCQ_TEST_URL``, ``ASYNCQ_TEST_QUEUE`` (the header members' queue; the callback's is that
name with ``-cb``) and ``ASYNCQ_TEST_LEDGER`` (a file the callback appends one line to per run).
"""

from __future__ import annotations

import asyncio
import json
import os

import asyncq

QUEUE = os.environ.get("ASYNCQ_TEST_QUEUE", "flows")
app = asyncq.App(
    os.environ.get("ASYNCQ_TEST_URL", "memory://flows"),
    default_queue=QUEUE,
    lease=1.0,
    reaper=0.2,
)


@app.task(name="flows:square", retries=0)
async def square(i: int) -> int:
    await asyncio.sleep(0.2)  # long enough for the test to kill workers mid-chord
    return i * i


@app.task(name="flows:collect", queue=f"{QUEUE}-cb")
async def collect(results: list[int]) -> int:
    path = os.environ.get("ASYNCQ_TEST_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {"n": len(results), "ok": results == [i * i for i in range(len(results))]}
                )
                + "\n"
            )
    return sum(results)
