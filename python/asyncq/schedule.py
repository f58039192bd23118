"""Periodic jobs: schedules declared on the app, and the scheduler that fires them.

Every worker runs a scheduler by default, and any number may run: each fire time is taken by
one atomic script call (``fire.lua``) that compares it with the schedule's last fire time kept in
Redis, so the first scheduler to ask enqueues the job and every other one is told it is taken.
Nothing depends on a leader or a lock that could expire. Fire times come from Redis' clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from ._core import BrokerError, PayloadError, check_schedule_name
from ._cron import Cron, zone
from .task import BoundTask, EnqueueOptions

if TYPE_CHECKING:
    from ._core import Broker
    from .app import App
    from .task import Task

__all__ = [
    "CATCHUP_LIMIT",
    "Schedule",
    "ScheduleInfo",
    "Scheduler",
    "fire_job_id",
    "fire_of",
    "schedule_infos",
]

log = logging.getLogger("asyncq.scheduler")

Overlap = Literal["allow", "skip"]
Catchup = Literal["skip", "once", "all"]

#: With ``catchup="all"``, the most fire times one scheduler enqueues after a downtime (the
#: most recent ones; older ones are passed over).
CATCHUP_LIMIT = 100
#: With ``catchup="skip"``, a fire time is still on time this late, at most (and never later
#: than the next fire time).
MAX_LATENESS_MS = 60_000
#: Longest sleep of an idle scheduler: how often it reads Redis' clock again.
MAX_SLEEP = 30.0
#: Pause after the broker failed, growing to ``MAX_BACKOFF``.
BACKOFF = 0.1
MAX_BACKOFF = 5.0


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One periodic schedule (made by :meth:`asyncq.App.schedule`).

    Attributes:
        name: Unique name; it names the fire jobs too (``sched:<name>:<fire ms>``).
        task: The task it enqueues.
        cron: Parsed cron expression, or None for ``every``.
        every_ms: Interval in ms (fire times are its multiples since the Unix epoch).
        args: Positional arguments of every fire.
        kwargs: Keyword arguments of every fire.
        tz: IANA zone the cron expression is read in.
        overlap: ``"skip"``: no fire while the previous job is still waiting or running.
        catchup: After a downtime: ``"skip"`` the missed fire times, run ``"once"``, or
            ``"all"`` (up to :data:`CATCHUP_LIMIT`).
        jitter: Each job waits a further 0 to ``jitter`` seconds (fixed per fire time).
    """

    name: str
    task: Task[Any, Any]
    cron: Cron | None
    every_ms: int | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any] | None
    tz: str
    overlap: Overlap
    catchup: Catchup
    jitter: float
    zone: dt.tzinfo = dataclasses.field(repr=False, compare=False)

    @classmethod
    def make(
        cls,
        name: str,
        task: Task[Any, Any],
        *,
        cron: str | None,
        every: float | dt.timedelta | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        tz: str,
        overlap: str,
        catchup: str,
        jitter: float,
    ) -> Schedule:
        """Validate and build a schedule (see :meth:`asyncq.App.schedule`)."""
        check_schedule_name(name)
        if (cron is None) == (every is None):
            raise ValueError(f"schedule {name!r}: give exactly one of cron= and every=")
        every_ms: int | None = None
        if every is not None:
            seconds = every.total_seconds() if isinstance(every, dt.timedelta) else float(every)
            every_ms = round(seconds * 1000)
            if every_ms < 1000:
                raise ValueError(f"schedule {name!r}: every= must be at least 1 second")
        if overlap not in ("allow", "skip"):
            raise ValueError(f"schedule {name!r}: overlap must be 'allow' or 'skip'")
        if catchup not in ("skip", "once", "all"):
            raise ValueError(f"schedule {name!r}: catchup must be 'skip', 'once' or 'all'")
        if jitter < 0:
            raise ValueError(f"schedule {name!r}: jitter must be >= 0")
        if task._check_args is not None:
            task._check_args(*args, **(kwargs or {}))
        return cls(
            name=name,
            task=task,
            cron=Cron.parse(cron) if cron is not None else None,
            every_ms=every_ms,
            args=tuple(args),
            kwargs=dict(kwargs) if kwargs else None,
            tz=tz,
            overlap=overlap,  # type: ignore[arg-type]  # checked above
            catchup=catchup,  # type: ignore[arg-type]
            jitter=jitter,
            zone=zone(tz),
        )

    @property
    def queue(self) -> str:
        """The queue its jobs go to (where its fire state is kept)."""
        return self.task.config.queue

    def definition(self) -> str:
        """What Redis keeps of it, for ``asyncq schedules`` (JSON)."""
        return json.dumps(
            {
                "task": self.task.name,
                "cron": self.cron.expr if self.cron else None,
                "every": self.every_ms / 1000 if self.every_ms else None,
                "tz": self.tz,
                "overlap": self.overlap,
                "catchup": self.catchup,
                "jitter": self.jitter,
                "args": _shown(self.args, self.kwargs),
            },
            sort_keys=True,
        )

    def next_after(self, ms: int) -> int | None:
        """Its first fire time strictly after ``ms`` (unix ms)."""
        return _next_after(self.cron, self.every_ms, self.zone, ms)

    def recent(self, last: int, now: int, count: int) -> list[int]:
        """Its latest ``count`` fire times in ``(last, now]``, oldest first."""
        if self.every_ms is not None:
            e = self.every_ms
            latest = now // e * e
            first = max(last // e * e + e, latest - (count - 1) * e)
            return list(range(first, latest + 1, e))
        # Look back over a span that should hold `count` fire times; widen it until it does
        # or it reaches `last`, so a long downtime costs no walk over every missed time.
        a = self.next_after(now)
        b = self.next_after(a) if a is not None else None
        span = max((b - a) if a is not None and b is not None else 1000, 1000) * (count + 1)
        while True:
            start = max(last, now - span)
            found: collections.deque[int] = collections.deque(maxlen=count)
            t = self.next_after(start)
            while t is not None and t <= now:
                found.append(t)
                t = self.next_after(t)
            if len(found) == count or start == last:
                return list(found)
            span *= 4

    def due(self, last: int, now: int) -> list[tuple[int, Literal["allow", "skip", "pass"]]]:
        """The fire times to take now, given the last one taken, with what to do with each."""
        mode: Literal["allow", "skip"] = self.overlap
        if self.catchup == "all":
            return [(t, mode) for t in self.recent(last, now, CATCHUP_LIMIT)]
        times = self.recent(last, now, 1)
        if not times:
            return []
        latest = times[0]
        if self.catchup == "skip":
            following = self.next_after(latest)
            on_time = MAX_LATENESS_MS if following is None else following - latest
            if now - latest > min(on_time, MAX_LATENESS_MS):
                return [(latest, "pass")]
        return [(latest, mode)]

    def jitter_ms(self, fire_ms: int) -> int:
        """The extra wait of fire time ``fire_ms``: the same on every scheduler."""
        span = round(self.jitter * 1000)
        if span <= 0:
            return 0
        digest = hashlib.blake2b(f"{self.name}:{fire_ms}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % (span + 1)


def fire_job_id(name: str, fire_ms: int) -> str:
    """The id of the job a schedule's fire at ``fire_ms`` enqueues: ``sched:<name>:<ms>``.

    The id is what makes a fire time enqueue once: ``fire.lua`` writes a record with it at most
    once, whichever scheduler asks first.
    """
    return f"sched:{name}:{fire_ms}"


def fire_of(job_id: str) -> tuple[str, int] | None:
    """The schedule name and fire time (unix ms) of a job a schedule enqueued, else None."""
    if not job_id.startswith("sched:"):
        return None
    name, _, ms = job_id[len("sched:") :].rpartition(":")
    return (name, int(ms)) if name and ms.isdigit() else None


def _next_after(cron: Cron | None, every_ms: int | None, tz: dt.tzinfo, ms: int) -> int | None:
    if every_ms is not None:
        return (ms // every_ms + 1) * every_ms
    assert cron is not None
    return cron.next_after(ms, tz)


def _shown(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> str:
    """The arguments as ``asyncq schedules`` shows them (cut at 200 characters)."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    text = ", ".join(parts)
    return text if len(text) <= 200 else text[:197] + "..."


class Scheduler:
    """Fires the app's schedules until stopped; any number may run against one Redis.

    Args:
        app: The app whose schedules (``app.schedules``) it fires.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.schedules = list(app.schedules.values())
        self._last: dict[str, int] = {}
        #: Local clock minus broker clock, in ms, from the last read of the broker's time.
        self._offset = 0.0
        self._down = False
        self._failing: set[str] = set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Store the schedules in Redis, then fire them until ``stop`` is set (or cancelled)."""
        stop = stop or asyncio.Event()
        if not self.schedules:
            return
        backoff = BACKOFF
        synced = False
        while not stop.is_set():
            try:
                if not synced:
                    await self._sync()
                    synced = True
                wake = await self._tick()
            except BrokerError as exc:
                if not self._down:
                    log.error("scheduler: broker unreachable (%s); retrying with backoff", exc)
                    self._down = True
                await _wait(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if self._down:
                log.warning("scheduler: broker reachable again")
                self._down = False
            backoff = BACKOFF
            local_wake = (wake + self._offset) / 1000
            await _wait(stop, min(max(local_wake - time.time(), 0.0), MAX_SLEEP))

    async def _sync(self) -> None:
        broker = self.app.broker
        for s in self.schedules:
            last, paused = await broker.sync_schedule(s.queue, s.name, s.definition())
            self._last[s.name] = last
            log.info(
                "schedule %s: %s%s",
                s.name,
                s.cron.expr if s.cron else f"every {s.every_ms / 1000 if s.every_ms else 0:g}s",
                " (paused)" if paused else "",
            )

    async def _now(self) -> int:
        local = time.time() * 1000
        now = round(await self.app.broker.now() * 1000)
        self._offset = local - now
        return now

    async def _tick(self) -> int:
        """Take every due fire time; returns the broker time (ms) of the next one."""
        now = await self._now()
        wake = now + round(MAX_SLEEP * 1000)
        for s in self.schedules:
            last = self._last[s.name]
            for fire_ms, mode in s.due(last, now):
                last = max(last, await self._fire(s, fire_ms, mode))
            self._last[s.name] = last
            following = s.next_after(max(last, now))
            if following is not None:
                wake = min(wake, following)
        return wake

    async def _send(
        self,
        s: Schedule,
        fire_ms: int,
        mode: Literal["allow", "skip", "pass"],
        opts: EnqueueOptions,
    ) -> tuple[str, int]:
        """Fire's write, in a PRODUCER span when the app is traced."""
        tracing = self.app._tracing
        if tracing is None:
            return await self._write(s, fire_ms, mode, opts, None)
        attributes = {"asyncq.schedule": s.name}
        with tracing.sending(s.queue, s.task.name, 1, attributes) as sending:
            outcome, ms = await self._write(s, fire_ms, mode, opts, sending.headers)
            sending.span.set_attribute("asyncq.fire", outcome)
            if outcome == "enqueued" and opts.job_id is not None:
                sending.sent([opts.job_id])
            return outcome, ms

    async def _write(
        self,
        s: Schedule,
        fire_ms: int,
        mode: Literal["allow", "skip", "pass"],
        opts: EnqueueOptions,
        headers: dict[str, str] | None,
    ) -> tuple[str, int]:
        core = BoundTask(s.task, opts)._core_options([(tuple(s.args), s.kwargs)], headers)
        return await self.app.broker.fire(
            s.queue,
            s.name,
            fire_ms,
            mode,
            s.task.name,
            s.task._arg_names,
            [(s.args, s.kwargs)],
            core,
        )

    async def _fire(self, s: Schedule, fire_ms: int, mode: Literal["allow", "skip", "pass"]) -> int:
        """Take one fire time; returns the schedule's last fire time as now known."""
        jitter = s.jitter_ms(fire_ms)
        opts = EnqueueOptions(
            job_id=fire_job_id(s.name, fire_ms),
            eta=(fire_ms + jitter) / 1000 if jitter else None,
        )
        try:
            outcome, ms = await self._send(s, fire_ms, mode, opts)
        except (TypeError, ValueError, PayloadError) as exc:
            # The arguments cannot be encoded (or are too large): every fire would fail alike.
            # Say it once; the scheduler (and the worker it runs in) carries on.
            if s.name not in self._failing:
                log.error("schedule %s: cannot enqueue its job: %s", s.name, exc)
                self._failing.add(s.name)
            return fire_ms
        self._failing.discard(s.name)
        when = _iso(fire_ms)
        if outcome == "enqueued":
            log.info("schedule %s: fired %s (job %s)", s.name, when, opts.job_id)
        elif outcome == "overlap":
            log.info("schedule %s: %s passed over, its previous job is unfinished", s.name, when)
        elif outcome == "passed":
            log.info("schedule %s: %s passed over (missed; catchup=skip)", s.name, when)
        elif outcome == "removed":
            log.debug("schedule %s: removed from Redis; not fired", s.name)
        if outcome == "taken":
            return ms
        if outcome == "early":
            return fire_ms - 1
        return fire_ms


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored in Redis (``asyncq schedules``).

    Attributes:
        name: Its name.
        queue: The queue its jobs go to.
        definition: What the last sync stored (task, cron or every, tz, policies, args).
        last_fire: The latest fire time taken (unix seconds); when first stored, before any.
        next_fire: Its next fire time (unix seconds), or None when it has none.
        last_job: Id of the last job it enqueued.
        paused: Paused with ``asyncq schedules pause``.
        fired: Jobs it enqueued.
        skipped: Fire times passed over (paused, overlap, or missed).
    """

    name: str
    queue: str
    definition: dict[str, Any]
    last_fire: float
    next_fire: float | None
    last_job: str | None
    paused: bool
    fired: int
    skipped: int


async def schedule_infos(broker: Broker, queues: list[str]) -> list[ScheduleInfo]:
    """Every schedule stored for ``queues``, with its next fire time from Redis' clock."""
    now = round(await broker.now() * 1000)
    out: list[ScheduleInfo] = []
    for queue in queues:
        for name, raw, last, job, paused, fired, skipped in await broker.schedules(queue):
            try:
                d = json.loads(raw)
            except ValueError:
                d = {}
            nxt: int | None = None
            with contextlib.suppress(ValueError, TypeError, KeyError):
                every = d.get("every")
                cron = Cron.parse(d["cron"]) if d.get("cron") else None
                every_ms = round(float(every) * 1000) if every else None
                if cron is not None or every_ms is not None:
                    nxt = _next_after(cron, every_ms, zone(d.get("tz") or "UTC"), max(last, now))
            out.append(
                ScheduleInfo(
                    name=name,
                    queue=queue,
                    definition=d,
                    last_fire=last / 1000,
                    next_fire=nxt / 1000 if nxt is not None else None,
                    last_job=job,
                    paused=paused,
                    fired=fired,
                    skipped=skipped,
                )
            )
    return out
