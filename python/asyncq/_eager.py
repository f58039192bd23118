"""Eager mode (``App(eager=True)``): ``enqueue`` runs the task inline and returns a handle to
its outcome, for unit tests that want a task's effect without a worker (docs/testing.md).

What stays real: the arguments go through the same encoding as an enqueue (an argument that
cannot be serialized, or a call over ``max_payload``, fails the same way, naming it) and come
back decoded, as a worker would receive them (typed values validated, a serializer's values
decoded); the result is stored and read back the same way. What does not: no broker is
written, so no retries, delays, limits, schedules or flows; an exception from the task is
raised by ``enqueue`` itself (the test sees its traceback); ``current_job()`` is not set.
For all of that, ``await app.drain()`` runs a real worker on a virtual clock.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._core import JobInfo, eager_result, eager_roundtrip, new_job_ids
from .events import Event, JobProgress
from .job import JobHandle
from .serialization import decode_arguments

if TYPE_CHECKING:
    from .task import Task

R = TypeVar("R")


class EagerHandle(JobHandle[R], Generic[R]):
    """The handle of a job eager mode ran inline: it has succeeded, with ``value``."""

    __slots__ = ("_value",)

    def __init__(self, task: Task[Any, R], queue: str, value: R) -> None:
        ids = new_job_ids(1, task.config.id_prefix)
        super().__init__(task.app.broker, queue, ids[0], True, task._codec)
        self._value = value

    def __repr__(self) -> str:
        return f"EagerHandle(id={self.id!r}, queue={self.queue!r})"

    async def info(self) -> JobInfo | None:
        return None  # no record was written

    async def status(self) -> str:
        return "succeeded"

    async def result(self, timeout: float | None = None) -> R:
        return self._value

    def result_sync(self, timeout: float | None = None) -> R:
        return self._value

    async def progress(self) -> JobProgress | None:
        return None

    def events(self, *, history: bool = True) -> AsyncIterator[Event]:
        raise NotImplementedError("an eagerly run job has no events: it ended before enqueue")

    async def cancel(self) -> bool:
        return False


def _arguments(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments as a worker would receive them."""
    app, codec = task.app, task._codec
    if codec is not None:
        args, kwargs = codec.encode_call(args, kwargs)
    wire_args, wire_kwargs = eager_roundtrip(
        task.name, task._arg_names, tuple(args), kwargs, app.max_payload
    )
    return decode_arguments(codec, wire_args, wire_kwargs, app.serializer_for)


def _stored(task: Task[Any, Any], value: Any) -> Any:
    """``value`` as a reader of the job's result would get it back."""
    codec = task._codec
    if codec is not None:
        return codec.decode_result(eager_result(codec.encode_result(value)))
    return eager_result(value)


async def run(
    task: Task[Any, R], queue: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> EagerHandle[R]:
    """Run one call of ``task`` now, on this event loop (a sync task in a thread)."""
    call_args, call_kwargs = _arguments(task, args, kwargs)
    if task.is_async:
        value = await task.fn(*call_args, **call_kwargs)  # type: ignore[misc]
    else:
        value = await asyncio.to_thread(task.fn, *call_args, **call_kwargs)
        if inspect.isawaitable(value):
            value = await value
    return EagerHandle(task, queue, _stored(task, value))


def run_sync(
    task: Task[Any, R], queue: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> EagerHandle[R]:
    """Run one call of ``task`` now, from sync code (a coroutine function on a fresh loop)."""
    call_args, call_kwargs = _arguments(task, args, kwargs)
    value: Any
    if task.is_async:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            value = asyncio.run(task.fn(*call_args, **call_kwargs))  # type: ignore[arg-type]
        else:
            raise RuntimeError(
                f"eager mode cannot run async task {task.name!r} from enqueue_sync inside a"
                " running event loop: await task.enqueue(...) there"
            )
    else:
        value = task.fn(*call_args, **call_kwargs)
    return EagerHandle(task, queue, _stored(task, value))
