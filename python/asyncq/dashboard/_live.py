"""The sampler behind live updates: reads the overview every few seconds, keeps a short
history of counts per queue (throughput over time), and wakes server-sent-event streams when
something changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Any

from ._data import Source, Unreachable

__all__ = ["IDLE", "Hub"]

#: Seconds the sampler keeps going after the last request, with no event stream open.
IDLE = 60.0


class Hub:
    """Samples the broker while someone looks; one per dashboard app.

    Args:
        source: What to read.
        every: Seconds between samples.
        keep: Samples of history kept per queue.
    """

    def __init__(self, source: Source, every: float = 2.0, keep: int = 180) -> None:
        self.source = source
        self.every = every
        self.keep = keep
        self.history: dict[str, deque[list[float]]] = {}
        self.snapshot: dict[str, Any] = {}
        self.version = 0
        self._text = ""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._seen = 0.0
        #: Event streams open now (each keeps the sampler going).
        self.streams = 0

    def start(self) -> None:
        """Sample on the running loop until nobody has looked for ``IDLE`` seconds (started
        by requests, not lifespan events: a mounted app gets none)."""
        self._seen = time.monotonic()
        if self._task is None or self._task.done():
            self._changed = asyncio.Event()
            self._poke = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Sample now (after an action), not at the next tick."""
        self._poke.set()

    async def _run(self) -> None:
        while self.streams or time.monotonic() - self._seen < IDLE:
            await self.sample()
            await _wait(self._poke, self.every)
            self._poke.clear()

    async def sample(self) -> None:
        """Read the overview once; record history; wake streams if it changed."""
        try:
            snap = await self.source.overview()
            snap["broker"] = {"ok": True}
        except Unreachable as exc:
            snap = {"broker": {"ok": False, "error": str(exc)}}
        self._record(snap)
        text = json.dumps({k: v for k, v in snap.items() if k != "now"}, sort_keys=True)
        snap["history"] = {q: list(h) for q, h in self.history.items()}
        self.snapshot = snap
        if text != self._text:
            self._text = text
            self.version += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def _record(self, snap: dict[str, Any]) -> None:
        now = time.time()
        for q in snap.get("queues", []):
            c = q["counts"]
            row = [
                round(now, 3),
                c.get("succeeded_total", 0),
                c.get("failed_total", 0),
                c.get("queued", 0),
                c.get("running", 0),
                c.get("dead", 0),
            ]
            self.history.setdefault(q["name"], deque(maxlen=self.keep)).append(row)

    async def changed(self, version: int, timeout: float) -> int:
        """Wait until the snapshot's version is past ``version`` (or ``timeout``); return it."""
        if self.version == version:
            await _wait(self._changed, timeout)
        return self.version


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` passes (not ``asyncio.wait_for``, which
    before Python 3.12 can swallow a cancellation)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
