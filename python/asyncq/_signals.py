"""Stop signals for the worker and the scheduler, on any event loop.

``loop.add_signal_handler`` exists only on Unix selector loops (and uvloop). On a loop without it
(asyncio's proactor loop, Windows' default) the handler is installed with :func:`signal.signal`
and hops to the loop with ``call_soon_threadsafe``; either way ``callback`` runs on the loop's
thread, and the returned function puts the previous handling back.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

# Ctrl-Break reaches a Windows console process as SIGBREAK: a stop request there too.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM) + (
    (signal.Signals(signal.SIGBREAK),) if hasattr(signal, "SIGBREAK") else ()
)


def on_stop_signals(
    loop: asyncio.AbstractEventLoop, callback: Callable[[signal.Signals], None]
) -> Callable[[], None]:
    """Call ``callback(sig)`` on ``loop``'s thread for each stop signal; returns the undo.

    Args:
        loop: The running loop (this must be the main thread, as for any signal handler).
        callback: Called with the signal received.
    """
    installed: list[signal.Signals] = []
    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, callback, sig)
            installed.append(sig)
    except NotImplementedError:
        for sig in installed:
            loop.remove_signal_handler(sig)
    else:

        def undo_loop() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return undo_loop

    def handler(number: int, _frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback, signal.Signals(number))

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def undo_signal() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return undo_signal
