"""asyncq end to end in one process: enqueue thousands of jobs, run a worker, report.

Run it with ``make demo`` (or ``python -m examples.demo --help`` once the extension is built).

What happens:

1. A broker is chosen. With ``redis-server`` on PATH the demo starts a private, throwaway one on
   a free loopback port in a temporary directory (never your Redis on 6379) and kills it at exit.
   Without it, the in-process ``memory://`` broker is used; it has the same semantics.
2. Several thousand jobs of the tasks in :mod:`examples.tasks` are enqueued in bulk
   (``Task.enqueue_many``: one broker round trip per chunk), some delayed, a few with priority.
3. A :class:`asyncq.Worker` runs in this process while a progress bar on stderr follows the
   queue's counts.
4. A summary goes to stdout: jobs succeeded / retried / dead, wall time, jobs per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncq
from asyncq.schedule import schedule_infos

QUEUE = "demo"
REDIS_DEFAULT_PORT = 6379
PROGRESS_HZ = 5


# ---- choosing a broker ------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerChoice:
    """The broker URL the demo uses and a line describing it for the summary."""

    url: str
    label: str


def free_port() -> int:
    """A free TCP port on the loopback interface (never Redis' default port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != REDIS_DEFAULT_PORT:
            return port


def wait_for_redis(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Block until the server on ``port`` answers PING.

    Raises:
        RuntimeError: The server exited or did not answer in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2) as s,
        ):
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout}s")


@contextlib.contextmanager
def private_redis(executable: str) -> Iterator[BrokerChoice]:
    """Run a throwaway redis-server for the duration of the block.

    It listens on 127.0.0.1 only, persists nothing, keeps its files in a temporary directory and
    is killed (and the directory removed) when the block exits, also on errors and Ctrl-C.
    """
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="asyncq-demo-redis-")
    cmd = [executable, "--port", str(port), "--bind", "127.0.0.1"]
    cmd += ["--save", "", "--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_redis(port, proc)
        version = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        vtext = next((w[2:] for w in version if w.startswith("v=")), "?")
        label = f"redis (private redis-server {vtext} on 127.0.0.1:{port})"
        yield BrokerChoice(f"redis://127.0.0.1:{port}/0", label)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def choose_broker(kind: str) -> Iterator[BrokerChoice]:
    """Yield the broker for ``kind``: ``redis``, ``memory`` or ``auto`` (redis if installed).

    Raises:
        SystemExit: ``redis`` was asked for but ``redis-server`` is not on PATH.
    """
    executable = shutil.which("redis-server")
    if kind == "redis" and executable is None:
        raise SystemExit("--broker redis needs redis-server on PATH (apt-get install redis-server)")
    if kind != "memory" and executable is not None:
        with private_redis(executable) as choice:
            yield choice
    else:
        why = "asked for" if kind == "memory" else "redis-server not found on PATH"
        yield BrokerChoice("memory://demo", f"memory:// (in-process; {why})")


# ---- enqueueing -------------------------------------------------------------------------------


@dataclass
class Enqueued:
    """Handles kept for the summary, and how many jobs went in."""

    total: int = 0
    charge: asyncq.JobHandle[Any] | None = None
    crm: asyncq.JobHandle[Any] | None = None
    page: asyncq.JobHandle[Any] | None = None
    chord: asyncq.JobHandle[Any] | None = None


async def enqueue_in_chunks(
    task: Any, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], chunk: int = 500
) -> list[asyncq.JobHandle[Any]]:
    """Enqueue ``calls`` with one broker round trip per ``chunk`` jobs."""
    handles: list[asyncq.JobHandle[Any]] = []
    for start in range(0, len(calls), chunk):
        handles += await task.enqueue_many(calls[start : start + chunk])
    return handles


#: Members of the demo's chord (they run in the demo queue; the report runs in "ops").
N_CHORD = 20


async def enqueue_jobs(tasks: Any, n: int) -> Enqueued:
    """Enqueue about ``n`` jobs across the example tasks."""
    out = Enqueued()
    n_dead, n_delayed, n_pages = 25, 50, 5
    rest = max(n - n_dead - n_delayed - n_pages, 3)
    n_thumbs, n_charges = rest * 2 // 5, rest // 5
    n_emails = rest - n_thumbs - n_charges

    thumbs = [((i,), {"size": 256}) for i in range(n_thumbs)]
    emails = [((f"user{i}@example.com", "Welcome aboard"), {}) for i in range(n_emails)]
    charges = [((1000 + i, 1999), {}) for i in range(n_charges)]
    crm = [((i,), {}) for i in range(n_dead)]
    reminders = [((i,), {}) for i in range(n_delayed)]

    await enqueue_in_chunks(tasks.make_thumbnail, thumbs)
    await enqueue_in_chunks(tasks.send_email, emails)
    out.charge = (await enqueue_in_chunks(tasks.charge_card, charges))[0]
    out.crm = (await enqueue_in_chunks(tasks.sync_to_legacy_crm, crm))[0]
    # Per-enqueue options: these may not run before half a second from now (broker clock).
    await tasks.send_reminder.options(delay=0.5).enqueue_many(reminders)
    # Enqueued last, but priority 9 puts them ahead of the whole backlog.
    for i in range(n_pages):
        out.page = await tasks.page_on_call.enqueue(f"disk 9{i}% full on db-{i}")
    # A chord: 20 thumbnails in parallel, then one report over all 20 results, in order.
    header = [tasks.make_thumbnail.s(10_000 + i, size=64) for i in range(N_CHORD)]
    out.chord = await asyncq.chord(header, tasks.thumbnail_report.s()).enqueue()
    out.total = n_thumbs + n_emails + n_charges + n_dead + n_delayed + n_pages + N_CHORD
    return out


# ---- progress ---------------------------------------------------------------------------------


def render(done: int, total: int, elapsed: float, counts: dict[str, int], retried: int) -> str:
    """One progress line: bar, jobs done, rate and what is still waiting."""
    width = 30
    filled = width * done // max(total, 1)
    bar = "#" * filled + "." * (width - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    waiting = f"queued {counts['queued']:>5}  scheduled {counts['scheduled']:>4}"
    return (
        f"[{bar}] {done:>6}/{total} {100 * done / max(total, 1):5.1f}%  {rate:7.0f} jobs/s  "
        f"{waiting}  running {counts['running']:>3}  retried {retried:>4}  dead {counts['dead']:>3}"
    )


async def follow(app: asyncq.App, worker: asyncq.Worker, total: int, limit: float) -> bool:
    """Show progress until every job finished (succeeded or dead). False on timeout."""
    tty = sys.stderr.isatty()
    started = time.monotonic()
    last_line = 0.0
    while True:
        counts = await app.broker.counts(QUEUE)
        done = counts["succeeded_total"] + counts["dead"]
        now = time.monotonic()
        line = render(done, total, now - started, counts, worker.stats.retried)
        finished = done >= total
        if tty:
            print("\r" + line, end="\n" if finished else "", file=sys.stderr, flush=True)
        elif finished or now - last_line >= 1.0:  # a log file gets a line a second
            print(line, file=sys.stderr, flush=True)
            last_line = now
        if finished:
            return True
        if now - started > limit:
            print(f"\ngave up after {limit:.0f}s", file=sys.stderr)
            return False
        await asyncio.sleep(1 / PROGRESS_HZ)


# ---- the demo ---------------------------------------------------------------------------------


async def show_samples(app: asyncq.App, jobs: Enqueued) -> None:
    """Read a few outcomes back the way an application would."""
    assert jobs.charge and jobs.crm and jobs.page
    try:
        print(f"  a result:     {await jobs.charge.result(timeout=5)}")
    except asyncq.JobFailed as exc:  # unlikely: it failed on all 5 attempts
        print(f"  a result:     (that charge failed 5 times: {exc.message})")
    try:
        await jobs.crm.result(timeout=5)
    except asyncq.JobFailed as exc:
        print(f"  a dead job:   {exc.type}: {exc.message} (reason: {exc.reason})")
    if jobs.chord is not None:
        print(f"  a chord:      {await jobs.chord.result(timeout=10)}")
    for s in await schedule_infos(app.broker, ["ops"]):
        print(f"  a schedule:   {s.name} fired {s.fired} time(s) (every second, by broker time)")
    info = await jobs.page.info()
    if info is not None and info.started_at is not None:
        wait_ms = (info.started_at - info.enqueued_at) * 1000
        print(
            f"  priority 9:   enqueued last, yet started {wait_ms:.0f} ms later (backlog skipped)"
        )


async def run(app: asyncq.App, tasks: Any, n: int, label: str, limit: float) -> int:
    """Enqueue, process with an in-process worker, print the summary. Returns the exit code."""
    t0 = time.monotonic()
    jobs = await enqueue_jobs(tasks, n)
    t_enqueued = time.monotonic()
    print(
        f"enqueued {jobs.total} jobs in {t_enqueued - t0:.2f}s, starting a worker", file=sys.stderr
    )

    # handle_signals=False: Ctrl-C interrupts the whole demo instead of draining the worker.
    # "ops" holds the chord's report and the every-second schedule (examples/tasks.py); this
    # worker also fires the schedule, as every worker does by default.
    worker = app.worker({QUEUE: 200, "ops": 5}, threads=8, grace=5.0, handle_signals=False)
    running = asyncio.ensure_future(worker.run())
    try:
        complete = await follow(app, worker, jobs.total, limit)
    finally:
        worker.stop()
        await running  # waits for in-flight jobs and flushes their acks to the broker
    t_done = time.monotonic()

    counts = await app.broker.counts(QUEUE)
    processing = t_done - t_enqueued
    print(f"\nasyncq {asyncq.__version__} demo: {jobs.total} jobs")
    print(f"  broker:       {label}")
    print(f"  succeeded:    {counts['succeeded_total']}")
    print(f"  retried:      {worker.stats.retried} failed attempts were retried with backoff")
    print(f"  dead:         {counts['dead']} (in the dead-letter queue)")
    print(f"  wall time:    {t_done - t0:.2f}s (enqueue {t_enqueued - t0:.2f}s)")
    print(f"  throughput:   {jobs.total / processing:.0f} jobs/s (worker start to last ack)")
    await show_samples(app, jobs)
    return 0 if complete else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo's command line."""
    p = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=10_000, help="about how many jobs (default 10000)")
    p.add_argument(
        "--broker",
        choices=["auto", "redis", "memory"],
        default="auto",
        help="auto: a private redis-server if installed, else memory:// (default auto)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: pick a broker, import the app against it, run the demo."""
    args = parse_args(argv)
    # Let `kill` (SIGTERM) unwind like Ctrl-C does, so the private redis-server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The progress bar stands in for per-job log lines; a real worker logs at "info".
    asyncq.configure_logging("error")
    with choose_broker(args.broker) as broker:
        # The example app reads ASYNCQ_URL when it is imported, as a service's config would.
        os.environ["ASYNCQ_URL"] = broker.url
        tasks = importlib.import_module("examples.tasks")
        return asyncio.run(run(tasks.app, tasks, args.jobs, broker.label, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
