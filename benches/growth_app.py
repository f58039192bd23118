"""The tasks `benches/growth.py` runs (workers load it as ``benches.growth_app:app``)."""

from __future__ import annotations

import os

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_GROWTH_URL", "memory://growth"))


@app.task(name="growth:noop")
async def noop(i: int) -> int:
    return i


@app.task(name="growth:fail")
async def fail() -> None:
    raise RuntimeError("growth: dead on purpose")
