"""Job ids (docs/tasks.md#job-ids): short, sortable by creation, with a per-task prefix, on plain
and partitioned queues and in flows."""

from __future__ import annotations

import re
import time

import pytest

import asyncq
from tests.conftest import make_app, running

ID = r"[0-9a-hjkmnp-tv-z]{20}"


async def test_fresh_ids_carry_the_task_prefix_and_sort_by_time(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, partitions={f"{queue}-p": 3})

    @app.task(name="ids:invoice", id_prefix="invoice")
    async def invoice(n: int) -> int:
        return n

    @app.task(name="ids:plain")
    async def plain(n: int) -> int:
        return n

    first = await invoice.enqueue(1)
    time.sleep(0.002)  # the next id is made in a later millisecond
    second = await plain.enqueue(2)
    spread = await invoice.options(queue=f"{queue}-p").enqueue(3)
    chained = await asyncq.chain(invoice.s(4), plain.s()).enqueue()
    assert re.fullmatch(f"invoice_{ID}", first.id), first.id
    assert re.fullmatch(ID, second.id), second.id
    assert first.id.removeprefix("invoice_") < second.id, "ids sort by when they were made"
    assert re.fullmatch(rf"invoice_{ID}\.p[0-2]", spread.id), spread.id
    async with running(app, queues={queue: 4, f"{queue}-p": 4}):
        assert await first.result(timeout=10) == 1
        assert await spread.result(timeout=10) == 3
        assert await chained.result(timeout=10) == 4
    assert (await app.find_job(spread.id)) is not None


def test_a_bad_prefix_is_refused_where_the_task_is_declared() -> None:
    app = asyncq.App("memory://")
    for bad in ("", "a_b", "a.b", "x" * 25):
        with pytest.raises(ValueError, match="id_prefix"):
            app.task(name=f"ids:{len(bad)}", id_prefix=bad)(lambda: None)
