"""What tracing costs (docs/tracing.md): enqueue and run N jobs in one process on memory://,
tracing off, then on with spans going to an exporter that drops them.

    python -m benches.tracing            # 5,000 jobs, 3 runs of each mode (about 10 s)
    python -m benches.tracing --jobs 1000 --reps 5

Each run: a worker (concurrency 100) on a fresh memory:// broker; the producer enqueues the jobs
one call each, 100 calls in flight; the clock stops when the last job's body has run. "on" uses
a TracerProvider with a SimpleSpanProcessor (the span is exported as it ends, the worst case)
and "on, batch" a BatchSpanProcessor, each into a no-op exporter, so the figure is the cost of
making, propagating and ending the spans, not of shipping them; "on, unsampled" samples no
trace (``ParentBased(ALWAYS_OFF)``), what a low sampling ratio costs for most jobs. Prints a
Markdown table with the medians of the runs: wall time, and the process's CPU time (all
threads; the steadier figure on a shared machine). Nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

import asyncq
from asyncq.tracing import instrument


class Drop(SpanExporter):
    """Counts spans and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def one_run(mode: str, jobs: int) -> tuple[float, float, int]:
    app = asyncq.App(f"memory://bench-{uuid.uuid4().hex[:8]}")
    exporter = Drop()
    provider = None
    if mode != "off":
        provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF) if "unsampled" in mode else None)
        processor = BatchSpanProcessor if "batch" in mode else SimpleSpanProcessor
        provider.add_span_processor(processor(exporter))
        instrument(app, provider)
    done = asyncio.Event()
    ran = 0

    @app.task(name="noop")
    async def noop(i: int) -> None:
        nonlocal ran
        ran += 1
        if ran == jobs:
            done.set()

    worker = app.worker({"default": 100}, handle_signals=False)
    run = asyncio.ensure_future(worker.run())
    await worker.ready.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for first in range(0, jobs, 100):
        await asyncio.gather(*(noop.enqueue(i) for i in range(first, min(first + 100, jobs))))
    await done.wait()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    worker.stop()
    await run
    if provider is not None:
        provider.shutdown()
    return elapsed, cpu, exporter.spans


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    modes = ["off", "on", "on, batch", "on, unsampled"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    spans: dict[str, int] = {}
    for _ in range(args.reps):
        for mode in modes:  # interleaved, so a slow moment of the machine hits every mode
            elapsed, cpu, spans[mode] = asyncio.run(one_run(mode, args.jobs))
            times[mode].append(elapsed)
            cpus[mode].append(cpu)
    base = statistics.median(cpus["off"])
    print(f"{args.jobs} jobs enqueued and run in one process, memory://, median of {args.reps}\n")
    print("| tracing | wall s | jobs/s | CPU per job | CPU vs off | spans exported |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        wall, cpu = statistics.median(times[mode]), statistics.median(cpus[mode])
        extra = "" if mode == "off" else f"+{(cpu - base) / args.jobs * 1e6:.0f} us"
        print(
            f"| {mode} | {wall:.3f} | {args.jobs / wall:,.0f} | {cpu / args.jobs * 1e6:.0f} us"
            f" | {extra} | {spans[mode]} |"
        )


if __name__ == "__main__":
    main()
