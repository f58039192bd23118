"""OpenTelemetry tracing on a real worker, both brokers: producer and consumer spans joined by
the trace context in the envelope's headers; nothing of it when tracing is off."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import asyncq
from asyncq.context import _current
from asyncq.log import JsonFormatter
from asyncq.tracing import instrument
from tests.apps import proc_tasks
from tests.conftest import make_app, running
from tests.procutil import PYTHONPATH, ROOT

FAST_RETRY = asyncq.Exponential(base=0.05, jitter=0.0)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    yield exp
    exp.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    prov = TracerProvider()
    prov.add_span_processor(SimpleSpanProcessor(exporter))
    return prov


@pytest.fixture
def traced(broker_url: str, queue: str, provider: TracerProvider) -> asyncq.App:
    app = make_app(broker_url, queue)
    instrument(app, provider)
    return app


async def finished(
    exporter: InMemorySpanExporter,
    done: Callable[[list[ReadableSpan]], bool],
    timeout: float = 10.0,
) -> list[ReadableSpan]:
    """The finished spans, once ``done`` holds for them (a worker's span ends just after the
    outcome it records reaches the producer)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = list(exporter.get_finished_spans())
        if done(spans):
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"spans never got there: {[s.name for s in spans]}")
        await asyncio.sleep(0.01)


def named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def count(prefix: str, n: int) -> Callable[[list[ReadableSpan]], bool]:
    return lambda spans: len(named(spans, prefix)) >= n


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_the_enqueue_span_is_the_parent_of_the_run(
    traced: asyncq.App, queue: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with running(traced):
        with provider.get_tracer("test").start_as_current_span("request") as request:
            handle = await add.enqueue(2, 3)
        assert await handle.result(timeout=10) == 5
        spans = await finished(exporter, count("process", 1))
    (send,) = named(spans, "send")
    (process,) = named(spans, "process")
    assert send.name == f"send {queue}" and send.kind is SpanKind.PRODUCER
    assert parent_id(send) == request.get_span_context().span_id
    assert attrs(send) == {
        "messaging.system": "asyncq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
        "messaging.message.id": handle.id,
        "asyncq.task": "add",
    }
    assert process.name == f"process {queue}" and process.kind is SpanKind.CONSUMER
    assert send.context is not None and process.context is not None
    assert parent_id(process) == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    got = attrs(process)
    assert got["messaging.message.id"] == handle.id and got["asyncq.task"] == "add"
    assert got["messaging.destination.name"] == queue and got["asyncq.attempt"] == 1
    assert got["asyncq.outcome"] == "succeeded"
    assert process.status.status_code is StatusCode.UNSET


async def test_each_attempt_is_a_span_of_the_same_trace(
    traced: asyncq.App, exporter: InMemorySpanExporter
) -> None:
    runs: list[int] = []

    @traced.task(name="flaky", retries=1, backoff=FAST_RETRY)
    async def flaky() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("upstream said no")
        return "ok"

    async with running(traced):
        handle = await flaky.enqueue()
        assert await handle.result(timeout=10) == "ok"
        spans = await finished(exporter, count("process", 2))
    (send,) = named(spans, "send")
    first, second = sorted(named(spans, "process"), key=lambda s: attrs(s)["asyncq.attempt"])
    assert send.context is not None
    for span in (first, second):
        assert span.context is not None and span.context.trace_id == send.context.trace_id
        assert parent_id(span) == send.context.span_id
    assert (attrs(first)["asyncq.attempt"], attrs(second)["asyncq.attempt"]) == (1, 2)
    assert attrs(first)["asyncq.outcome"] == "retrying"
    assert first.status.status_code is StatusCode.ERROR
    (event,) = first.events
    assert event.name == "exception" and (event.attributes or {})["exception.type"] == (
        "RuntimeError"
    )
    assert attrs(second)["asyncq.outcome"] == "succeeded"
    assert second.status.status_code is StatusCode.UNSET


async def test_a_dead_job_ends_in_an_error_span(
    traced: asyncq.App, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="boom")
    async def boom() -> None:
        raise ValueError("bad input")

    async with running(traced):
        handle = await boom.enqueue()
        with pytest.raises(asyncq.JobFailed):
            await handle.result(timeout=10)
        spans = await finished(exporter, count("process", 1))
    (process,) = named(spans, "process")
    assert attrs(process)["asyncq.outcome"] == "dead"
    assert process.status.status_code is StatusCode.ERROR
    assert "ValueError: bad input" in (process.status.description or "")
    assert [e.name for e in process.events] == ["exception"]


async def test_batches_and_blocking_enqueues_are_traced(
    traced: asyncq.App, queue: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="double")
    async def double(x: int) -> int:
        return 2 * x

    async with running(traced):
        handles = await double.enqueue_many([double.call(i) for i in range(3)])
        with provider.get_tracer("test").start_as_current_span("caller") as caller:
            one = await asyncio.to_thread(double.enqueue_sync, 21)
        assert [await h.result(timeout=10) for h in [*handles, one]] == [0, 2, 4, 42]
        spans = await finished(exporter, count("process", 4))
    batch, sync = sorted(named(spans, "send"), key=lambda s: s.start_time or 0)
    assert attrs(batch)["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in attrs(batch)
    assert attrs(sync)["messaging.message.id"] == one.id
    assert parent_id(sync) == caller.get_span_context().span_id
    assert batch.context is not None and sync.context is not None
    by_job = {attrs(s)["messaging.message.id"]: s for s in named(spans, "process")}
    for h in handles:
        assert parent_id(by_job[h.id]) == batch.context.span_id
    assert parent_id(by_job[one.id]) == sync.context.span_id


async def test_partitioned_enqueues_and_middleware_keep_the_parent(
    broker_url: str, queue: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A partitioned queue's jobs (run from a partition, ``q#i``) and ``enqueue_sync`` through
    middleware (run on the app's helper loop) stay in the caller's trace."""
    app = make_app(broker_url, queue, partitions={queue: 2}, middleware=[asyncq.Middleware()])
    instrument(app, provider)

    @app.task(name="echo")
    async def echo(x: int) -> int:
        return x

    async with running(app):
        with provider.get_tracer("test").start_as_current_span("caller") as caller:
            many = await echo.enqueue_many([echo.call(i) for i in range(4)])
            one = await asyncio.to_thread(echo.enqueue_sync, 9)
        assert [await h.result(timeout=10) for h in [*many, one]] == [0, 1, 2, 3, 9]
        spans = await finished(exporter, count("process", 5))
    sends = named(spans, "send")
    assert len(sends) == 2 and {s.name for s in sends} == {f"send {queue}"}
    assert all(parent_id(s) == caller.get_span_context().span_id for s in sends)
    send_ids = {s.context.span_id for s in sends if s.context is not None}
    processes = named(spans, "process")
    assert {p.name for p in processes} == {f"process {queue}#0", f"process {queue}#1"}
    assert all(parent_id(p) in send_ids for p in processes)


async def test_a_schedules_fire_is_a_send_span(
    traced: asyncq.App, queue: str, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="tick")
    async def tick() -> None:
        pass

    traced.schedule(f"tick-{queue}", tick, every=1)
    async with running(traced):
        spans = await finished(exporter, count("process", 1))
    (send, *_) = [s for s in named(spans, "send") if attrs(s).get("asyncq.fire") == "enqueued"]
    assert attrs(send)["asyncq.schedule"] == f"tick-{queue}"
    process = named(spans, "process")[0]
    assert send.context is not None
    assert parent_id(process) == send.context.span_id
    assert attrs(process)["messaging.message.id"] == attrs(send)["messaging.message.id"]


async def test_spans_a_thread_task_makes_are_children_of_its_run(
    traced: asyncq.App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("task code")

    @traced.task(name="query")
    def query() -> None:
        with tracer.start_as_current_span("SELECT"):
            pass

    async with running(traced):
        await (await query.enqueue()).result(timeout=10)
        spans = await finished(exporter, count("process", 1))
    (select,) = named(spans, "SELECT")
    (process,) = named(spans, "process")
    assert process.context is not None
    assert parent_id(select) == process.context.span_id


async def test_a_process_task_runs_inside_its_attempts_span(
    traced: asyncq.App, exporter: InMemorySpanExporter
) -> None:
    # The child gets the attempt's trace context with the call: spans it opens (with whatever
    # tracer provider the child sets up) are children of the worker's process span.
    ids = traced.task(name="trace-ids", executor="process")(proc_tasks.trace_ids)
    async with running(traced, processes=1):
        seen = await (await ids.enqueue()).result(timeout=30)
        spans = await finished(exporter, count("process", 1))
    (process,) = named(spans, "process")
    assert process.context is not None
    assert seen is not None and list(seen) == [process.context.trace_id, process.context.span_id]


async def test_an_untraced_process_task_sees_no_trace(app: asyncq.App) -> None:
    ids = app.task(name="trace-ids", executor="process")(proc_tasks.trace_ids)
    async with running(app, processes=1):
        assert await (await ids.enqueue()).result(timeout=30) is None


async def test_flow_steps_link_to_the_steps_they_follow(
    traced: asyncq.App, queue: str, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @traced.task(name="total")
    async def total(parts: list[int]) -> int:
        return sum(parts)

    flow = asyncq.chord([add.s(1, 2), add.s(3, 4)], total.s())
    async with running(traced):
        handle = await flow.enqueue()
        assert await handle.result(timeout=10) == 10
        spans = await finished(exporter, count("process", 3))
    (send,) = named(spans, "send")
    assert attrs(send)["asyncq.flow"] is True
    assert attrs(send)["messaging.batch.message_count"] == 3
    creates = {attrs(s)["messaging.message.id"]: s for s in named(spans, "create")}
    processes = {attrs(s)["messaging.message.id"]: s for s in named(spans, "process")}
    assert set(creates) == set(processes) and handle.id in creates
    assert send.context is not None
    trace_ids = {s.context.trace_id for s in spans if s.context is not None}
    assert trace_ids == {send.context.trace_id}  # the whole flow is one trace
    header_ids = {c.context.span_id for i, c in creates.items() if i != handle.id and c.context}
    for job_id, create in creates.items():
        assert parent_id(create) == send.context.span_id
        assert create.context is not None
        assert parent_id(processes[job_id]) == create.context.span_id
    callback = processes[handle.id]
    assert {link.context.span_id for link in callback.links} == header_ids
    assert {link.context.span_id for link in creates[handle.id].links} == header_ids
    assert all(not processes[i].links for i in creates if i != handle.id)


async def test_tracing_off_makes_no_span_and_sends_no_headers(
    broker_url: str, queue: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = make_app(broker_url, queue)
    seen: list[dict[str, str]] = []

    @app.task(name="look")
    async def look() -> None:
        job = _current.get()
        assert isinstance(job, asyncq._core.Job)
        seen.append(job.headers)

    assert app._tracing is None
    async with running(app):
        # Even inside an active span of the application's own, an untraced app adds nothing.
        with provider.get_tracer("test").start_as_current_span("request"):
            await (await look.enqueue()).result(timeout=10)
    assert seen == [{}]
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]


async def test_a_job_enqueued_untraced_starts_its_own_trace(
    broker_url: str, queue: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """An untraced producer's job, run by a traced worker: a root span, never a child of
    whatever span the worker itself was started in."""
    producer, consumer = make_app(broker_url, queue), make_app(broker_url, queue)
    instrument(consumer, provider)
    for app in (producer, consumer):
        app.task(name="work")(_work)
    with provider.get_tracer("test").start_as_current_span("ambient"):
        async with running(consumer):
            handle = await producer.tasks["work"].enqueue()
            assert await handle.result(timeout=10) == "done"
            spans = await finished(exporter, count("process", 1))
    (process,) = named(spans, "process")
    assert process.parent is None and not named(spans, "send")


async def _work() -> str:
    return "done"


def test_app_tracing_true_instruments_it() -> None:
    app = asyncq.App("memory://tracing-flag", tracing=True)
    assert app._tracing is not None
    asyncq.tracing.uninstrument(app)
    assert app._tracing is None


def test_importing_asyncq_does_not_import_opentelemetry() -> None:
    code = (
        "import asyncq, sys; app = asyncq.App('memory://x'); "
        "assert 'opentelemetry' not in sys.modules, 'imported'; print(asyncq.__file__)"
    )
    env = {"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(ROOT / "python" / "asyncq" / "__init__.py")


async def test_job_log_lines_carry_the_attempt_span_ids(
    traced: asyncq.App, exporter: InMemorySpanExporter
) -> None:
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    @traced.task(name="fails")
    async def fails() -> None:
        raise RuntimeError("no")

    handler = Collect()
    logger = logging.getLogger("asyncq.worker")
    logger.addHandler(handler)
    try:
        async with running(traced):
            with pytest.raises(asyncq.JobFailed):
                await (await fails.enqueue()).result(timeout=10)
            spans = await finished(exporter, count("process", 1))
    finally:
        logger.removeHandler(handler)
    (process,) = named(spans, "process")
    (line,) = [ln for ln in lines if ln.get("event") == "job.failed"]
    assert process.context is not None
    assert line["trace_id"] == trace.format_trace_id(process.context.trace_id)
    assert line["span_id"] == trace.format_span_id(process.context.span_id)
