"""Tasks: registered functions that can be enqueued, typed with ParamSpec."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .backoff import Exponential
from .job import JobHandle

if TYPE_CHECKING:
    from .app import App

__all__ = ["EnqueueOptions", "Task", "TaskConfig"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskConfig:
    """A task's settings, fixed at decoration time.

    Attributes:
        name: Registered name (default ``module:qualname``).
        queue: Queue its jobs go to.
        retries: Retries after the first failure (attempts = retries + 1).
        backoff: Delay policy between retries.
        timeout: Seconds a run may take; None for no limit.
        priority: Default priority, 0 (lowest) to 9 (highest).
        result_ttl: Seconds results are kept; None uses the app's default.
    """

    name: str
    queue: str
    retries: int
    backoff: Exponential
    timeout: float | None
    priority: int
    result_ttl: float | None


@dataclass(frozen=True)
class EnqueueOptions:
    """Per-enqueue options set with :meth:`Task.options`.

    Attributes:
        delay: Seconds from now (broker clock) before the job may run.
        eta: Absolute time (aware datetime or unix seconds) before which it may not run.
        priority: 0 (lowest) to 9 (highest); None uses the task's default.
        key: Idempotency key; while it lives, enqueueing again returns the first job.
        queue: Override the task's queue.
    """

    delay: float | None = None
    eta: float | None = None
    priority: int | None = None
    key: str | None = None
    queue: str | None = None


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds]


def _eta_seconds(eta: dt.datetime | float | None) -> float | None:
    if eta is None or isinstance(eta, (int, float)):
        return eta
    if eta.tzinfo is None:
        raise ValueError("eta must be a timezone-aware datetime (naive times are ambiguous)")
    return eta.timestamp()


class Task(Generic[P, R]):
    """A registered task. Call :meth:`enqueue` to run it on a worker; call the task itself
    to run the function directly in the current process.

    Attributes:
        fn: The decorated function.
        config: The task's settings.
        is_async: Whether ``fn`` is a coroutine function (else it runs in a thread).
    """

    def __init__(
        self, app: App, fn: Callable[P, Awaitable[R]] | Callable[P, R], config: TaskConfig
    ) -> None:
        self.app = app
        self.fn = fn
        self.config = config
        self.is_async = inspect.iscoroutinefunction(fn)
        self._arg_names = _positional_names(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", config.name)

    @property
    def name(self) -> str:
        """The registered name."""
        return self.config.name

    def __repr__(self) -> str:
        return f"Task({self.config.name!r}, queue={self.config.queue!r})"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function directly, here and now (no queue involved)."""
        return self.fn(*args, **kwargs)

    def options(
        self,
        *,
        delay: float | dt.timedelta | None = None,
        eta: dt.datetime | float | None = None,
        priority: int | None = None,
        key: str | None = None,
        queue: str | None = None,
    ) -> BoundTask[P, R]:
        """Return this task with per-enqueue options.

        Args:
            delay: Seconds (or a timedelta) to wait before the job may run.
            eta: Aware datetime or unix seconds before which the job may not run.
            priority: 0 (lowest) to 9 (highest).
            key: Idempotency key.
            queue: Send to this queue instead of the task's.

        Returns:
            An object with the same ``enqueue`` methods.

        Raises:
            ValueError: On a negative delay, a naive eta or a priority outside 0..9.
        """
        if isinstance(delay, dt.timedelta):
            delay = delay.total_seconds()
        if delay is not None and delay < 0:
            raise ValueError("delay must be >= 0")
        if priority is not None and not 0 <= priority <= 9:
            raise ValueError(f"priority must be between 0 and 9, got {priority}")
        opts = EnqueueOptions(delay, _eta_seconds(eta), priority, key, queue)
        return BoundTask(self, opts)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job.

        Returns:
            A handle to the job.

        Raises:
            TypeError: An argument cannot be serialized (the message names it).
        """
        return await BoundTask(self, _NO_OPTIONS).enqueue(*args, **kwargs)

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job from synchronous code (blocks until Redis confirms).

        Returns:
            A handle to the job.

        Raises:
            TypeError: An argument cannot be serialized.
        """
        return BoundTask(self, _NO_OPTIONS).enqueue_sync(*args, **kwargs)

    async def enqueue_many(
        self, calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[JobHandle[R]]:
        """Enqueue many jobs in one round trip.

        Args:
            calls: ``(args, kwargs)`` pairs, one per job.

        Returns:
            Handles in the same order.
        """
        return await BoundTask(self, _NO_OPTIONS).enqueue_many(calls)


_NO_OPTIONS = EnqueueOptions()


class BoundTask(Generic[P, R]):
    """A task together with per-enqueue options (see :meth:`Task.options`)."""

    __slots__ = ("opts", "task")

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self.task = task
        self.opts = opts

    def _queue(self) -> str:
        return self.opts.queue or self.task.config.queue

    def _core_options(
        self,
    ) -> tuple[int, float | None, int, float | None, float | None, str | None, float, int]:
        cfg, app, o = self.task.config, self.task.app, self.opts
        priority = cfg.priority if o.priority is None else o.priority
        return (
            cfg.retries + 1,
            cfg.timeout,
            priority,
            o.delay,
            o.eta,
            o.key,
            app.key_ttl,
            app.max_payload,
        )

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job with these options (see :meth:`Task.enqueue`)."""
        handles = await self.enqueue_many([(args, kwargs)])
        return handles[0]

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Blocking enqueue with these options (see :meth:`Task.enqueue_sync`)."""
        task, app = self.task, self.task.app
        if app.middleware:
            asyncio.run(app.run_before_enqueue(task, [(args, kwargs)], self.opts))
        queue = self._queue()
        ids = app.broker.enqueue_blocking(
            queue, task.name, task._arg_names, [(args, kwargs)], self._core_options()
        )
        return JobHandle(app.broker, queue, ids[0][0], ids[0][1])

    async def enqueue_many(
        self, calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[JobHandle[R]]:
        """Enqueue many jobs with these options in one round trip."""
        task, app = self.task, self.task.app
        items = [(tuple(a), k or None) for a, k in calls]
        if app.middleware:
            await app.run_before_enqueue(task, items, self.opts)
        queue = self._queue()
        ids = await app.broker.enqueue(
            queue, task.name, task._arg_names, items, self._core_options()
        )
        broker = app.broker
        handles: list[JobHandle[R]] = [JobHandle(broker, queue, i, c) for i, c in ids]
        if app.middleware:
            await app.run_after_enqueue(task, handles)
        return handles
