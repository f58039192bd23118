"""The bounded thread pool that runs plain (sync) task functions."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def default_size() -> int:
    """Threads for sync tasks when none is configured (like the stdlib's default)."""
    return min(32, (os.cpu_count() or 1) + 4)


class ThreadPool:
    """Runs sync callables off the event loop with the caller's contextvars copied in."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("thread pool size must be >= 1")
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="asyncq-sync")

    def run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` in a thread; returns an awaitable future."""
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        """Stop accepting work; threads still running finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)
