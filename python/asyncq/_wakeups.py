"""Wake-ups for event loops that cannot watch a socket (see ``src/bridge.rs``).

The core wakes an event loop by writing a byte to a socket the loop watches with ``add_reader``.
asyncio's proactor loop (the default on Windows) has no ``add_reader``; for such a loop a daemon
thread waits for the socket to turn readable and hands the wake-up to the loop with
``call_soon_threadsafe``. The loop's own thread then settles every queued completion, as it does
with ``add_reader``, so the thread costs one hand-off per batch, not per completion.

The thread holds its loop and the core's callback weakly: it ends when either is gone, when the
loop is closed, or when the core closes its end of the socket.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import weakref
from collections.abc import Callable

# How often an idle thread checks that its loop still exists (its only cost when idle).
_IDLE_CHECK = 1.0


def watch(loop: asyncio.AbstractEventLoop, handle: int, reader: Callable[[], None]) -> None:
    """Watch the core's wake-up socket ``handle`` for ``loop``, calling ``reader`` on its thread.

    Args:
        loop: The event loop to wake.
        handle: The socket's file descriptor (a SOCKET handle on Windows); it stays the core's.
        reader: The core's callback that settles queued completions.
    """
    sock = socket.socket(fileno=socket.dup(handle))
    sock.setblocking(False)
    thread = threading.Thread(
        target=_pump,
        args=(sock, weakref.ref(loop), weakref.ref(reader)),
        name="asyncq-wakeups",
        daemon=True,
    )
    thread.start()


def _pump(
    sock: socket.socket,
    loop_ref: weakref.ref[asyncio.AbstractEventLoop],
    reader_ref: weakref.ref[Callable[[], None]],
) -> None:
    settled = threading.Event()

    def gone() -> bool:
        loop = loop_ref()
        return loop is None or loop.is_closed() or reader_ref() is None

    def settle() -> None:
        try:
            reader = reader_ref()
            if reader is not None:
                reader()  # drains the socket, then settles what is queued
        finally:
            settled.set()

    with sock:
        while True:
            readable, _, _ = select.select([sock], [], [], _IDLE_CHECK)
            if gone():
                return
            if not readable:
                continue
            try:
                if not sock.recv(1, socket.MSG_PEEK):
                    return  # end of file: the core dropped its inbox
            except BlockingIOError:
                continue  # drained meanwhile by a settle already under way
            loop = loop_ref()
            if loop is None:
                return
            settled.clear()
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:
                return  # closed between the check and the call
            del loop  # held weakly, as above
            # Wait for the loop to drain the socket before looking at it again (else select
            # would report the same byte until then). A loop that stopped without closing
            # leaves the callback pending: re-check now and then instead of waiting forever.
            while not settled.wait(_IDLE_CHECK):
                if gone():
                    return
