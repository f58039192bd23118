"""A bounded pool of child processes for ``@app.task(executor="process")``.

A thread cannot be stopped, so a sync task that outlives its timeout keeps running. A child
process can: on a timeout, or when the awaiting coroutine is cancelled (shutdown, ``cancel()``),
the pool terminates the child and starts a replacement on next use. When :meth:`ProcessPool.run`
returns or raises, the user's code is not running anywhere.

Children are plain interpreters started with ``subprocess`` (never ``fork``: the parent runs
tokio threads) that import the task's module by name; see :mod:`asyncq._procchild` for the
protocol. Each child runs one call at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from .context import JobContext
from .errors import RateLimited, Snooze
from .task import Task

__all__ = ["ProcessPool", "ProcessTaskError", "default_size"]

log = logging.getLogger("asyncq.worker")

_HEADER = struct.Struct("!I")
_DIED = "ChildProcessDied"
# Runs in the child: the parent's sys.path first, so asyncq and task modules import as they do
# in the parent, then the serving loop (on the child's stdin and stdout).
_BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from asyncq._procchild import main; main()"
)
# Windows: the parent's ends of the pipes must be overlapped for the proactor loop to read and
# write them; asyncio's own Popen makes them so (and the child's ends plain).
if sys.platform == "win32":
    from asyncio.windows_utils import Popen as _Popen
else:
    _Popen = subprocess.Popen


def default_size() -> int:
    """Children in the pool when none is configured: one per CPU."""
    return os.cpu_count() or 1


class ProcessTaskError(Exception):
    """A call in a child process failed, or the child died during it.

    Attributes:
        type_name: Qualified name of the exception's type in the child, or
            ``"ChildProcessDied"`` when the child exited or was killed mid-call.
        message: The exception's message (or how the child died).
        remote_traceback: The traceback formatted in the child ('' when it died).
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


class _Child:
    """One child process and the two pipe ends the parent holds."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        transports: tuple[asyncio.ReadTransport, asyncio.WriteTransport],
    ) -> None:
        self.proc = proc
        self.reader = reader
        self.transports = transports
        self.retired = False

    def send(self, data: bytes) -> None:
        # The transport buffers what the pipe does not take at once; one call per child at a
        # time, so there is nothing to wait for.
        self.transports[1].write(_HEADER.pack(len(data)) + data)

    async def receive(self) -> tuple[Any, ...]:
        """Read one reply; ``asyncio.IncompleteReadError`` when the child has gone."""
        header = await self.reader.readexactly(_HEADER.size)
        body = await self.reader.readexactly(_HEADER.unpack(header)[0])
        try:
            reply: tuple[Any, ...] = pickle.loads(body)
        except Exception as exc:  # e.g. a result class the parent cannot import
            reply = (
                "error",
                type(exc).__qualname__,
                f"the result could not be unpickled: {exc}",
                "",
            )
        return reply

    def close_pipes(self) -> None:
        # A transport that saw the child go has closed itself already; closing it again raises.
        reader, writer = self.transports
        if not reader.is_closing():
            reader.close()
        if not writer.is_closing():
            writer.abort()


class ProcessPool:
    """Runs module-level functions in a bounded set of child processes that can be killed.

    Args:
        size: Most children alive (and calls running) at once; children start on first use.
        term_grace: Seconds a child gets to exit after SIGTERM before it is sent SIGKILL.

    Raises:
        ValueError: ``size`` is below 1.
    """

    def __init__(self, size: int, *, term_grace: float = 1.0) -> None:
        if size < 1:
            raise ValueError("process pool size must be >= 1")
        self._size = size
        self._term_grace = term_grace
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._closed = False

    @property
    def size(self) -> int:
        """Most child processes alive at once."""
        return self._size

    async def run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        ctx: JobContext,
        timeout: float | None,
        on_progress: Callable[[float, str | None], None] | None = None,
        trace_headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call ``fn(*args, **kwargs)`` in a child process and return its result.

        Waiting for a free child does not count against ``timeout``: it runs from the moment
        the child starts the call. On a timeout or a cancellation the child is terminated
        before this returns, so the function is no longer running.

        Args:
            fn: A module-level function, or a :class:`~asyncq.Task` wrapping one. It is sent
                by reference (module and qualified name) and imported in the child.
            args: Positional arguments (pickled).
            kwargs: Keyword arguments (pickled).
            ctx: The job's context, returned by ``current_job()`` inside the child (sent
                without its report sink).
            timeout: Seconds the call may run, or None for no limit.
            on_progress: Called on the event loop with each progress report the call makes.
            trace_headers: A trace context as propagation headers (``traceparent``...), made
                current in the child while the call runs.

        Returns:
            The function's return value (pickled back).

        Raises:
            ValueError: ``fn`` is not defined at module level.
            TimeoutError: The call ran longer than ``timeout``; the child was killed.
            Snooze: The function raised it (passed on as itself, not as a failure).
            ProcessTaskError: The function raised (any ``BaseException``), its result could
                not be pickled, or the child died (``type_name == "ChildProcessDied"``).
            RuntimeError: The pool is closed.
        """
        request = _request(fn, args, kwargs, ctx, dict(trace_headers or {}))
        async with self._slots:
            child = await self._checkout()
            try:
                reply = await self._exchange(child, request, timeout, _describe(fn), on_progress)
            except BaseException:
                await self._retire(child)
                raise
            self._checkin(child)
        return _outcome(reply)

    async def close(self) -> None:
        """Terminate every child, busy or idle, and refuse further calls. Idempotent."""
        self._closed = True
        self._idle.clear()
        await asyncio.gather(*(self._retire(child) for child in list(self._children)))

    async def _checkout(self) -> _Child:
        if self._closed:
            raise RuntimeError("the process pool is closed")
        return self._idle.pop() if self._idle else await self._spawn()

    def _checkin(self, child: _Child) -> None:
        if not self._closed:
            self._idle.append(child)

    async def _spawn(self) -> _Child:
        proc = _start_process()
        try:
            child = await _connect(proc)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self._children.add(child)
        if self._closed:  # close() ran while this child was starting
            await self._retire(child)
            raise RuntimeError("the process pool is closed")
        return child

    async def _exchange(
        self,
        child: _Child,
        request: bytes,
        timeout: float | None,
        name: str,
        on_progress: Callable[[float, str | None], None] | None,
    ) -> tuple[Any, ...]:
        child.send(request)
        try:
            reply = await child.receive()  # "started", or an error resolving the function
            if reply[0] != "started":
                return reply
            if timeout is None:
                return await _result(child, on_progress)
            return await asyncio.wait_for(_result(child, on_progress), timeout)
        except asyncio.IncompleteReadError:
            await self._retire(child)
            raise ProcessTaskError(_DIED, self._death(child.proc.returncode)) from None
        except asyncio.TimeoutError:
            await self._retire(child)
            raise TimeoutError(
                f"{name} exceeded its timeout of {timeout}s; its process was terminated"
            ) from None

    def _death(self, code: int | None) -> str:
        if self._closed:
            return "the process pool was closed while the call ran"
        if code is not None and code < 0:
            return f"the child process was killed by {_signal_name(-code)} during the call"
        return f"the child process exited with code {code} during the call"

    async def _retire(self, child: _Child) -> None:
        """Stop a child for good: close its pipes, SIGTERM, SIGKILL after the grace, reap."""
        self._children.discard(child)
        if not child.retired:
            child.retired = True
            child.close_pipes()  # the child's parent-watch thread sees EOF and exits too
        proc = child.proc
        try:
            if proc.poll() is None:
                proc.terminate()
                if not await _exited(proc, self._term_grace):
                    proc.kill()
                    await _exited(proc, None)
        except asyncio.CancelledError:
            # Cancelled again while stopping it: finish the job without yielding, because
            # callers rely on the child being gone. SIGKILL makes the wait short.
            proc.kill()
            proc.wait()
            raise


def _request(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ctx: JobContext,
    trace_headers: dict[str, str],
) -> bytes:
    target = fn.fn if isinstance(fn, Task) else fn
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        raise ValueError(
            f"{_describe(fn)} cannot run in a process: the function must be defined at module "
            "level (the child imports it by module and name), not nested in another function "
            "or made with lambda or functools.partial"
        )
    main_path = None
    if module == "__main__":
        main_path = getattr(sys.modules["__main__"], "__file__", None)
        if main_path is None:
            raise ValueError(
                f"{_describe(fn)} cannot run in a process: it is defined in an interactive "
                "__main__ that a child cannot import; move it to a module"
            )
    payload = (module, qualname, main_path, args, kwargs, ctx, trace_headers)
    return pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)


async def _result(
    child: _Child, on_progress: Callable[[float, str | None], None] | None
) -> tuple[Any, ...]:
    """The call's final reply; progress reports before it go to ``on_progress``."""
    while True:
        reply = await child.receive()
        if reply[0] != "progress":
            return reply
        if on_progress is not None:
            try:
                on_progress(reply[1], reply[2])
            except Exception:  # a report the sink refuses must not end the call
                log.warning("a progress report from %s was refused", child.proc.pid, exc_info=True)


def _outcome(reply: tuple[Any, ...]) -> Any:
    if reply[0] == "ok":
        return reply[1]
    if reply[0] == "snooze":
        raise (RateLimited if reply[2] else Snooze)(reply[1])
    _, type_name, message, remote_traceback = reply
    raise ProcessTaskError(type_name, message, remote_traceback)


def _describe(fn: Callable[..., Any]) -> str:
    target = fn.fn if isinstance(fn, Task) else fn
    module = getattr(target, "__module__", "?")
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _start_process() -> subprocess.Popen[bytes]:
    """Start a child; its stdin carries requests and its stdout replies."""
    # A plain fork+exec (no preexec_fn): safe with tokio threads, and it blocks the loop for
    # about a millisecond, once per child. Pipes on stdin and stdout (not descriptors passed
    # with pass_fds) work on every platform; the child moves them off 0 and 1 at once, so the
    # task's own prints go to stderr instead of into the protocol.
    proc: subprocess.Popen[bytes] = _Popen(
        [sys.executable, "-c", _BOOTSTRAP, json.dumps(sys.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    return proc


async def _connect(proc: subprocess.Popen[bytes]) -> _Child:
    assert proc.stdin is not None and proc.stdout is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), proc.stdout
    )
    write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, proc.stdin)
    return _Child(proc, reader, (read_transport, write_transport))


async def _exited(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Poll (never block the loop) until the process has been reaped; False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    while proc.poll() is None:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True
