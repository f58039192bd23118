"""The dashboard mounted in an ASGI app of your own (docs/dashboard.md):
``python -m examples.dashboard_mount`` serves a tiny shop at http://127.0.0.1:8000/ with the
asyncq dashboard under /asyncq/, runs a worker in the same process, and enqueues a few jobs
(some fail, one waits an hour, one card charge is dead-lettered) so there is something to see.

Uses ``ASYNCQ_URL`` when set (a Redis), else the in-process ``memory://`` broker. Set
``DASHBOARD_TOKEN`` to require a token (then it may also listen beyond loopback).
Needs the ``web`` extra: ``pip install 'asyncq[web]'``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import asyncq
from asyncq.dashboard import create_app

app = asyncq.App(os.environ.get("ASYNCQ_URL", "memory://dashboard-example"), default_queue="shop")


@app.task(retries=2, backoff=asyncq.Exponential(base=5))
async def ship(order: int) -> str:
    await asyncio.sleep(0.2)
    if order % 5 == 0:
        raise RuntimeError(f"no courier for order {order}")
    return f"order {order} shipped"


@app.task(sensitive=True)
async def charge(card: str, cents: int) -> None:
    """Its arguments never appear in the dashboard."""
    raise ValueError("card declined")


def _mask(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    return [args[0], "***"], kwargs


@app.task(redact=_mask)
async def sign_up(email: str, password: str) -> None:
    """The dashboard shows the email, never the password."""


async def home(_: Request) -> PlainTextResponse:
    return PlainTextResponse("my shop; the asyncq dashboard is at /asyncq/\n")


site = Starlette(
    routes=[
        Route("/", home),
        Mount("/asyncq", create_app(app, token=os.environ.get("DASHBOARD_TOKEN"))),
    ]
)


async def main() -> None:
    worker = app.worker(handle_signals=False)
    running = asyncio.ensure_future(worker.run())
    await ship.enqueue_many([((n,), {}) for n in range(1, 21)])
    await ship.options(delay=3600).enqueue(99)
    await charge.enqueue("4111 1111 1111 1111", 1250)
    await sign_up.enqueue("ada@example.com", "hunter2")
    host = "0.0.0.0" if os.environ.get("DASHBOARD_TOKEN") else "127.0.0.1"
    server = uvicorn.Server(uvicorn.Config(site, host=host, port=8000, log_level="warning"))
    print("serving http://127.0.0.1:8000/asyncq/ (Ctrl-C stops)")
    try:
        await server.serve()
    finally:
        worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
