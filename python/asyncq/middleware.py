"""Middleware: hooks around enqueueing and executing jobs.

Subclass :class:`Middleware` and override the hooks you need; every hook is a no-op by default.
Pass instances to ``App(middleware=[...])``. Hooks run in list order and may be sync or async
(override with ``async def`` to await inside).

Enqueue hooks run the same way for ``enqueue``, ``enqueue_sync`` and ``enqueue_many``: after the
arguments are checked, ``before_enqueue`` of every middleware for each call, then the write, then
``after_enqueue`` of every middleware for each handle. Their exceptions reach the caller (so
``before_enqueue`` can refuse an enqueue). ``enqueue_sync`` runs them on a helper event loop of
the app, with the caller's context variables. An exception in an execution hook is logged, never
allowed to lose the job. See docs/tasks.md.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import JobContext
    from .job import JobHandle
    from .task import EnqueueOptions, Task

__all__ = ["Middleware", "call_hook", "run_hooks"]

log = logging.getLogger("asyncq.middleware")


class Middleware:
    """Base class with documented no-op hooks."""

    async def before_enqueue(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions,
    ) -> None:
        """Called before a job is written. Raise to refuse the enqueue."""

    async def after_enqueue(self, task: Task[Any, Any], handle: JobHandle[Any]) -> None:
        """Called after a job was written (or matched an idempotency key)."""

    async def before_execute(self, ctx: JobContext) -> None:
        """Called in the worker before the task function runs."""

    async def after_execute(self, ctx: JobContext) -> None:
        """Called after the task function returned or raised, before the outcome is recorded."""

    async def on_success(self, ctx: JobContext, result: Any) -> None:
        """Called when the task returned ``result``."""

    async def on_failure(self, ctx: JobContext, exc: BaseException) -> None:
        """Called when the task failed for good (the job is dead-lettered)."""

    async def on_retry(self, ctx: JobContext, exc: BaseException) -> None:
        """Called when the task failed and will be retried."""


async def call_hook(hook: Callable[..., Any], *args: Any) -> None:
    """Call a middleware hook that may be sync or async; its exceptions propagate."""
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


async def run_hooks(middleware: list[Middleware], name: str, *args: Any) -> None:
    """Call hook ``name`` of every middleware in order; an exception is logged, never raised,
    so a faulty hook cannot keep a job from being acknowledged or failed."""
    for m in middleware:
        try:
            await call_hook(getattr(m, name), *args)
        except Exception:
            log.exception("middleware %s.%s failed", type(m).__name__, name)
