"""Tasks that misbehave, for tests of the worker's fault containment.

Loaded by subprocess workers as ``tests.apps.faulty:app``; configured from the environment like
``tests.apps.sample`` (``ASYNCQ_TEST_URL``, ``ASYNCQ_TEST_QUEUE``, ``ASYNCQ_TEST_LEASE``,
``ASYNCQ_TEST_LEDGER``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, NoReturn

import asyncq
from tests.apps.sample import note


class Unprintable(Exception):
    """An exception whose ``__str__`` and ``__repr__`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Custom(BaseException):
    """A BaseException that is neither Exception nor an interpreter signal."""


def build(url: str, queue: str, lease: float = 2.0, **kwargs: Any) -> asyncq.App:
    """An App with the faulty tasks registered under fixed names."""
    app = asyncq.App(url, default_queue=queue, lease=lease, reaper=0.2, **kwargs)
    fast = asyncq.Exponential(base=0.05, cap=0.05, jitter=0.0)

    @app.task(name="faulty:exit_async", retries=1, backoff=fast)
    async def exit_async(code: int) -> NoReturn:
        note("start")
        sys.exit(code)

    @app.task(name="faulty:exit_sync", retries=1, backoff=fast)
    def exit_sync(code: int) -> NoReturn:
        note("start")
        sys.exit(code)

    @app.task(name="faulty:interrupt", retries=1, backoff=fast)
    async def interrupt() -> NoReturn:
        note("start")
        raise KeyboardInterrupt("ctrl-c from a task")

    @app.task(name="faulty:custom_base", backoff=fast)
    def custom_base() -> NoReturn:
        raise Custom("custom base exception")

    @app.task(name="faulty:self_cancel", backoff=fast)
    async def self_cancel() -> NoReturn:
        raise asyncio.CancelledError()

    @app.task(name="faulty:unprintable", retries=1, backoff=fast)
    async def unprintable() -> NoReturn:
        raise Unprintable()

    @app.task(name="faulty:sleep_sync", timeout=2.0)
    def sleep_sync(seconds: float) -> int:
        note("start")
        time.sleep(seconds)
        note("done")
        return os.getpid()

    @app.task(name="faulty:hang_sync", timeout=0.3)
    def hang_sync(seconds: float) -> None:
        time.sleep(seconds)

    @app.task(name="faulty:hard_exit")
    async def hard_exit() -> None:
        note("start")
        os._exit(7)  # no Python cleanup, no outcome: only lease expiry can tell

    @app.task(name="faulty:ok")
    async def ok(x: int) -> int:
        return x

    return app


app = build(
    os.environ.get("ASYNCQ_TEST_URL", "memory://faulty"),
    os.environ.get("ASYNCQ_TEST_QUEUE", "default"),
    float(os.environ.get("ASYNCQ_TEST_LEASE", "2")),
)
