"""Helpers for tests that run asyncq's command-line programs as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLE = "tests.apps.sample:app"
# What a subprocess imports asyncq and the test apps from: this checkout's python/ first, so a
# git worktree's subprocesses run its own code, not an editable install of another checkout.
PYTHONPATH = os.pathsep.join([str(ROOT / "python"), str(ROOT)])


def script(name: str) -> str:
    """Path of an installed console script (``asyncq-worker``, ``asyncq``)."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}"
    return str(path)


def sample_env(
    url: str, queue: str, lease: float = 1.0, ledger: Path | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ASYNCQ_TEST_URL=url,
        ASYNCQ_TEST_QUEUE=queue,
        ASYNCQ_TEST_LEASE=str(lease),
        PYTHONPATH=PYTHONPATH,
    )
    if ledger is not None:
        env["ASYNCQ_TEST_LEDGER"] = str(ledger)
    return env


def run_cli(
    name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run ``asyncq`` or ``asyncq-worker`` to completion."""
    return subprocess.run(
        [script(name), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env if env is not None else dict(os.environ, PYTHONPATH=PYTHONPATH),
        timeout=timeout,
        check=False,
    )


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def await_until(cond: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class WorkerProc:
    """An ``asyncq-worker`` subprocess serving the sample app; stderr goes to a file."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str],
        *args: str,
        name: str = "worker",
        app: str = SAMPLE,
    ) -> None:
        self.log_path = tmp / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [script("asyncq-worker"), app, *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = 10) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in self.log():
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            return text in self.log()

        wait_until(seen, timeout, f"{text!r} in the worker log")

    def started(self, timeout: float = 10) -> WorkerProc:
        self.wait_log(" started: queues ", timeout)
        return self

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def read_ledger(path: Path) -> list[tuple[str, str, int, int]]:
    """``(what, job id, attempt, pid)`` per line the sample tasks wrote."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        what, job_id, attempt, pid = line.split()
        out.append((what, job_id, int(attempt), int(pid)))
    return out
