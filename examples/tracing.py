"""Tracing (docs/tracing.md): ``python -m examples.tracing`` prints the spans of a web
request that enqueues a job (which fails once, then succeeds on its retry) and a chain.

Needs the ``asyncq[otel]`` extra and opentelemetry-sdk. Spans go to the console
exporter, one line each; a real setup exports OTLP to a collector instead. Uses
``ASYNCQ_URL`` when set (a Redis), else the in-process ``memory://`` broker.
"""

from __future__ import annotations

import asyncio
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import asyncq


def one_line(span: ReadableSpan) -> str:
    """A span on one line: name, kind, trace, span and parent ids (their first 8 hex digits),
    status, and the attempt's number and outcome."""
    ctx, parent = span.context, span.parent
    assert ctx is not None
    attrs = span.attributes or {}
    fields = [
        f"{span.name:<16}",
        f"{span.kind.name.lower():<8}",
        f"trace={ctx.trace_id:032x}"[:14],
        f"span={ctx.span_id:016x}"[:13],
        f"parent={parent.span_id:016x}"[:15] if parent else "parent=-       ",
        f"{span.status.status_code.name:<5}",
    ]
    fields += [f"{k[7:]}={attrs[k]!s}" for k in ("asyncq.attempt", "asyncq.outcome") if k in attrs]
    if span.links:
        fields.append(f"links={len(span.links)}")
    return " ".join(fields) + "\n"


# Set the provider before the first span (the app's tracer follows the global one).
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
trace.set_tracer_provider(provider)

app = asyncq.App(os.environ.get("ASYNCQ_URL", "memory://tracing-example"), tracing=True)
calls = 0


@app.task(retries=2, backoff=asyncq.Exponential(base=0.05, jitter=0.0))
async def charge(order: int) -> str:
    global calls
    calls += 1
    if calls == 1:
        raise ConnectionError("payment service timed out")
    return f"order {order} charged"


@app.task
async def reserve(order: int) -> int:
    return order


@app.task
async def ship(order: int) -> str:
    return f"order {order} shipped"


async def main() -> None:
    worker = app.worker(handle_signals=False)
    run = asyncio.ensure_future(worker.run())
    with trace.get_tracer("shop").start_as_current_span("POST /checkout"):
        charged = await charge.enqueue(7)
        shipped = await asyncq.chain(reserve.s(7), ship.s()).enqueue()
    assert isinstance(shipped, asyncq.JobHandle)  # a chain that ends in one task
    await charged.result(timeout=10)
    await shipped.result(timeout=10)
    worker.stop()
    await run
    provider.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
