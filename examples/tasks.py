"""An example asyncq application: one App and a handful of realistic tasks.

This is the file you would write in your own service (say ``myservice/tasks.py``). The broker URL
comes from the environment so the same code runs against a local Redis, production, or the
in-process ``memory://`` broker in tests::

    ASYNCQ_URL=redis://localhost:6379/0 asyncq-worker examples.tasks:app

Every task below has an explicit ``name``: the name is what travels in the message, so keeping it
stable lets you move or rename the function without stranding jobs already queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

import asyncq

app = asyncq.App(
    os.environ.get("ASYNCQ_URL", "memory://examples"),
    default_queue="demo",
    # Short lease and reaper so a crashed worker's jobs come back quickly in a demo; the
    # defaults (30 s and 5 s) suit production.
    lease=10.0,
    reaper=1.0,
)


class PaymentGatewayBusy(Exception):
    """The (pretend) payment provider asked us to try again later."""


@app.task(name="emails.send")
async def send_email(to: str, subject: str) -> str:
    """An async task: awaits I/O (here a short sleep standing in for an SMTP call)."""
    await asyncio.sleep(random.uniform(0.001, 0.005))
    return f"sent {subject!r} to {to}"


@app.task(name="images.thumbnail")
def make_thumbnail(image_id: int, size: int = 128) -> str:
    """A plain function: the worker runs it in a thread pool, so blocking work is fine here."""
    digest = hashlib.sha256(f"{image_id}:{size}".encode()).hexdigest()
    for _ in range(200):  # a little CPU work, like decoding and resizing an image
        digest = hashlib.sha256(digest.encode()).hexdigest()
    return f"thumb-{image_id}-{size}px-{digest[:8]}"


@app.task(
    name="payments.charge",
    retries=4,
    # Retry after ~50 ms, ~100 ms, ~200 ms, ... (up to 1 s), with jitter so a burst of failures
    # does not come back all at once. Production values would be seconds to minutes.
    backoff=asyncq.Exponential(base=0.05, cap=1.0),
    timeout=5.0,
)
async def charge_card(order_id: int, cents: int) -> dict[str, int | str]:
    """Fails now and then (about one call in five); asyncq retries it with backoff."""
    await asyncio.sleep(random.uniform(0.001, 0.003))
    if random.random() < 0.2:
        raise PaymentGatewayBusy(f"gateway busy while charging order {order_id}")
    return {"order_id": order_id, "cents": cents, "status": "charged"}


@app.task(name="crm.sync", retries=2, backoff=asyncq.Exponential(base=0.05, cap=0.2))
def sync_to_legacy_crm(customer_id: int) -> None:
    """Always fails: after its retries are used up the job lands in the dead-letter queue,
    where ``asyncq info`` shows it and ``asyncq retry demo`` can send it back."""
    raise ConnectionRefusedError(f"legacy CRM is down (customer {customer_id})")


@app.task(name="emails.reminder")
async def send_reminder(user_id: int) -> str:
    """Enqueued with a delay: it waits in the scheduled set until it is due."""
    return f"reminded user {user_id}"


@app.task(name="ops.page", priority=9)
async def page_on_call(message: str) -> str:
    """High priority by default (9 = highest): jumps ahead of everything already queued."""
    return f"paged: {message}"


# ---- a workflow and a schedule, in a queue of their own ("ops") -------------------------------


@app.task(name="reports.thumbnail_report", queue="ops")
def thumbnail_report(thumbs: list[str]) -> str:
    """A chord's callback: runs once, with every member's result in member order."""
    return f"{len(thumbs)} thumbnails, first {thumbs[0]}, last {thumbs[-1]}"


@app.task(name="ops.heartbeat", queue="ops")
async def heartbeat() -> str:
    """Fired every second by the schedule below, from whichever worker gets there first."""
    return "ok"


app.schedule("ops.heartbeat", heartbeat, every=1)
