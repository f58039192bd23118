"""The bounded thread pool that runs plain (sync) task functions, and its slot accounting.

A thread cannot be stopped from outside. So a slot is counted busy from the moment the worker
leases a sync job until the function *really* returns in its thread, not until the job's outcome
is recorded: a function that outlives its timeout keeps its slot, and the worker leases no more
sync jobs than it has threads free to start them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["Slots", "ThreadCall", "ThreadPool", "default_size"]


def default_size() -> int:
    """Threads for sync tasks when none is configured (like the stdlib's default)."""
    return min(32, (os.cpu_count() or 1) + 4)


class Slots:
    """A count of execution slots (threads, child processes) shared by every queue of a worker.

    ``reserve`` takes a slot when a job is leased; ``release`` gives it back when the job's
    body has really ended (or will never start). ``on_free`` is called after each release, so
    a consuming loop waiting for capacity wakes up.
    """

    def __init__(self, size: int, on_free: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError("pool size must be >= 1")
        self.size = size
        self.busy = 0
        self.on_free = on_free

    def free(self, ahead: int = 0) -> int:
        """Slots not reserved now, counting ``ahead`` more than the pool has (jobs that will
        wait for a slot in this worker)."""
        return max(0, self.size + ahead - self.busy)

    def reserve(self) -> None:
        """Take one slot (may exceed the size: a job routed here unexpectedly still runs)."""
        self.busy += 1

    def release(self) -> None:
        """Give one slot back."""
        self.busy -= 1
        if self.on_free is not None:
            self.on_free()


class ThreadCall:
    """One sync function submitted to the pool.

    Attributes:
        started: Resolves when the function begins in its thread (timeouts count from here).
        done: Resolves with the function's result or exception.
    """

    __slots__ = ("_lock", "_slots", "_state", "done", "started")

    def __init__(self, slots: Slots, started: asyncio.Future[None]) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self._state = "pending"  # pending -> running -> ended, or pending -> abandoned
        self.started = started
        self.done: asyncio.Future[Any]

    def _begin(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "running"
            return True

    def abandon(self) -> None:
        """The caller no longer waits. A call that has not begun never will (its slot is
        given back now); a running one keeps its slot until the function returns."""
        with self._lock:
            if self._state != "pending":
                return
            self._state = "abandoned"
        self._slots.release()

    @property
    def running(self) -> bool:
        """Whether the function is executing in its thread right now."""
        return self._state == "running"


class ThreadPool:
    """Runs sync callables off the event loop with the caller's contextvars copied in."""

    def __init__(self, size: int, on_free: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError("thread pool size must be >= 1")
        self.size = size
        self.slots = Slots(size, on_free)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="asyncq-sync")

    def start(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ThreadCall:
        """Run ``fn(*args, **kwargs)`` in a thread, using a slot taken with ``slots.reserve()``.

        The slot is given back when the function returns or raises in its thread, or by
        :meth:`ThreadCall.abandon` when the call never began.
        """
        loop = asyncio.get_running_loop()
        call = ThreadCall(self.slots, loop.create_future())
        ctx = contextvars.copy_context()

        def run() -> Any:
            if not call._begin():
                return None
            _threadsafe(loop, _resolve, call.started)
            try:
                return ctx.run(fn, *args, **kwargs)
            finally:
                call._state = "ended"
                _threadsafe(loop, self.slots.release)

        call.done = loop.run_in_executor(self._executor, run)
        return call

    def shutdown(self) -> None:
        """Stop accepting work; threads still running finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _threadsafe(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    # The loop may be closed already when a thread outlives the worker: nothing to tell then.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)
