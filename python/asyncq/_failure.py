"""Describing a task's failure in words, without ever raising.

The worker's error path must not be able to fail: an exception whose ``__str__``, ``__repr__``
or ``__qualname__`` raises, or whose traceback cannot be formatted, still ends its job with a
record. Every step here falls back to a plainer description.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

__all__ = ["Failure", "describe"]


@dataclass(frozen=True)
class Failure:
    """What is written to a failed job's error record.

    Attributes:
        type: The exception type's qualified name (``SystemExit``, ``ValueError``).
        message: The exception's message, or a stand-in when it cannot be had.
        traceback: The formatted traceback (may be empty).
    """

    type: str
    message: str
    traceback: str


def describe(exc: BaseException) -> Failure:
    """Describe ``exc`` for a job's error record; never raises."""
    remote = _remote(exc)
    if remote is not None:
        return remote
    kind = _type_name(exc)
    return Failure(kind, _message(exc, kind), _traceback(exc, kind))


def _type_name(exc: BaseException) -> str:
    try:
        name = type(exc).__qualname__
        return name if isinstance(name, str) else "BaseException"
    except BaseException:
        return "BaseException"


def _message(exc: BaseException, kind: str) -> str:
    try:
        text = str(exc)
        if isinstance(text, str):
            return _hint(exc, text)
    except BaseException:
        pass
    try:
        return f"<unprintable {kind}: str() failed; args={exc.args!r}>"
    except BaseException:
        return f"<unprintable {kind}>"


def _hint(exc: BaseException, text: str) -> str:
    # The interpreter-exit family reads badly on its own ("3", ""): say what happened.
    if isinstance(exc, SystemExit):
        return f"the task called sys.exit({text}); the worker kept running"
    if isinstance(exc, KeyboardInterrupt):
        return f"the task raised KeyboardInterrupt{': ' + text if text else ''}"
    return text


def _traceback(exc: BaseException, kind: str) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:
        pass
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__))
        return f"Traceback (most recent call last):\n{frames}{kind}: <unprintable>\n"
    except BaseException:
        return ""


def _remote(exc: BaseException) -> Failure | None:
    """An error raised in a child process already carries its description."""
    try:
        kind = getattr(exc, "type_name", None)
        message = getattr(exc, "message", None)
        tb = getattr(exc, "remote_traceback", None)
    except BaseException:
        return None
    if isinstance(kind, str) and isinstance(message, str) and isinstance(tb, str):
        return Failure(kind, message, tb)
    return None
