"""Building blocks of the chaos cases: Redis servers, worker processes, results.

Everything here is asyncio-friendly: the fault proxy runs on the same loop as the case, so a case
never blocks the loop (no ``time.sleep``, no blocking waits on subprocesses).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.apps import chaos as chaos_app
from tests.conftest import RedisServer
from tests.procutil import PYTHONPATH, ROOT, script

LEASE = 5.0
REAPER = 1.0


@dataclass
class Result:
    """One row of the chaos table."""

    case: str
    jobs: int
    lost: int
    duplicated: int
    recovery: list[float] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def failed_checks(self) -> list[str]:
        return [k for k, ok in self.checks.items() if not ok]

    def row(self) -> dict[str, Any]:
        rec = sorted(self.recovery)
        return {
            "case": self.case,
            "jobs": self.jobs,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "recovery_p50": rec[len(rec) // 2] if rec else None,
            "recovery_max": rec[-1] if rec else None,
            "pass": self.passed,
            "failed": self.failed_checks(),
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
        }


def table(results: Sequence[Result]) -> str:
    """The one table ``make chaos`` prints."""
    cols = ("case", "jobs", "lost", "dup", "recovery p50/max (s)", "result")
    head = "| {:<34} | {:>8} | {:>5} | {:>5} | {:>20} | {:<6} |".format(*cols)
    sep = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    lines = [head, sep]
    for r in results:
        rec = sorted(r.recovery)
        recs = f"{rec[len(rec) // 2]:.2f} / {rec[-1]:.2f}" if rec else "-"
        verdict = "pass" if r.passed else "FAIL"
        cells = (r.case, r.jobs, r.lost, r.duplicated, recs, verdict)
        lines.append("| {:<34} | {:>8} | {:>5} | {:>5} | {:>20} | {:<6} |".format(*cells))
    for r in results:
        for n in r.notes:
            lines.append(f"  {r.case}: {n}")
        if not r.passed:
            lines.append(f"  {r.case}: FAILED {', '.join(r.failed_checks())}")
    return "\n".join(lines)


class Redis(RedisServer):
    """A private redis-server (never the one on 6379) with restart helpers."""

    def __init__(self, *extra: str) -> None:
        super().__init__(*extra)

    def sigterm_and_restart(self) -> None:
        assert self.proc is not None
        self.proc.terminate()  # SIGTERM: redis-server shuts down cleanly (fsyncs the AOF)
        self.proc.wait(30)
        self.start()

    def kill9_and_restart(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.start()

    def down(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def rss_bytes(self) -> int:
        return int(self.cli("INFO", "memory").split("used_memory:")[1].split()[0])


async def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


class Worker:
    """An ``asyncq-worker`` subprocess serving the chaos app."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str],
        *args: str,
        name: str,
        prefix: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, script("asyncq-worker"), "tests.apps.chaos:app", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.started_at = time.monotonic()
        self.exited_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        return False

    async def started(self, timeout: float = 20) -> Worker:
        def ok() -> bool:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
            return " started: queues " in self.log()

        await wait_for(ok, timeout, f"worker {self.name} to start")
        return self

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def exited(self, timeout: float) -> bool:
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: not self.alive(), timeout, "exit", step=0.01)
        return not self.alive()

    def rss(self) -> int:
        """Resident set size in bytes (0 once gone)."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Env:
    """Redis, ledger, workers and an app handle for one case; ``close()`` tears it all down."""

    def __init__(self, name: str, *redis_args: str, keys: str = "") -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"asyncq-chaos-{name}-"))
        self.redis = Redis(*redis_args)
        self.queue = f"c{uuid.uuid4().hex[:8]}"
        self.ledger = self.tmp / "ledger"
        self.keys = keys
        self.workers: list[Worker] = []
        self.app = chaos_app.build(self.redis.url, self.queue, LEASE, REAPER)
        self._n = 0

    def env(self, url: str | None = None, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ASYNCQ_CHAOS_URL=url or self.redis.url,
            ASYNCQ_CHAOS_QUEUE=self.queue,
            ASYNCQ_CHAOS_LEDGER=str(self.ledger),
            ASYNCQ_CHAOS_LEASE=str(LEASE),
            ASYNCQ_CHAOS_REAPER=str(REAPER),
            ASYNCQ_CHAOS_KEYS=self.keys,
            PYTHONPATH=PYTHONPATH,
        )
        env.update(extra)
        return env

    async def worker(
        self,
        concurrency: int = 20,
        *,
        url: str | None = None,
        grace: float = 30,
        prefix: Sequence[str] = (),
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> Worker:
        self._n += 1
        w = Worker(
            self.tmp,
            env or self.env(url),
            "-q",
            f"{self.queue}={concurrency}",
            "--grace",
            str(grace),
            name=f"w{self._n}",
            prefix=prefix,
        )
        self.workers.append(w)
        if wait:
            await w.started()
        return w

    def task(self, name: str) -> Any:
        return self.app.tasks[name]

    async def enqueue(
        self, name: str, calls: list[tuple[Any, ...]], chunk: int = 2000
    ) -> list[str]:
        ids: list[str] = []
        task = self.task(name)
        for i in range(0, len(calls), chunk):
            handles = await task.enqueue_many([(c, {}) for c in calls[i : i + chunk]])
            ids.extend(h.id for h in handles)
        return ids

    async def counts(self) -> dict[str, int]:
        return dict(await self.app.broker.counts(self.queue))

    async def drained(self, timeout: float, expect_succeeded: int | None = None) -> bool:
        async def done() -> bool:
            c = await self.counts()
            idle = c.get("queued", 0) == c.get("running", 0) == c.get("scheduled", 0) == 0
            if expect_succeeded is not None:
                return idle and c.get("succeeded_total", 0) + c.get("dead", 0) >= expect_succeeded
            return idle

        with contextlib.suppress(AssertionError):
            await wait_for(done, timeout, "the queue to drain", step=0.2)
            return True
        return False

    def log_text(self) -> str:
        return "\n".join(w.log() for w in self.workers)

    def count_log(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log_text()))

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.redis.stop()


async def timed(coro: Awaitable[Result]) -> Result:
    t0 = time.monotonic()
    r = await coro
    r.seconds = time.monotonic() - t0
    return r
