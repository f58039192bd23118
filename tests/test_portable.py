"""What Windows needs, run here: event loops without ``add_reader`` (asyncio's proactor loop,
Windows' default) still get every awaitable settled, because the core's wake-up socket is then
watched by ``asyncq._wakeups``' thread; and stop signals work without ``add_signal_handler``.
(The process pool talks to its children over their stdin and stdout, which every platform has:
``tests/test_procpool.py``.)

The loops here are selector loops whose ``add_reader`` and ``add_signal_handler`` raise what the
proactor loop's do, so the fallbacks run on any platform; everything else about them is a real
loop and a real broker.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import asyncq
from tests.conftest import make_app, running

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


class NoReaderLoop(asyncio.SelectorEventLoop):
    """Refuses to watch file descriptors, as ``ProactorEventLoop.add_reader`` does."""

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        if fd is self._ssock.fileno():  # the loop's own self-pipe (set up before us)
            super().add_reader(fd, callback, *args)
            return
        raise NotImplementedError


def run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Awaitable[T]) -> T:
    loop = loop_factory()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def wakeup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "asyncq-wakeups"]


def double(x: int) -> int:
    return 2 * x


def test_jobs_run_and_results_arrive_on_a_loop_without_add_reader(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue)
    task = app.task(double)

    async def main() -> list[int]:
        async with running(app, concurrency=8):
            handles = await asyncio.gather(*(task.enqueue(i) for i in range(200)))
            return list(await asyncio.gather(*(h.result(timeout=30) for h in handles)))

    assert run_on(NoReaderLoop, main()) == [2 * i for i in range(200)]


def test_a_cancelled_awaitable_leaves_the_fallback_working(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)
    task = app.task(double)

    async def main() -> int:
        async with running(app):
            handle = await task.enqueue(1)
            later = await task.options(delay=600).enqueue(2)
            never = asyncio.ensure_future(later.result(timeout=30))
            await asyncio.sleep(0.05)
            never.cancel()
            with pytest.raises(asyncio.CancelledError):
                await never
            return await handle.result(timeout=30)

    assert run_on(NoReaderLoop, main()) == 2


def test_the_wakeup_thread_ends_with_its_loop() -> None:
    async def main() -> float:
        app = asyncq.App("memory://wakeups-end")
        return await app.broker.now()

    before = set(wakeup_threads())
    assert run_on(NoReaderLoop, main()) > 0
    started = set(wakeup_threads()) - before
    assert len(started) == 1
    gc.collect()
    # It notices a closed loop within its idle check (1 s); 20 s of margin for a loaded host.
    deadline = time.monotonic() + 20
    while any(t.is_alive() for t in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in started)


def test_a_loop_with_add_reader_starts_no_thread() -> None:
    async def main() -> float:
        return await asyncq.App("memory://wakeups-none").broker.now()

    before = set(wakeup_threads())
    run_on(asyncio.SelectorEventLoop, main())
    assert set(wakeup_threads()) <= before


class ProactorLikeLoop(NoReaderLoop):
    """No ``add_signal_handler`` either, as on Windows' proactor loop."""

    def add_signal_handler(self, sig: int, callback: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError


SLEEPY_STARTED = threading.Event()


def sleepy(seconds: float) -> str:
    SLEEPY_STARTED.set()
    time.sleep(seconds)
    return "done"


def test_a_stop_signal_on_a_loop_without_signal_handlers_drains_the_worker(queue: str) -> None:
    app = make_app(f"memory://sig{queue}", queue)
    task = app.task(sleepy)
    previous = signal.getsignal(signal.SIGTERM)

    async def main() -> tuple[str, str]:
        worker = app.worker(grace=30.0)  # handle_signals=True: the default
        run = asyncio.ensure_future(worker.run())
        await worker.ready.wait()
        assert signal.getsignal(signal.SIGTERM) not in (previous, signal.SIG_DFL)
        SLEEPY_STARTED.clear()
        handle = await task.enqueue(0.5)
        # Started, not only leased: a leased job that has not started yet is handed back at
        # shutdown (and a loaded host can leave it in between for a while).
        while not SLEEPY_STARTED.is_set():
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # graceful: the running job finishes first
        await asyncio.wait_for(run, 30)
        return await handle.result(timeout=5), await handle.status()

    assert run_on(ProactorLikeLoop, main()) == ("done", "succeeded")
    assert signal.getsignal(signal.SIGTERM) is previous  # put back at shutdown
