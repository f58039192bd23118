"""Old ``async_q`` call sites, kept working while they move to asyncq (docs/migration.md).

``async_q`` enqueued a function by the file path it lived in (``submit_task(func, args,
kwargs, queue_name)``), and a worker imported that file. asyncq runs only registered tasks:
decorate the function with ``@app.task`` and the old call keeps working through
:func:`submit_task`, with a :class:`DeprecationWarning` pointing at the new call.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from .task import Task

__all__ = ["STATUS", "submit_task"]

#: async_q's status names and the asyncq job state each corresponds to.
STATUS: Mapping[str, tuple[str, ...]] = {
    "submitted": ("queued", "scheduled"),
    "pending": ("queued", "scheduled"),
    "running": ("running",),
    "finished": ("succeeded",),
    "failed": ("failed", "dead", "cancelled"),
}


def submit_task(
    func: Task[..., Any],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    queue_name: str | None = None,
) -> str:
    """Enqueue ``func(*args, **kwargs)`` the way ``async_q.submit_task`` did; returns the job id.

    Deprecated: call ``func.enqueue_sync(*args, **kwargs)`` (or ``await func.enqueue(...)``,
    with ``func.options(queue=...)`` for another queue) instead.

    Args:
        func: A task registered with ``@app.task`` (a plain function has no registered name
            for a worker to find: decorate it first).
        args: Positional arguments (default none).
        kwargs: Keyword arguments (default none).
        queue_name: The queue; default the task's own.

    Raises:
        TypeError: ``func`` is not a registered task, or the arguments do not fit it.
    """
    if not isinstance(func, Task):
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"submit_task({name}): asyncq runs registered tasks only; decorate the function "
            "with @app.task (its worker then finds it by name, not by file path)"
        )
    call = f"{func.name}.enqueue_sync(*args, **kwargs)"
    if queue_name is not None:
        call = f"{func.name}.options(queue={queue_name!r}).enqueue_sync(*args, **kwargs)"
    warnings.warn(
        f"asyncq.compat.submit_task is deprecated; call {call}", DeprecationWarning, stacklevel=2
    )
    bound = func.options(queue=queue_name) if queue_name is not None else func
    return bound.enqueue_sync(*(args or ()), **dict(kwargs or {})).id
