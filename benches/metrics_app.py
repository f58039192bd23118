"""The app ``make metrics-view`` runs (benches/metrics_view.py): short and slower jobs, failures
with retries, a rate-limited task; a worker loads it as ``benches.metrics_app:app``."""

from __future__ import annotations

import asyncio
import os
import random

import asyncq
from asyncq.backoff import Exponential


def build(url: str, queue: str) -> asyncq.App:
    app = asyncq.App(url, default_queue=queue)

    @app.task(name="m:quick")
    async def quick(seconds: float) -> None:
        await asyncio.sleep(seconds)

    @app.task(name="m:slow")
    async def slow(seconds: float) -> None:
        await asyncio.sleep(seconds)

    @app.task(name="m:flaky", retries=2, backoff=Exponential(base=0.5, cap=2))
    async def flaky(p: float) -> None:
        if random.random() < p:
            raise RuntimeError("flaky")

    @app.task(name="m:limited", rate_limit="5/s")
    async def limited() -> None:
        return None

    return app


app = build(
    os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"),
    os.environ.get("BENCH_QUEUE", "work"),
)
