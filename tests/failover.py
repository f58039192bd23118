"""What the failover tests (tests/test_sentinel.py, tests/test_cluster.py) share: a producer
that keeps enqueueing through a failover, and the count of what survived it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncq


async def produce(
    task: Any,
    acked: list[Any],
    refused: list[str],
    stop: asyncio.Event,
    queues: list[str],
    seconds: float,
) -> None:
    """Enqueue ``task(seconds)`` round the ``queues`` until ``stop``: a returned handle is an
    acknowledged enqueue, a ``BrokerError`` one that was not (its text kept)."""
    i = 0
    while not stop.is_set():
        try:
            acked.append(await task.options(queue=queues[i % len(queues)]).enqueue(seconds))
        except asyncq.BrokerError as e:
            refused.append(str(e))
            await asyncio.sleep(0.05)
        i += 1
        await asyncio.sleep(0.005)


async def settle(acked: list[Any], deadline_s: float) -> tuple[int, list[asyncq.JobInfo]]:
    """Wait for every acknowledged job to succeed: how many are lost (their record is gone)
    and the records of the rest. None may be stuck: the reaper re-runs what was leased on a
    server that died."""
    lost = 0
    done = []
    deadline = time.monotonic() + deadline_s
    for handle in acked:
        info = await handle.info()
        while info is not None and info.state != "succeeded" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            info = await handle.info()
        if info is None:
            lost += 1
            continue
        assert info.state == "succeeded", (handle.id, info.state)
        done.append(info)
    return lost, done
