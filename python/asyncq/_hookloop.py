"""A helper event loop for running async middleware on behalf of synchronous callers.

``enqueue_sync`` must run the same (possibly async) hooks as ``enqueue``, from any thread,
including one whose own event loop is running (``asyncio.run`` is impossible there). So each
App owns one loop on a daemon thread, started on first use; a caller submits a coroutine and
blocks on its result. Only apps with middleware ever start it.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["HookLoop"]

T = TypeVar("T")

# Set inside every coroutine run by a HookLoop. A hook that calls enqueue_sync again would
# block the very loop that must run the nested hooks; the flag sends that call elsewhere.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("asyncq_hookloop", default=False)


class HookLoop:
    """One lazily started event loop on a daemon thread, shared by all threads of a process.

    Args:
        owner: The object whose lifetime bounds the loop's (the App); when it is collected the
            loop stops and closes.
    """

    def __init__(self, owner: object) -> None:
        self._owner = weakref.ref(owner)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._pid = 0

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` to completion on the helper loop and return its result.

        The caller's context variables are visible to the coroutine. Called from a coroutine
        this loop is running (a hook enqueueing in turn), it runs on a fresh short-lived thread
        instead, so nesting never deadlocks.

        Args:
            make: Builds the coroutine to run.

        Returns:
            The coroutine's result; its exception propagates.
        """
        if _inside.get() or threading.get_ident() == self._thread_id:
            return _run_on_fresh_thread(make)
        # run_coroutine_threadsafe copies this thread's context into the task it creates.
        return asyncio.run_coroutine_threadsafe(_flagged(make()), self._running_loop()).result()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # After fork() the helper thread does not exist in the child: start a new one.
            if self._loop is None or self._pid != os.getpid():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        thread = threading.Thread(
            target=_serve, args=(loop, started), name="asyncq-hooks", daemon=True
        )
        thread.start()
        started.wait()
        self._loop, self._pid = loop, os.getpid()
        self._thread_id = thread.ident or 0
        owner = self._owner()
        if owner is not None:
            weakref.finalize(owner, loop.call_soon_threadsafe, loop.stop)


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    try:
        loop.run_forever()
    finally:
        loop.close()


async def _flagged(coro: Coroutine[Any, Any, T]) -> T:
    _inside.set(True)
    return await coro


def _run_on_fresh_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # Rare (a hook that enqueues synchronously): a thread and a loop per call is acceptable.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="asyncq-hooks-nested") as pool:
        return pool.submit(context.run, asyncio.run, _flagged(make())).result()
