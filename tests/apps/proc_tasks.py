"""Functions the process-pool tests run in child processes; children import them by name.

``app`` serves ``asyncq-worker tests.apps.proc_tasks:app`` in process-level tests, configured from
the environment: ``ASYNCQ_TEST_URL`` (default: a port nothing listens on, which proves that
importing this module in a child connects nowhere) and ``ASYNCQ_TEST_QUEUE``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from typing import Any

import asyncq

# Importing this module in a child builds an App: construction must not connect anywhere.
app = asyncq.App(
    os.environ.get("ASYNCQ_TEST_URL", "redis://127.0.0.1:1/0"),
    default_queue=os.environ.get("ASYNCQ_TEST_QUEUE", "default"),
    lease=2.0,
    reaper=0.2,
)


def add(x: int, y: int) -> int:
    """Return ``x + y``."""
    return x + y


@app.task(name="proc_tasks:multiply")
def multiply(x: int, y: int) -> int:
    """A registered task: the module attribute is a Task, the child runs its ``.fn``."""
    return x * y


def fail(message: str) -> None:
    """Raise ValueError."""
    raise ValueError(message)


def exit_with(code: int) -> None:
    """Call sys.exit."""
    sys.exit(code)


def interrupt() -> None:
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt


def die(code: int) -> None:
    """Leave without a reply, as a crash would."""
    os._exit(code)


def kill_self() -> None:
    """Die of SIGKILL, as the OOM killer would do it."""
    os.kill(os.getpid(), signal.SIGKILL)


def unpicklable() -> Any:
    """Return something pickle refuses."""
    return lambda: None


def nap(seconds: float) -> int:
    """Sleep, then return this process's pid."""
    time.sleep(seconds)
    return os.getpid()


def tick(path: str, seconds: float = 30.0) -> None:
    """Append a line to ``path`` every 50 ms for ``seconds``: shows whether the body still runs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.05)


def job() -> asyncq.JobContext:
    """Return the context current_job() sees in the child."""
    return asyncq.current_job()


# Registered names of the tasks a worker runs; tests in other processes enqueue by these names.
TICK = "proc_tasks:tick"
TICK_FOREVER = "proc_tasks:tick_forever"
app.task(name=TICK, executor="process", timeout=0.5)(tick)
app.task(name=TICK_FOREVER, executor="process")(tick)


def job_facts() -> dict[str, Any]:
    """The child's current_job() as plain data (a worker stores results as msgpack)."""
    return dataclasses.asdict(asyncq.current_job())


def report_steps(steps: int, pause: float = 0.05) -> int:
    """Report progress after each of ``steps`` steps, from whatever runs it; return ``steps``."""
    job = asyncq.current_job()
    for i in range(1, steps + 1):
        time.sleep(pause)
        job.progress(i / steps, f"step {i} of {steps}")
    return steps


def snooze_once(marker: str) -> str:
    """Snooze the first time (``marker`` does not exist yet, then is created), then succeed."""
    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8"):
            pass
        raise asyncq.Snooze(0.2)
    return "woke"


def leave_a_reporter(seconds: float) -> str:
    """Start a thread that keeps reporting progress for ``seconds`` after this call returns."""
    import threading  # noqa: PLC0415 - only this function needs it

    job = asyncq.current_job()

    def keep_reporting() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job.progress(0.5, "from a leftover thread")
            time.sleep(0.01)

    threading.Thread(target=keep_reporting, daemon=True).start()
    return "returned"


def chatty(n: int) -> str:
    """Prints to stdout and stderr, writes fd 1 directly and reads stdin: the pool's protocol
    (on the child's original stdin and stdout) must not notice."""
    for i in range(n):
        print(f"chatty line {i}", flush=True)
        print(f"chatty err {i}", file=sys.stderr, flush=True)
    os.write(1, b"\x00\x00\x00\x05raw bytes on fd 1\n")  # a fake reply header, on purpose
    return f"read {sys.stdin.read()!r}"


def trace_ids() -> tuple[int, int] | None:
    """The trace and span id current in the child while it runs (None: no trace context)."""
    from opentelemetry import trace  # noqa: PLC0415 (children of untraced tests skip it)

    span = trace.get_current_span().get_span_context()
    return (span.trace_id, span.span_id) if span.is_valid else None
