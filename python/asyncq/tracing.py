"""OpenTelemetry tracing of enqueues and job runs (the ``asyncq[otel]`` extra).

Off unless asked for: ``App(..., tracing=True)`` or :func:`instrument` turns it on for one
app, as OpenTelemetry's contrib instrumentations are opt-in. Until then nothing imports
``opentelemetry`` and no job pays for it. When on:

* an enqueue opens a PRODUCER span ``send <queue>`` and writes its W3C trace context
  (``traceparent``, ``tracestate``, by the global propagator) into the envelope's headers;
* the worker runs each attempt in a CONSUMER span ``process <queue>`` whose parent is that
  producer span, so every attempt of a job (its retries too) is in the enqueue's trace;
* a flow's enqueue is one ``send`` span with a ``create`` span per member, which its runs are
  children of; a member links to the ``create`` spans of the members it waits on.

See docs/tracing.md for the spans and attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("asyncq tracing needs OpenTelemetry: pip install 'asyncq[otel]'") from exc

from . import log as _log
from ._core import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from ._core import Job
    from .app import App

__all__ = ["Tracing", "instrument", "uninstrument"]

T = TypeVar("T")

# The envelope header naming the members a flow member waits on: their producer spans'
# traceparents, space-separated; the member's process span links to each.
LINKS_HEADER = "asyncq-links"

# Links travel as W3C traceparents whatever the global propagator is.
_W3C = TraceContextTextMapPropagator()

# At most this many upstream members are linked (a batch's callback waits on every job).
_MAX_LINKS = 32

# Outcomes of an attempt that failed it: the span's status is ERROR.
_FAILED = frozenset({"retrying", "dead", "failed", "unknown", "refused", "worker_error"})


def instrument(app: App, tracer_provider: TracerProvider | None = None) -> None:
    """Trace ``app``'s enqueues and its workers' job runs.

    Call it where the app is made (the module the worker imports), so producers and workers
    both trace; ``App(..., tracing=True)`` does the same.

    Args:
        app: The application.
        tracer_provider: Where spans go; None uses the global provider
            (``opentelemetry.trace.set_tracer_provider``), also one set later.
    """
    app._tracing = Tracing(tracer_provider)
    _log.trace_ids = _current_ids


def uninstrument(app: App) -> None:
    """Stop tracing ``app``: no spans, no trace headers from here on."""
    app._tracing = None


def _current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids as hex, for log lines; None outside a span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _common(queue: str, task: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "asyncq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
        "asyncq.task": task,
    }


def _headers(span: Span | None = None) -> dict[str, str]:
    """Propagation headers for ``span`` (None: the current context)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=None if span is None else trace.set_span_in_context(span))
    return carrier


def _traceparent(span: Span) -> str:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier["traceparent"]


def _fail(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class Sending:
    """One enqueue call being traced: its span and the headers that carry it.

    Attributes:
        span: The PRODUCER span.
        headers: ``traceparent`` (and ``tracestate``) to put in the jobs' envelopes.
    """

    __slots__ = ("headers", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.headers = _headers(span)

    def sent(self, ids: Sequence[str]) -> None:
        """Name the job written (one job's id; a batch's count is set already)."""
        if len(ids) == 1:
            self.span.set_attribute("messaging.message.id", ids[0])


class Tracing:
    """The spans of one app (made by :func:`instrument`).

    Args:
        tracer_provider: Where spans go; None for the global provider.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("asyncq", __version__, tracer_provider=tracer_provider)

    @contextlib.contextmanager
    def sending(
        self, queue: str, task: str, count: int = 1, attributes: dict[str, Any] | None = None
    ) -> Iterator[Sending]:
        """The PRODUCER span of one enqueue call of ``count`` jobs, current in the block."""
        attrs = _common(queue, task, "send")
        if count != 1:
            attrs["messaging.batch.message_count"] = count
        if attributes:
            attrs.update(attributes)
        with self.tracer.start_as_current_span(
            f"send {queue}",
            kind=SpanKind.PRODUCER,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield Sending(span)
            except BaseException as exc:
                _fail(span, exc)
                raise

    @contextlib.contextmanager
    def sending_flow(
        self, members: Sequence[tuple[str, str, str, Sequence[int]]]
    ) -> Iterator[list[dict[str, str]]]:
        """The spans of one flow enqueue, after OTel's batch pattern: a PRODUCER span
        ``send <queue>`` for the call (current in the block) and, inside it, a PRODUCER span
        ``create <queue>`` per member, whose context travels in the member's envelope (yielded
        as each member's headers). A member's create span links to those of the members it
        waits on. ``members``: (queue, task, job id, indexes of the members it waits on,
        which come before it)."""
        first_queue, first_task = members[0][0], members[0][1]
        with self.sending(first_queue, first_task, len(members), {"asyncq.flow": True}):
            spans: list[Span] = []
            for member in members:
                spans.append(self._create(member, spans))
            headers: list[dict[str, str]] = []
            for span, (_, _, _, waits_on) in zip(spans, members, strict=True):
                carrier = _headers(span)
                if waits_on:
                    parents = waits_on[:_MAX_LINKS]
                    carrier[LINKS_HEADER] = " ".join(_traceparent(spans[i]) for i in parents)
                headers.append(carrier)
            try:
                yield headers
            except BaseException as exc:
                for span in spans:
                    _fail(span, exc)
                raise
            finally:
                for span in spans:
                    span.end()

    def _create(self, member: tuple[str, str, str, Sequence[int]], before: list[Span]) -> Span:
        queue, task, job_id, waits_on = member
        attrs = _common(queue, task, "create")
        attrs["messaging.message.id"] = job_id
        links = [Link(before[i].get_span_context()) for i in waits_on[:_MAX_LINKS]]
        return self.tracer.start_span(
            f"create {queue}", kind=SpanKind.PRODUCER, attributes=attrs, links=links
        )

    @contextlib.contextmanager
    def processing(self, job: Job) -> Iterator[Span]:
        """The CONSUMER span of one attempt of ``job``, current in the block; its parent is
        the enqueue's span (from the job's headers), its links the upstream flow members."""
        carrier = job.headers
        # From the headers alone, never the worker's own context: a job enqueued untraced
        # starts a trace of its own.
        parent = propagate.extract(carrier, context=otel_context.Context())
        links = _links(carrier.get(LINKS_HEADER))
        attrs = _common(job.queue, job.task, "process")
        attrs["messaging.message.id"] = job.id
        attrs["asyncq.attempt"] = job.attempt
        attrs["asyncq.max_attempts"] = job.max_attempts
        with self.tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attrs,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except asyncio.CancelledError:
                raise  # a shutdown stopped waiting for the outcome (already "unknown")
            except BaseException as exc:
                span.set_attribute("asyncq.outcome", "worker_error")
                _fail(span, exc)
                raise

    @staticmethod
    def current_headers() -> dict[str, str]:
        """The current context (a run's ``process`` span) as propagation headers, for a
        child process to continue it."""
        return _headers()

    @staticmethod
    def carry(
        make: Callable[[], Coroutine[Any, Any, T]],
    ) -> Callable[[], Coroutine[Any, Any, T]]:
        """``make`` for another thread's event loop, run in this thread's current context."""
        ctx = otel_context.get_current()

        async def run() -> T:
            token = otel_context.attach(ctx)
            try:
                return await make()
            finally:
                otel_context.detach(token)

        return run

    @staticmethod
    def outcome(outcome: str, exc: BaseException | None = None) -> None:
        """Record the current attempt's outcome (``succeeded``, ``retrying``, ``dead``,
        ``cancelled``, ``released``, ``snoozed``...) on its span; a failed one gets the
        exception and status ERROR."""
        span = trace.get_current_span()
        span.set_attribute("asyncq.outcome", outcome)
        if exc is not None and outcome in _FAILED:
            _fail(span, exc)


def _links(value: str | None) -> list[Link] | None:
    if not value:
        return None
    out: list[Link] = []
    for traceparent in value.split():
        ctx = trace.get_current_span(_W3C.extract({"traceparent": traceparent}))
        span_context = ctx.get_span_context()
        if span_context.is_valid:
            out.append(Link(span_context))
    return out
