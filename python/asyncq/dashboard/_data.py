"""What the dashboard reads from the broker: queues, jobs, workers, schedules, and why a job
waits. Every read is bounded (ranges of a state's set, batch reads of records; never KEYS)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .._core import Broker, BrokerError, JobInfo
from ..app import App
from ..cli import (
    LISTABLE,
    LimitRow,
    _worker_queues,
    by_logical,
    effective_limits,
    job_record,
    limit_rows,
)
from ..schedule import schedule_infos
from ..serialization import describe
from ..task import Task

__all__ = ["LISTABLE", "Source", "Unreachable"]

T = TypeVar("T")

#: Seconds one broker call may take before the dashboard calls the broker unreachable.
CALL_TIMEOUT = 5.0
#: Ids read per range read when listing jobs, and at most this many scanned per page request.
SCAN_STEP = 200
SCAN_MAX = 2000
#: Running jobs read per queue partition to show what each worker runs.
RUNNING_SHOWN = 100
#: What a job's arguments show when they cannot be shown.
HIDDEN_SENSITIVE = "hidden: the task is marked sensitive"
HIDDEN_UNKNOWN = "hidden: the dashboard was not given the app that defines this task (--app)"
UNAVAILABLE = "not available: this asyncq core does not return job arguments"
HIDDEN_REDACT_TEXT = (
    "hidden: the task has a redact hook, and a schedule keeps its arguments as text"
)


class Unreachable(Exception):
    """The broker did not answer (down, wrong address, refused us) or answered with an error."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a job listing, and the cursor of the next (None at the end)."""

    jobs: list[dict[str, Any]]
    cursor: str | None


def _age(t: float | None, now: float) -> str:
    if t is None:
        return ""
    d = t - now
    span = abs(d)
    text = (
        f"{span:.0f}s"
        if span < 120
        else f"{span / 60:.0f}m"
        if span < 7200
        else f"{span / 3600:.1f}h"
    )
    return f"in {text}" if d > 0 else f"{text} ago"


class Source:
    """The broker the dashboard reads, and the App when it was given one (task options,
    partitions, queues its tasks use).

    Args:
        target: A broker URL or the user's App.
        show_args: With a bare URL, show arguments of every job (the dashboard cannot know
            which tasks are sensitive). Ignored when an App is given: its tasks decide.

    Raises:
        ValueError: A malformed broker URL.
    """

    def __init__(self, target: str | App, *, show_args: bool = False) -> None:
        self.app = target if isinstance(target, App) else None
        self.broker: Broker = target.broker if isinstance(target, App) else Broker(target)
        self.show_args = show_args

    async def call(self, aw: Awaitable[T]) -> T:
        """Await one broker call, bounded by ``CALL_TIMEOUT``.

        Raises:
            Unreachable: It failed or took too long.
        """
        # Not asyncio.wait_for: before Python 3.12 it swallows a cancellation that arrives as
        # the call completes, and the sampler would then outlive its loop's shutdown.
        fut = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({fut}, timeout=CALL_TIMEOUT)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        if not done:
            fut.cancel()
            raise Unreachable(f"no answer within {CALL_TIMEOUT:g}s")
        try:
            return fut.result()
        except BrokerError as exc:
            raise Unreachable(" ".join(str(exc).split()) or type(exc).__name__) from exc

    # ---- queues ------------------------------------------------------------------------------

    async def grouped(self) -> dict[str, list[str]]:
        """Every known queue (logical name -> its partitions): enqueued to, served by a live
        worker (which names every partition it serves), or used by the App; as ``asyncq
        pause`` finds them."""
        names = set(await self.call(self.broker.queues()))
        for _, info, _ in await self.call(self.broker.workers()):
            names.update(_worker_queues(info))
        if self.app is not None:
            for q in [*self.app.queues(), *self.app.partitions.counts]:
                names.update(self.app.partitions.names(q))
        return by_logical(names)

    async def parts(self, queue: str) -> list[str]:
        """The partitions of logical ``queue`` (itself for a plain one or a partition name)."""
        if "#" in queue:
            return [queue]
        return (await self.grouped()).get(queue, [queue])

    async def overview(self) -> dict[str, Any]:
        """Queues with counts (per partition too), workers and what they run, schedules."""
        grouped = await self.grouped()
        all_parts = [p for parts in grouped.values() for p in parts]
        # One round trip's wait for all of them, not one per partition.
        counted = await asyncio.gather(*(self.call(self.broker.counts(p)) for p in all_parts))
        by_part = dict(zip(all_parts, counted, strict=True))
        queues, running = [], []
        for name, parts in grouped.items():
            each = [by_part[p] for p in parts]
            total: dict[str, int] = {}
            for counts in each:
                for k, v in counts.items():
                    total[k] = total.get(k, 0) + v
            queues.append(
                {
                    "name": name,
                    "counts": total,
                    "paused": any(c.get("paused") for c in each),
                    "partitions": [
                        {"name": p, "counts": c, "paused": bool(c.get("paused"))}
                        for p, c in zip(parts, each, strict=True)
                    ]
                    if len(parts) > 1
                    else [],
                }
            )
            for p, c in zip(parts, each, strict=True):
                if c.get("running"):
                    running += await self._running(p)
        return {
            "queues": queues,
            "workers": await self._workers(running),
            "schedules": await self.schedules(all_parts),
            "now": await self.call(self.broker.now()),
        }

    async def _running(self, part: str) -> list[dict[str, Any]]:
        ids = await self.call(self.broker.job_ids(part, "running", 0, RUNNING_SHOWN))
        infos = await self.call(self.broker.jobs(part, ids)) if ids else []
        return [
            {
                "queue": i.queue,
                "id": i.id,
                "task": i.task,
                "worker": i.worker,
                "started_at": i.started_at,
            }
            for i in infos
            if i is not None
        ]

    async def _workers(self, running: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for wid, raw, seen in await self.call(self.broker.workers()):
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
            if not isinstance(info, dict):
                info = {}
            out.append(
                {
                    "id": wid,
                    "host": info.get("host"),
                    "pid": info.get("pid"),
                    "queues": info.get("queues"),
                    "started_at": info.get("started_at"),
                    "last_seen": seen,
                    "running": [r for r in running if r["worker"] == wid],
                }
            )
        return out

    async def schedules(self, parts: list[str]) -> list[dict[str, Any]]:
        """The periodic schedules stored for ``parts``; args hidden as a job's would be."""
        out = []
        for s in await self.call(schedule_infos(self.broker, parts)):
            d = dict(s.definition)
            task = d.get("task")
            hidden = self._hidden(task if isinstance(task, str) else None, text=True)
            if hidden and ("args" in d or "kwargs" in d):
                d.pop("args", None)
                d.pop("kwargs", None)
                d["args_hidden"] = hidden
            out.append(
                {
                    "name": s.name,
                    "queue": s.queue,
                    "definition": d,
                    "next_fire": s.next_fire,
                    "last_job": s.last_job,
                    "paused": s.paused,
                    "fired": s.fired,
                    "skipped": s.skipped,
                }
            )
        return out

    # ---- jobs --------------------------------------------------------------------------------

    async def page(
        self, queue: str, state: str, *, task: str = "", cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Up to ``limit`` jobs of ``queue`` (every partition, in turn) in ``state``, whose task
        contains ``task``, from ``cursor`` (``<partition>.<offset>``, as the last page gave).

        Raises:
            ValueError: A state that cannot be listed, or a malformed cursor.
        """
        if state not in LISTABLE:
            raise ValueError(f"cannot list state {state!r}: one of {', '.join(LISTABLE)}")
        parts = await self.parts(queue)
        p, offset = _cursor(cursor)
        found: list[dict[str, Any]] = []
        scanned = 0
        while p < len(parts) and len(found) < limit and scanned < SCAN_MAX:
            step = SCAN_STEP if task else limit - len(found)
            ids = await self.call(self.broker.job_ids(parts[p], state, offset, step))
            if not ids:
                p, offset = p + 1, 0
                continue
            scanned += len(ids)
            infos = await self.call(self.broker.jobs(parts[p], ids))
            for n, info in enumerate(infos):
                if info is not None and (not task or task in (info.task or "")):
                    found.append(_row(info))
                    if len(found) == limit:
                        offset += n + 1
                        break
            else:
                offset += len(ids)
        more = p < len(parts)
        return Page(found, f"{p}.{offset}" if more else None)

    async def find(self, job_id: str, queue: str | None = None) -> list[dict[str, Any]]:
        """Jobs with id ``job_id`` in ``queue`` (default: every queue)."""
        if queue:
            parts = await self.parts(queue)
        else:
            parts = [p for ps in (await self.grouped()).values() for p in ps]
        if self.app is not None and queue and "#" not in queue:
            parts = [self.app.partitions.of_id(queue, job_id)] if len(parts) > 1 else parts
        out = []
        for part in parts:
            info = await self.call(self.broker.job(part, job_id))
            if info is not None:
                out.append(_row(info))
        return out

    async def detail(self, queue: str, job_id: str) -> dict[str, Any] | None:
        """Everything shown on a job's page, or None when there is no such job."""
        info = await self.call(self.broker.job(queue, job_id))
        if info is None:
            return None
        counts = await self.call(self.broker.counts(queue))
        rows = await self.call(limit_rows(self.broker, [queue]))
        now = await self.call(self.broker.now())
        record = job_record(info)
        record["result"] = _jsonable(info.result)
        record["progress"] = [{"at": at, "fraction": f, "message": m} for at, f, m in info.progress]
        raw = (getattr(info, "args", None), getattr(info, "kwargs", None))
        return {
            "job": record,
            "args": self.shown_args(info.task, raw if raw != (None, None) else None),
            "timeline": _timeline(info),
            "flow": _flow(info),
            "why": why_waiting(info, counts, rows, now, await self._served(queue)),
        }

    async def _served(self, queue: str) -> bool:
        """Whether a live worker serves ``queue`` (or the logical queue it is a partition of)."""
        base = queue.partition("#")[0]
        for _, raw, _ in await self.call(self.broker.workers()):
            try:
                names = json.loads(raw).get("queues") or {}
            except (ValueError, AttributeError):
                continue
            if queue in names or base in names:
                return True
        return False

    def task_of(self, name: str | None) -> Task[Any, Any] | None:
        """The App's task registered as ``name`` (None without an App or such a task)."""
        return self.app.tasks.get(name) if self.app is not None and name else None

    def _hidden(self, task_name: str | None, text: bool = False) -> str | None:
        """Why a job of ``task_name`` has its arguments hidden (None: they may be shown).
        ``text``: they are only known as text (a schedule's), so no redact hook can apply."""
        task = self.task_of(task_name)
        if task is not None and task.config.sensitive:
            return HIDDEN_SENSITIVE
        if task is None and not self.show_args:
            return HIDDEN_UNKNOWN
        if text and task is not None and task.config.redact is not None:
            return HIDDEN_REDACT_TEXT
        return None

    def shown_args(self, task_name: str | None, raw: tuple[Any, Any] | None) -> dict[str, Any]:
        """A job's arguments as the dashboard may show them: ``{"args", "kwargs", "hidden"}``,
        where ``hidden`` says why they are not shown (None when they are)."""
        hidden = self._hidden(task_name) or (UNAVAILABLE if raw is None else None)
        if hidden or raw is None:
            return {"args": None, "kwargs": None, "hidden": hidden}
        args, kwargs = tuple(raw[0] or ()), dict(raw[1] or {})
        task = self.task_of(task_name)
        if task is not None and task.config.redact is not None:
            try:
                shown_a, shown_k = task.config.redact(args, kwargs)
                args, kwargs = tuple(shown_a), dict(shown_k)
            except Exception as exc:  # a broken hook must hide the arguments, not show them
                why = f"hidden: the redact hook failed ({type(exc).__name__})"
                return {"args": None, "kwargs": None, "hidden": why}
        return {"args": _jsonable(list(args)), "kwargs": _jsonable(kwargs), "hidden": None}


def _cursor(cursor: str | None) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    p, _, o = cursor.partition(".")
    if not (p.isdigit() and o.isdigit()):
        raise ValueError(f"bad cursor {cursor!r}")
    return int(p), int(o)


def _jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it (values of other serializers described, not decoded;
    anything else as its repr)."""
    return json.loads(json.dumps(describe(value), default=repr))


def _row(info: JobInfo) -> dict[str, Any]:
    err = info.error or {}
    return {
        "id": info.id,
        "queue": info.queue,
        "task": info.task,
        "state": info.state,
        "attempts": info.attempts,
        "max_attempts": info.max_attempts,
        "enqueued_at": info.enqueued_at,
        "due_at": info.due_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "worker": info.worker,
        "error": f"{err.get('type', '')}: {err.get('message', '')}" if err else None,
    }


def _timeline(info: JobInfo) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"at": info.enqueued_at, "what": "enqueued"}]
    if info.due_at is not None and info.due_at > info.enqueued_at + 0.001:
        events.append({"at": info.due_at, "what": "due"})
    final = info.state in ("succeeded", "dead", "cancelled")
    if info.started_at is not None:
        # A job retried from the dead-letter queue keeps its last run's times until it runs.
        run = f"started (attempt {info.attempts})" if info.attempts else "last run started"
        events.append({"at": info.started_at, "what": run})
    for at, fraction, message in info.progress:
        note = f": {message}" if message else ""
        events.append({"at": at, "what": f"progress {fraction:.0%}{note}"})
    if info.finished_at is not None:
        end = f"finished: {info.state}" if final else "last run ended"
        events.append({"at": info.finished_at, "what": end})
    return sorted(events, key=lambda e: e["at"])


def _flow(info: JobInfo) -> dict[str, Any] | None:
    if info.state == "waiting":
        return {"waiting": True, "text": "a flow member waiting for its parents to finish"}
    return None


def _reason(kind: str, text: str) -> dict[str, str]:
    return {"kind": kind, "text": text}


def _limit_reasons(info: JobInfo, rows: Sequence[LimitRow]) -> list[dict[str, str]]:
    task = info.task or ""
    mine = [
        r
        for r in rows
        if r.family == f"t:{task}"
        or r.family.startswith((f"k:{task}:", f"o:{task}:"))
        or r.family == f"@{info.queue.partition('#')[0]}"
    ]
    out = []
    for r in mine:
        eff = effective_limits(r.declared, r.override)
        said = (
            [f"{eff['concurrency_limit']} at once"] if eff["concurrency_limit"] is not None else []
        )
        if eff["rate_limit"]:
            said.append(f"{eff['rate_limit']}" + (f" burst {eff['burst']}" if eff["burst"] else ""))
        limit = ", ".join(said) or "no limit"
        if r.keyed and r.keys_waiting:
            kind = "ordered key" if r.family.startswith("o:") else "limit per key"
            out.append(
                _reason(
                    "limit",
                    f"{kind} {r.family} ({limit} per key): {r.keys_waiting} key(s) have jobs "
                    "waiting for room; this job's group may be one",
                )
            )
        elif not r.keyed and (
            r.waiting
            or (eff["concurrency_limit"] is not None and r.running >= eff["concurrency_limit"])
        ):
            out.append(
                _reason(
                    "limit",
                    f"limit {r.family} ({limit}): {r.running} running, "
                    f"{r.waiting} group(s) waiting for room",
                )
            )
    return out


def why_waiting(
    info: JobInfo, counts: Mapping[str, int], rows: Sequence[LimitRow], now: float, served: bool
) -> list[dict[str, str]]:
    """What holds a job that has not started: a paused queue, a flow dependency, a delay, a
    retry backoff or a schedule, a limit, or no worker. Empty for a job that is not waiting."""
    if info.state not in ("queued", "scheduled", "failed", "waiting"):
        return []
    out = []
    if counts.get("paused"):
        out.append(
            _reason(
                "paused",
                f"queue {info.queue} is paused: its jobs are not fetched until it is resumed",
            )
        )
    if info.state == "waiting":
        out.append(_reason("dependency", "a flow member: it waits for its parent jobs to finish"))
    if info.state in ("scheduled", "failed") and info.due_at is not None and info.due_at > now:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.due_at))
        if info.state == "failed":
            out.append(
                _reason(
                    "retry",
                    f"attempt {info.attempts} failed; it retries at {when} "
                    f"({_age(info.due_at, now)})",
                )
            )
        elif info.id.startswith("sched:"):
            name = info.id.split(":")[1] if info.id.count(":") >= 2 else "?"
            out.append(
                _reason(
                    "schedule",
                    f"enqueued by schedule {name}; due at {when} ({_age(info.due_at, now)})",
                )
            )
        else:
            out.append(_reason("delay", f"delayed: due at {when} ({_age(info.due_at, now)})"))
    if info.state == "queued":
        out += _limit_reasons(info, rows)
        if not served:
            out.append(
                _reason("no_worker", f"no live worker serves queue {info.queue.partition('#')[0]}")
            )
        if not out:
            out.append(_reason("ready", "ready: it starts when a worker has a free slot"))
    return out
