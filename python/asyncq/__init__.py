"""asyncq: a fast, reliable task queue for Python services, with a Rust core on Redis.

Example:
    >>> app = asyncq.App("redis://localhost:6379/0")
    >>> @app.task(retries=3)
    ... async def add(x: int, y: int) -> int:
    ...     return x + y
    >>> job = await add.enqueue(1, 2)
    >>> await job.result(timeout=10)
    3
"""

from __future__ import annotations

from ._core import __version__
from .app import App
from .backoff import Exponential
from .context import JobContext, current_job
from .control import Unique
from .errors import (
    AsyncqError,
    BatchFinished,
    BrokerError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    PayloadError,
    RateLimited,
    ResultTimeout,
    Snooze,
)
from .events import Event, JobProgress
from .flows import (
    Batch,
    BatchHandle,
    Chain,
    Chord,
    Failed,
    FlowJobHandle,
    Group,
    GroupHandle,
    Progress,
    Signature,
    batch,
    chain,
    chord,
    group,
)
from .job import JobHandle, JobInfo
from .limits import ConcurrencyLimit, RateLimit
from .log import configure_logging
from .middleware import Middleware
from .schedule import Schedule, ScheduleInfo, Scheduler
from .task import Call, Task
from .worker import Worker, WorkerStats

__all__ = [
    "App",
    "AsyncqError",
    "Batch",
    "BatchFinished",
    "BatchHandle",
    "BrokerError",
    "Call",
    "Chain",
    "Chord",
    "ConcurrencyLimit",
    "Event",
    "Exponential",
    "Failed",
    "FlowJobHandle",
    "Group",
    "GroupHandle",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobProgress",
    "Middleware",
    "PayloadError",
    "Progress",
    "RateLimit",
    "RateLimited",
    "ResultTimeout",
    "Schedule",
    "ScheduleInfo",
    "Scheduler",
    "Signature",
    "Snooze",
    "Task",
    "Unique",
    "Worker",
    "WorkerStats",
    "__version__",
    "batch",
    "chain",
    "chord",
    "configure_logging",
    "current_job",
    "group",
]
