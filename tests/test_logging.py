"""The JSON log's stable fields on a real worker run, both brokers (docs/logging.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

import asyncq
from asyncq.log import JsonFormatter
from tests.conftest import make_app, running

STABLE = {"ts", "level", "logger", "message", "event", "job_id", "task", "queue", "attempt"}
STABLE |= {"duration_ms", "error"}
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Lines(logging.Handler):
    """Every record of the ``asyncq`` loggers as the JSON formatter writes it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def of(self, event: str, job_id: str) -> list[dict[str, Any]]:
        return [ln for ln in self.lines if ln.get("event") == event and ln["job_id"] == job_id]

    async def wait(self, event: str, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.of(event, job_id):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event} line for {job_id}: {self.lines}")
            await asyncio.sleep(0.01)
        return self.of(event, job_id)[0]


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("asyncq")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_every_job_event_has_the_stable_fields(
    broker_url: str, queue: str, lines: Lines
) -> None:
    app = make_app(broker_url, queue)
    started: asyncio.Queue[str] = asyncio.Queue()

    @app.task(name="ok")
    async def ok() -> int:
        return 1

    @app.task(name="flaky", retries=1, backoff=asyncq.Exponential(base=0.05, jitter=0.0))
    async def flaky() -> None:
        raise RuntimeError("upstream said no")

    @app.task(name="hang")
    async def hang() -> None:
        await started.put(asyncq.current_job().job_id)
        await asyncio.sleep(60)

    async with running(app) as worker:
        done = await ok.enqueue()
        assert await done.result(timeout=10) == 1
        failed = await flaky.enqueue()
        with pytest.raises(asyncq.JobFailed):
            await failed.result(timeout=10)
        cancelled = await hang.enqueue()
        assert await started.get() == cancelled.id
        await cancelled.cancel()
        await lines.wait("job.cancelled", cancelled.id)
        released = await hang.enqueue()
        assert await started.get() == released.id
        worker.stop(now=True)
    expect: dict[str, asyncq.JobHandle[Any]] = {
        "job.started": done,
        "job.succeeded": done,
        "job.retrying": failed,
        "job.failed": failed,
        "job.cancelled": cancelled,
        "job.released": released,
    }
    for event, handle in expect.items():
        line = await lines.wait(event, handle.id)
        assert line.keys() >= STABLE, (event, line)
        assert TS.fullmatch(line["ts"]) and "time" not in line
        assert line["queue"] == queue and line["logger"] == "asyncq.worker"
        assert line["task"] in ("ok", "flaky", "hang") and isinstance(line["attempt"], int)
        if event == "job.started":
            assert line["duration_ms"] is None and line["level"] == "debug"
        else:
            assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        failure = event in ("job.retrying", "job.failed")
        assert line["error"] == ("RuntimeError: upstream said no" if failure else None)
        assert "trace_id" not in line  # tracing is off
    attempts = [ln["attempt"] for ln in lines.of("job.started", failed.id)]
    assert attempts == [1, 2]
    assert lines.of("job.retrying", failed.id)[0]["attempt"] == 1
    assert lines.of("job.failed", failed.id)[0]["attempt"] == 2
