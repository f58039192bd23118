"""An app whose tasks end every way a run can end, for the metrics tests: a worker subprocess
loads it as ``tests.apps.metered:app`` (``ASYNCQ_TEST_URL``, ``ASYNCQ_TEST_QUEUE`` as in
``tests.apps.sample``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncq
from asyncq.backoff import Exponential


def build(url: str, queue: str) -> asyncq.App:
    """The app, on ``url`` with default queue ``queue``."""
    app = asyncq.App(url, default_queue=queue, lease=2.0, reaper=0.2)
    for fn, options in TASKS:
        app.task(**options)(fn)
    return app


async def ok(x: int) -> int:
    await asyncio.sleep(0.01)
    return x


async def flaky() -> str:
    if asyncq.current_job().attempt == 1:
        raise RuntimeError("first attempt fails")
    return "second"


async def broken() -> None:
    raise RuntimeError("always")


async def slow() -> None:
    await asyncio.sleep(60)


async def later() -> str:
    if asyncq.current_job().attempt == 1 and not os.path.exists(_flag()):
        Path(_flag()).touch()
        raise asyncq.Snooze(0.05)
    return "ran"


def _flag() -> str:
    return os.path.join(os.environ.get("ASYNCQ_TEST_TMP", "/tmp"), "metered-snoozed")


TASKS: list[tuple[Any, dict[str, Any]]] = [
    (ok, {"name": "m:ok"}),
    (flaky, {"name": "m:flaky", "retries": 1, "backoff": Exponential(base=0.05, cap=0.05)}),
    (broken, {"name": "m:broken"}),
    (slow, {"name": "m:slow"}),
    (later, {"name": "m:later"}),
]

app = build(
    os.environ.get("ASYNCQ_TEST_URL", "memory://metered"),
    os.environ.get("ASYNCQ_TEST_QUEUE", "default"),
)
