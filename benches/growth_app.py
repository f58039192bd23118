"""The tasks `benches/growth.py` runs (workers load it as ``benches.growth_app:app``)."""

from __future__ import annotations

import os
import time

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_GROWTH_URL", "memory://growth"))


@app.task(name="growth:noop")
async def noop(i: int) -> int:
    return i


@app.task(name="growth:fail")
async def fail() -> None:
    raise RuntimeError("growth: dead on purpose")


@app.task(name="growth:stamp")
async def stamp() -> float:
    """The wall-clock time at the very end of the body: the ack follows it."""
    return time.time()
