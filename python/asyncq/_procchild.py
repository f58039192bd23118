"""The child side of the process pool (see :mod:`asyncq._procpool`).

A child serves one call at a time. Requests arrive on its stdin and replies leave on its stdout
(both moved off descriptors 0 and 1 first, so that what the task prints goes to stderr), each
a 4-byte big-endian length followed by a pickle. A request is ``(module, qualname, main_path,
args, kwargs, ctx, trace_headers)``, the last being the parent's trace context, made current
while the call runs so that its spans join the job's trace (empty when untraced). The replies
to it are ``("started",)`` once the function is resolved and about to run, any number of
``("progress", fraction, message)`` while it runs (the job's ``current_job().progress()``,
passed on by the parent), then ``("ok", result)``, ``("snooze", seconds)`` (the function
raised :class:`asyncq.Snooze`) or ``("error", type_name, message, traceback)``.

A daemon thread owns the request pipe. When it reads end-of-file, the parent has gone (closed
the pool, or died: the kernel closes a killed process's pipes) and the child exits at once, even
in the middle of user code, so a child never outlives its worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

from .context import _current
from .errors import RateLimited, Snooze
from .task import Task

_HEADER = struct.Struct("!I")
_MAIN_ALIAS = "__mp_main__"  # the name multiprocessing uses too: not "__main__", so guards stay off


def main() -> None:
    """Serve calls from stdin until the parent closes it."""
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what stops a job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    request_fd, reply_fd = _take_stdio()
    requests: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_requests, args=(request_fd, requests), name="asyncq-parent", daemon=True
    )
    reader.start()
    while True:
        try:
            _serve(requests.get(), reply_fd)
        except OSError:
            os._exit(0)  # the reply pipe is closed: the parent stopped listening


def _take_stdio() -> tuple[int, int]:
    """The protocol's descriptors, moved off 0 and 1: stdin then reads nothing and stdout
    writes to stderr, so user code can neither steal a request nor corrupt a reply."""
    request_fd, reply_fd = os.dup(0), os.dup(1)
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return request_fd, reply_fd


def _read_requests(fd: int, requests: queue.SimpleQueue[bytes]) -> None:
    while True:
        header = _read_exactly(fd, _HEADER.size)
        body = _read_exactly(fd, _HEADER.unpack(header)[0])
        requests.put(body)


def _read_exactly(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            os._exit(0)  # the parent is gone: stop now, whatever the main thread is doing
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# Replies may be sent from any thread of the call (progress reports): one at a time.
_send_lock = threading.Lock()


def _send(fd: int, reply: tuple[Any, ...]) -> None:
    with _send_lock:
        _send_unlocked(fd, reply)


def _send_unlocked(fd: int, reply: tuple[Any, ...]) -> None:
    try:
        data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # whatever pickling raises, the parent must get a reply
        data = pickle.dumps(_error(exc, "the result could not be pickled: "))
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _serve(request: bytes, reply_fd: int) -> None:
    try:
        module, qualname, main_path, args, kwargs, ctx, trace_headers = pickle.loads(request)
        fn = _resolve(module, qualname, main_path)
    except BaseException as exc:  # an import error in the user's module is the call's error
        _send(reply_fd, _error(exc))
        return

    # Reports count only while this call runs: one from a thread the call left behind would
    # reach the parent among the next call's replies.
    running = [True]

    def report(fraction: float, message: str | None) -> None:
        with _send_lock:
            if running[0]:
                _send_unlocked(reply_fd, ("progress", fraction, message))

    def finish(reply: tuple[Any, ...]) -> None:
        with _send_lock:
            running[0] = False
            _send_unlocked(reply_fd, reply)

    token = _current.set(ctx.with_report(report))
    detach = _attach_trace(trace_headers)
    _send(reply_fd, ("started",))
    try:
        result = fn(*args, **kwargs)
    except Snooze as snooze:  # a request to the worker, not a failure
        finish(("snooze", snooze.seconds, isinstance(snooze, RateLimited)))
        return
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the child lives on
        finish(_error(exc))
        return
    finally:
        detach()
        _current.reset(token)
    finish(("ok", result))


def _attach_trace(headers: dict[str, str]) -> Callable[[], None]:
    """Make the parent's trace context current for the call; returns its undo. OpenTelemetry
    is imported only for a traced call (the parent had it, so this interpreter has it)."""
    if not headers:
        return lambda: None
    from opentelemetry import context, propagate  # noqa: PLC0415 (only traced calls)

    token = context.attach(propagate.extract(headers))
    return lambda: context.detach(token)


def _resolve(module: str, qualname: str, main_path: str | None) -> Callable[..., Any]:
    obj: Any = _main_module(main_path) if module == "__main__" else importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    # @app.task replaced the module attribute with a Task; the function is its .fn.
    if isinstance(obj, Task) and callable(obj.fn):
        obj = obj.fn
    if not callable(obj):
        raise TypeError(f"{module}.{qualname} is not callable")
    return obj  # type: ignore[no-any-return]


def _main_module(path: str | None) -> ModuleType:
    loaded = sys.modules.get(_MAIN_ALIAS)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(_MAIN_ALIAS, path) if path else None
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the parent's main script {path!r}")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[_MAIN_ALIAS] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def _error(exc: BaseException, prefix: str = "") -> tuple[str, str, str, str]:
    return ("error", type(exc).__qualname__, prefix + _safe_str(exc), _format(exc))


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:  # a broken __str__ must not lose the error itself
        return f"<unprintable {type(exc).__qualname__}>"


def _format(exc: BaseException) -> str:
    try:
        # Drop the frame of _serve itself: the traceback starts in the user's code.
        tb: TracebackType | None = exc.__traceback__
        tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # same: report the type at least
        return f"{type(exc).__qualname__}: (traceback unavailable)\n"
