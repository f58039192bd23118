"""Command-line entry points: ``asyncq-worker`` runs a worker, ``asyncq`` administers queues."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._config import (
    CONFIG_KEYS,
    LOG_FORMATS,
    LOG_LEVELS,
    LOOPS,
    UsageError,
    load_config,
    parse_queues,
    resolve_queues,
    suggest,
)
from ._core import Broker, BrokerError, JobInfo, __version__, new_job_ids
from ._signals import on_stop_signals
from .app import App
from .errors import AsyncqError
from .limits import parse_rate, parse_settings, settings_parts
from .log import configure_logging
from .schedule import ScheduleInfo, Scheduler, schedule_infos
from .serialization import describe
from .task import CoreOptions, Task

__all__ = ["UsageError", "admin_main", "load_app", "parse_queues", "worker_main"]

log = logging.getLogger("asyncq.cli")

DEFAULT_URL = "redis://localhost:6379/0"
#: Jobs read per broker round trip by ``asyncq jobs``.
PAGE = 100
#: Longest pause between two tries of ``--wait-for-redis``.
WAIT_STEP_MAX = 0.5


def load_app(path: str) -> App:
    """Import ``module:attribute`` and return the App found there.

    Args:
        path: E.g. ``myapp.tasks:app``.

    Returns:
        The App.

    Raises:
        UsageError: The path is malformed, cannot be imported or is not an App.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UsageError(f"app path {path!r} must look like 'package.module:app'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise UsageError(f"{path!r} is not an asyncq.App (found {type(app).__name__})")
    return app


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def loop_runner(choice: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """How to run the worker's event loop for ``--loop`` ``choice`` (see ``LOOPS``).

    Raises:
        UsageError: ``uvloop`` was asked for and is not installed.
    """
    if choice in ("auto", "uvloop"):
        try:
            import uvloop  # noqa: PLC0415 (optional: only a worker that starts needs it)
        except ImportError:
            if choice == "uvloop":
                raise UsageError(
                    "--loop uvloop: uvloop is not installed (pip install uvloop)"
                ) from None
        else:
            return uvloop.run
    return asyncio.run


def _run(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    args: argparse.Namespace,
    runner: Callable[[argparse.Namespace], Callable[[Coroutine[Any, Any, int]], int]] = (
        lambda _: asyncio.run
    ),
) -> int:
    debug = getattr(args, "log_level", "info") == "debug"
    try:
        return runner(args)(main(args))
    except (UsageError, AsyncqError, ValueError, TypeError) as exc:
        if debug:
            raise
        # One line: some driver errors span several (e.g. a non-Redis server's reply).
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _quiet_on_broken_pipe(main: Callable[[], int]) -> int:
    """Run ``main``; if the reader of stdout went away (``| head``), exit 141 without a traceback.

    141 is what a shell reports for a process ended by SIGPIPE, which Python ignores.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The interpreter flushes stdout once more at exit; pointed at /dev/null that cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _seconds(text: str) -> float:
    n = float(text)
    if not n >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return n


def _tcp_port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0 to 65535), got {text}")
    return int(text)


# ---- asyncq-worker ---------------------------------------------------------------------------


def worker_parser() -> argparse.ArgumentParser:
    """The ``asyncq-worker`` argument parser."""
    p = argparse.ArgumentParser(prog="asyncq-worker", description="Run an asyncq worker.")
    p.add_argument("app", nargs="?", help="the App to serve, as package.module:app")
    p.add_argument("--url", help="broker URL to use instead of the app's")
    p.add_argument("-q", "--queues", help="queues and concurrency: emails=20,default=5")
    p.add_argument("-c", "--concurrency", type=_positive_int, help="jobs at once per queue (50)")
    p.add_argument("--threads", type=_positive_int, help="threads for sync tasks")
    p.add_argument(
        "--processes", type=_positive_int, help='child processes for executor="process" tasks'
    )
    p.add_argument("--grace", type=_seconds, help="seconds to finish jobs on shutdown (30)")
    p.add_argument(
        "--prefetch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lease the next batch while this one runs (default: by itself, for short jobs)",
    )
    p.add_argument(
        "--loop",
        default=None,
        choices=LOOPS,
        help="event loop: uvloop where installed (auto, the default), or asyncio's own",
    )
    p.add_argument(
        "--wait-for-redis",
        type=_seconds,
        metavar="SECONDS",
        help="at start, retry reaching the broker for up to SECONDS (for containers)",
    )
    p.add_argument(
        "--scheduler",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fire the app's periodic schedules from this worker too (default: on)",
    )
    p.add_argument(
        "--metrics-port",
        type=_tcp_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: App.metrics_port)",
    )
    p.add_argument(
        "--metrics-host", metavar="HOST", help="interface for --metrics-port (default 0.0.0.0)"
    )
    p.add_argument("--log-level", default=None, choices=LOG_LEVELS)
    p.add_argument("--log-format", default=None, choices=LOG_FORMATS)
    p.add_argument("--config", help="TOML file with a [worker] table of these options")
    p.add_argument("--version", action="version", version=f"asyncq {__version__}")
    return p


def worker_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's settings with the command-line flags given on top of them.

    Raises:
        UsageError: A bad config file or queue spec.
    """
    settings = load_config(args.config)
    flags = {k: getattr(args, k, None) for k in CONFIG_KEYS if k != "queues"}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if args.queues:
        settings["queues"] = parse_queues(args.queues)
    return settings


def use_url(app: App, url: str) -> None:
    """Point ``app`` at another broker, keeping its other settings (signing keys included)."""
    app.broker = app.broker.with_url(url)
    app.url = url


async def wait_for_broker(broker: Broker, seconds: float) -> None:
    """Retry reaching ``broker`` until it answers or ``seconds`` have passed.

    Raises:
        AsyncqError: It did not answer in time (the message names the URL and the last error).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    url, step, waited = redact(broker.url), 0.05, False
    while True:
        try:
            await asyncio.wait_for(broker.now(), max(deadline - loop.time(), 0.1))
        except (BrokerError, asyncio.TimeoutError) as exc:
            last = str(exc) or "no answer"
        else:
            if waited:
                log.info("Redis at %s answered", url)
            return
        if loop.time() >= deadline:
            raise AsyncqError(f"Redis at {url} did not answer within {seconds:g}s: {last}")
        if not waited:
            log.info("waiting for Redis at %s (up to %gs)", url, seconds)
            waited = True
        await asyncio.sleep(min(step, max(deadline - loop.time(), 0)))
        step = min(step * 2, WAIT_STEP_MAX)


async def _worker(args: argparse.Namespace) -> int:
    settings = worker_settings(args)
    configure_logging(settings.get("log_level", "info"), settings.get("log_format", "text"))
    app_path = settings.get("app")
    if not app_path:
        raise UsageError("no app given: asyncq-worker package.module:app")
    app = load_app(app_path)
    if settings.get("url"):
        use_url(app, settings["url"])
    concurrency = settings.get("concurrency", 50)
    worker = app.worker(
        resolve_queues(settings.get("queues"), concurrency),
        concurrency=concurrency,
        threads=settings.get("threads"),
        processes=settings.get("processes"),
        grace=settings.get("grace", 30.0),
        prefetch=settings.get("prefetch"),
        scheduler=settings.get("scheduler", True),
        metrics_port=settings.get("metrics_port"),
        metrics_host=settings.get("metrics_host"),
    )
    if settings.get("wait_for_redis"):
        await wait_for_broker(app.broker, settings["wait_for_redis"])
    try:
        await worker.run()
    except AsyncqError as exc:
        raise AsyncqError(f"cannot reach broker {redact(app.url)}: {exc}") from exc
    return 0


def _worker_loop(args: argparse.Namespace) -> Callable[[Coroutine[Any, Any, int]], int]:
    return loop_runner(worker_settings(args).get("loop", "auto"))


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asyncq-worker``."""
    args = worker_parser().parse_args(argv)
    return _quiet_on_broken_pipe(lambda: _run(_worker, args, _worker_loop))


# ---- asyncq (admin) ----------------------------------------------------------------------------

LISTABLE = ("queued", "scheduled", "running", "dead")
SCHEDULE_ACTIONS = ("list", "pause", "resume", "remove")
LIMIT_ACTIONS = ("list", "set", "clear")
#: What ``asyncq limits set`` takes, as OPTION=VALUE.
LIMIT_OPTIONS = ("rate_limit", "burst", "concurrency_limit")


def admin_parser() -> argparse.ArgumentParser:
    """The ``asyncq`` argument parser."""
    p = argparse.ArgumentParser(prog="asyncq", description="Inspect and manage asyncq queues.")
    p.add_argument(
        "--url",
        default=os.environ.get("ASYNCQ_URL", DEFAULT_URL),
        help="broker URL (default $ASYNCQ_URL or %(default)s)",
    )
    p.add_argument("--app", help="take the broker URL and tasks from this App (module:app)")
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, help="warning (info for the scheduler command)"
    )
    p.add_argument("--version", action="version", version=f"asyncq {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="queues with counts per state, and live workers")
    job = sub.add_parser("job", help="show one job")
    job.add_argument("id")
    job.add_argument("--queue", help="its queue (default: search every queue)")
    jobs = sub.add_parser("jobs", help="list the jobs of a queue in one state")
    jobs.add_argument("queue")
    jobs.add_argument("--state", choices=LISTABLE, default="dead", help="which jobs (dead)")
    jobs.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N jobs (50)"
    )
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")
    _enqueue_parser(sub.add_parser("enqueue", help="enqueue a job by task name"))
    retry = sub.add_parser("retry", help="move dead-lettered jobs back to their queue")
    retry.add_argument("queue")
    retry.add_argument("ids", nargs="*", help="job ids (default: all)")
    purge = sub.add_parser("purge", help="delete queued, scheduled and dead jobs of a queue")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for verb, what in (("pause", "stop leasing"), ("resume", "start leasing again")):
        queue_cmd = sub.add_parser(
            verb, help=f"{what} the jobs of a queue (every partition; running jobs run on)"
        )
        queue_cmd.add_argument("queue")
    sched = sub.add_parser(
        "schedules", help="list periodic schedules, or pause, resume or remove one"
    )
    sched.add_argument("action", nargs="?", choices=SCHEDULE_ACTIONS, default="list")
    sched.add_argument("name", nargs="?", help="the schedule (for pause, resume, remove)")
    sched.add_argument("--queue", help="its queue (default: every queue)")
    sched.add_argument("--json", action="store_true", help="list as one JSON object per line")
    _limits_parser(
        sub.add_parser(
            "limits", help="rate and concurrency limits per queue, or set or clear an override"
        )
    )
    runner = sub.add_parser("scheduler", help="fire an app's periodic schedules (no worker)")
    runner.add_argument("target", metavar="APP", help="the App, as package.module:app")
    dash = sub.add_parser("dashboard", help="serve the web dashboard (needs asyncq[web])")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    dash.add_argument("--port", type=int, default=8080, help="port (%(default)s)")
    dash.add_argument(
        "--token",
        default=os.environ.get("ASYNCQ_DASHBOARD_TOKEN"),
        help="secret needed to use it (default $ASYNCQ_DASHBOARD_TOKEN); "
        "required to listen beyond loopback",
    )
    dash.add_argument(
        "--show-args",
        action="store_true",
        help="without --app: show every job's arguments (none is known sensitive)",
    )
    return p


def _enqueue_parser(enq: argparse.ArgumentParser) -> None:
    enq.add_argument("task", help="registered task name, e.g. myapp.tasks:send_email")
    enq.add_argument("--args", default="[]", help="JSON list of positional arguments")
    enq.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    enq.add_argument("--queue", help="override the task's queue (without --app: default)")
    enq.add_argument("--delay", type=float, help="seconds before it may run (>= 0)")
    enq.add_argument("--priority", type=int, help="0 (lowest) to 9; default the task's")
    enq.add_argument("--retries", type=int, help="retries of a task unknown here (no --app)")


def _limits_parser(lim: argparse.ArgumentParser) -> None:
    lim.add_argument("action", nargs="?", choices=LIMIT_ACTIONS, default="list")
    lim.add_argument(
        "name",
        nargs="?",
        metavar="TASK_OR_FAMILY",
        help="for set, clear: a task (its task-wide limit) or a limiter family, such as "
        "k:myapp.tasks:send:tenant or @emails",
    )
    lim.add_argument(
        "options",
        nargs="*",
        metavar="OPTION=VALUE",
        help="for set: rate_limit=50/s, burst=2, concurrency_limit=3 (rate_limit=off, "
        "concurrency_limit=off: none)",
    )
    lim.add_argument("--queue", help="its queue (default: every queue that declares it)")
    lim.add_argument("--json", action="store_true", help="list as one JSON object per line")


def _broker(args: argparse.Namespace) -> Broker:
    return load_app(args.app).broker if args.app else Broker(args.url)


def by_logical(names: Iterable[str]) -> dict[str, list[str]]:
    """Queue names as Redis knows them, grouped by the queue they belong to: a partitioned
    queue's partitions (``orders#0`` ... ``orders#7``, in order) under ``orders``; a plain
    queue under itself. ``orders`` and ``orders#0`` are one partition (the same keys), listed
    once."""
    groups: dict[str, dict[int, str]] = {}
    for name in names:
        base, _, number = name.partition("#")
        part = int(number) if number.isdigit() else 0
        groups.setdefault(base, {}).setdefault(part, name if number else f"{base}#0")
    out = {}
    for base, parts in sorted(groups.items()):
        out[base] = [base] if list(parts) == [0] else [parts[p] for p in sorted(parts)]
    return out


async def partitions_of(broker: Broker, queue: str) -> list[str]:
    """The partitions of ``queue`` Redis knows of (``[queue]`` for a plain queue, or a name
    that is one partition: ``orders#3``)."""
    if "#" in queue:
        return [queue]
    return by_logical(await broker.queues()).get(queue, [queue])


async def _info(broker: Broker, _: argparse.Namespace) -> int:
    queues = await broker.queues()
    cols = ("scheduled", "queued", "running", "dead", "succeeded_total", "failed_total")
    print(f"{'queue':<24}" + "".join(f"{c:>16}" for c in cols))
    for queue, parts in by_logical(queues).items():
        each = [await broker.counts(p) for p in parts]
        total = {c: sum(counts.get(c, 0) for counts in each) for c in cols}
        paused = "  (paused)" if any(counts.get("paused") for counts in each) else ""
        print(f"{queue:<24}" + "".join(f"{total[c]:>16}" for c in cols) + paused)
        if len(parts) > 1:  # a partitioned queue: its partitions below it
            for part, counts in zip(parts, each, strict=True):
                label = f"  #{part.rpartition('#')[2]}"
                print(f"{label:<24}" + "".join(f"{counts.get(c, 0):>16}" for c in cols))
    rows = await limit_rows(broker, sorted(queues))
    if rows:
        print("\nlimits:")
        for line in _table([_limit_summary(r) for r in rows], numeric=()):
            print(f"  {line}")
    workers = await broker.workers()
    print(f"\nworkers: {len(workers)}")
    for wid, info, seen in workers:
        print(f"  {wid}  {info}  last seen {seen:.0f}")
    return 0


def job_record(info: JobInfo) -> dict[str, Any]:
    """Everything known about a job, as a JSON-ready dict (times in unix seconds)."""
    return {
        "id": info.id,
        "queue": info.queue,
        "task": info.task,
        "state": info.state,
        "attempts": info.attempts,
        "max_attempts": info.max_attempts,
        "priority": info.priority,
        "enqueued_at": info.enqueued_at,
        "due_at": info.due_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "worker": info.worker,
        "result": describe(info.result),
        "error": info.error,
    }


async def _job(broker: Broker, args: argparse.Namespace) -> int:
    if args.queue:
        queues = await partitions_of(broker, args.queue)
    else:
        queues = [p for parts in by_logical(await broker.queues()).values() for p in parts]
    for queue in queues:
        info = await broker.job(queue, args.id)
        if info is not None:
            print(json.dumps(job_record(info), indent=2, default=repr))
            return 0
    raise UsageError(f"no job {args.id} in queue(s) {', '.join(queues) or '(none)'}")


async def iter_jobs(broker: Broker, queue: str, state: str, limit: int) -> AsyncIterator[JobInfo]:
    """Up to ``limit`` jobs of ``queue`` in ``state``, read ``PAGE`` at a time.

    Each page is one bounded range read of the state's set plus one batch read of the records;
    the set is never read whole. A job whose record vanished between the two is skipped.
    """
    offset = shown = 0
    while shown < limit:
        ids = await broker.job_ids(queue, state, offset, min(PAGE, limit - shown))
        if not ids:
            return
        offset += len(ids)
        for info in await broker.jobs(queue, ids):
            if info is not None:
                shown += 1
                yield info


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _error_text(info: JobInfo) -> str:
    err = info.error
    if err is None or info.state not in ("dead", "failed"):
        return ""
    text = f"{err.get('type', '?')}: {' '.join(err.get('message', '').split())}"
    return f"{text} [{err['reason']}]" if err.get("reason") else text


_ROW = "{:<32}  {:<24}  {:<9}  {:>7}  {:<19}  {:<19}  {:<19}  {}"


def _job_row(info: JobInfo) -> str:
    tries = f"{info.attempts}/{info.max_attempts}"
    times = (_when(info.enqueued_at), _when(info.started_at), _when(info.finished_at))
    return _ROW.format(
        info.id, info.task or "?", info.state, tries, *times, _error_text(info)
    ).rstrip()


async def _jobs(broker: Broker, args: argparse.Namespace) -> int:
    if not args.json:
        times = ("enqueued UTC", "started UTC", "finished UTC")
        print(_ROW.format("id", "task", "state", "tries", *times, "error"))
    shown = 0
    parts = await partitions_of(broker, args.queue)
    for part in parts:
        async for info in iter_jobs(broker, part, args.state, args.limit - shown):
            shown += 1
            if args.json:
                print(json.dumps(job_record(info), default=repr))
            else:
                print(_job_row(info))
    total = 0
    for part in parts:
        total += (await broker.counts(part)).get(args.state, 0)
    if not args.json and total > shown:
        print(f"({shown} of {total} {args.state} jobs shown; see --limit)", file=sys.stderr)
    return 0


def _call_args(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    try:
        pos, kw = json.loads(args.args), json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args/--kwargs must be JSON: {exc}") from exc
    if not isinstance(pos, list):
        raise UsageError(f"--args must be a JSON list, got {args.args}")
    if not isinstance(kw, dict):
        raise UsageError(f"--kwargs must be a JSON object, got {args.kwargs}")
    return pos, kw


def _check_enqueue_options(args: argparse.Namespace) -> None:
    if args.delay is not None and not 0 <= args.delay < math.inf:
        raise UsageError(f"--delay must be >= 0 seconds, got {args.delay:g}")
    if args.priority is not None and not 0 <= args.priority <= 9:
        raise UsageError(f"--priority must be between 0 and 9, got {args.priority}")
    if args.retries is not None and args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")


def find_task(app: App, name: str, where: str) -> Task[Any, Any]:
    """The task registered as ``name``.

    Raises:
        UsageError: No such task (the message suggests close names).
    """
    task = app.tasks.get(name)
    if task is None:
        known = ", ".join(sorted(app.tasks)) or "(none)"
        raise UsageError(f"{where} has no task {name!r}{suggest(name, app.tasks)}; tasks: {known}")
    return task


async def _enqueue(broker: Broker, args: argparse.Namespace) -> int:
    pos, kw = _call_args(args)
    _check_enqueue_options(args)
    if not args.app:
        opts = CoreOptions(
            max_attempts=(args.retries or 0) + 1, priority=args.priority or 0, delay=args.delay
        )
        queue = args.queue or "default"
        parts = await _known_queues(broker, args, queue)
        if len(parts) > 1:
            # A partitioned queue, as its workers registered it: a partition at random, and an
            # id that names it, as the App would make (so app.job(id) finds it too).
            part = random.choice(parts)
            fresh = [f"{new_job_ids(1)[0]}.p{part.rpartition('#')[2]}"]
            opts, queue = dataclasses.replace(opts, fresh_ids=fresh), part
        ids = await broker.enqueue(queue, args.task, [], [(tuple(pos), kw)], opts)
        print(ids[0][0])
        return 0
    task = find_task(load_app(args.app), args.task, args.app)
    if args.retries is not None:
        raise UsageError(
            f"--retries is for tasks enqueued without --app; {task.name!r} retries "
            f"{task.config.retries} time(s) as declared in code"
        )
    bound = task.options(delay=args.delay, priority=args.priority, queue=args.queue)
    handles = await bound.enqueue_many([(tuple(pos), kw)])
    print(handles[0].id)
    return 0


async def _retry(broker: Broker, args: argparse.Namespace) -> int:
    n = 0
    for part in await partitions_of(broker, args.queue):
        n += await broker.retry_dead(part, args.ids or None)
    print(f"moved {n} job(s) from the dead-letter queue back to {args.queue!r}")
    return 0


async def _purge(broker: Broker, args: argparse.Namespace) -> int:
    n = 0
    for part in await partitions_of(broker, args.queue):
        n += await broker.purge(part)
    print(f"deleted {n} job(s) from {args.queue!r}")
    return 0


async def _pause(broker: Broker, args: argparse.Namespace) -> int:
    pause = args.command == "pause"
    parts = await _known_queues(broker, args, args.queue)
    changed = [await broker.pause(part, pause) for part in parts]
    done = "paused" if pause else "resumed"
    print(f"{done} {args.queue!r}" if any(changed) else f"{args.queue!r} was already {done}")
    return 0


async def _schedule_queues(broker: Broker, args: argparse.Namespace) -> list[str]:
    if args.queue:
        return [args.queue]
    queues = set(await broker.queues())
    if args.app:
        queues |= {s.queue for s in load_app(args.app).schedules.values()}
    return sorted(queues)


def _schedule_row(s: ScheduleInfo) -> str:
    d = s.definition
    when = d.get("cron") or (f"every {d['every']:g}s" if d.get("every") else "?")
    if d.get("cron") and d.get("tz", "UTC") != "UTC":
        when += f" ({d['tz']})"
    nxt = "paused" if s.paused else _when(s.next_fire)
    return (
        f"{s.name:<24} {s.queue:<12} {when:<24} next {nxt:<26} "
        f"fired {s.fired}, skipped {s.skipped}  {d.get('task', '?')}({d.get('args', '')})"
    )


async def _schedules(broker: Broker, args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.name:
            raise UsageError("asyncq schedules [list] takes no name; did you mean pause/resume?")
        for s in await schedule_infos(broker, await _schedule_queues(broker, args)):
            if args.json:
                print(json.dumps(dataclasses.asdict(s)))
            else:
                print(_schedule_row(s))
        return 0
    if not args.name:
        raise UsageError(f"asyncq schedules {args.action} needs the schedule's name")
    changed = [
        q
        for q in await _schedule_queues(broker, args)
        if await broker.change_schedule(q, args.name, args.action)
    ]
    if not changed:
        print(f"error: no schedule named {args.name!r}", file=sys.stderr)
        return 1
    done = {"pause": "paused", "resume": "resumed", "remove": "removed"}[args.action]
    print(f"{done} schedule {args.name!r} (queue {', '.join(changed)})")
    if args.action == "remove":
        print("  a worker whose app still declares it stores it again when it starts")
    return 0


# ---- asyncq limits -----------------------------------------------------------------------------

_PERIODS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000))


@dataclasses.dataclass(frozen=True, slots=True)
class LimitRow:
    """One limiter family of a queue, as ``asyncq limits`` shows it.

    Attributes:
        running: Jobs running under the family's limiter (a family without a key).
        waiting: Groups waiting for room in that limiter (a family without a key).
        keys_waiting: The family's limiters (one per key value) with groups waiting (a
            family with a key: ``k:`` and ``o:``).
    """

    queue: str
    family: str
    declared: str
    override: str
    running: int
    waiting: int
    keys_waiting: int

    @property
    def keyed(self) -> bool:
        return self.family.startswith(("k:", "o:"))


async def limit_rows(broker: Broker, queues: Sequence[str]) -> list[LimitRow]:
    """The limiter families of ``queues``, in queue then family order."""
    return [LimitRow(q, *row) for q in queues for row in await broker.limits(q)]


def _period(ms: int) -> str:
    for unit, size in _PERIODS:
        if ms % size == 0:
            return unit if ms == size else f"{ms // size}{unit}"
    return f"{ms}ms"


def effective_limits(declared: str, override: str) -> dict[str, Any]:
    """The limits in force: the override part by part over the declaration, as the options
    of ``asyncq limits set`` (None: that limit is off)."""
    s = parse_settings(declared) | parse_settings(override)
    c, r, p = s.get("c", -1), s.get("r", -1), s.get("p", -1)
    rate = f"{r}/{_period(p)}" if r > 0 and p > 0 else None
    return {
        "rate_limit": rate,
        "burst": max(0, s.get("b", 0)) if rate else None,
        "concurrency_limit": c if c >= 0 else None,
    }


def _effective_text(row: LimitRow) -> str:
    eff = effective_limits(row.declared, row.override)
    said = []
    if eff["concurrency_limit"] is not None:
        said.append(f"{eff['concurrency_limit']} at once")
    if eff["rate_limit"] is not None:
        said.append(eff["rate_limit"] + (f" burst {eff['burst']}" if eff["burst"] else ""))
    text = ", ".join(said) or "no limit"
    return f"{text} per key" if row.keyed and said else text


def _limit_cells(row: LimitRow) -> list[str]:
    return [
        row.queue,
        row.family,
        row.declared or "-",
        row.override or "-",
        _effective_text(row),
        "-" if row.keyed else str(row.running),
        "-" if row.keyed else str(row.waiting),
        str(row.keys_waiting) if row.keyed else "-",
    ]


def _limit_summary(row: LimitRow) -> list[str]:
    """One line of ``asyncq info``: queue, family, the limits in force, what waits."""
    if row.keyed:
        state = f"{row.keys_waiting} key(s) waiting"
    else:
        state = f"{row.running} running, {row.waiting} group(s) waiting"
    effective = _effective_text(row) + (" (override)" if row.override else "")
    return [row.queue, row.family, effective, state]


def _table(rows: list[list[str]], numeric: Sequence[int]) -> list[str]:
    """``rows`` as lines of aligned columns (those in ``numeric`` to the right)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return [
        "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _limit_record(row: LimitRow) -> dict[str, Any]:
    return {
        "queue": row.queue,
        "family": row.family,
        "declared": row.declared,
        "override": row.override,
        "effective": effective_limits(row.declared, row.override),
        "running": None if row.keyed else row.running,
        "waiting": None if row.keyed else row.waiting,
        "keys_waiting": row.keys_waiting if row.keyed else None,
    }


def _worker_queues(info: str) -> list[str]:
    """The queues a worker's registration names, each partition of a partitioned one too."""
    try:
        record = json.loads(info)
        queues, parts = record.get("queues"), record.get("partitions")
    except (ValueError, AttributeError):
        return []
    names = [q for q in queues if isinstance(q, str)] if isinstance(queues, dict) else []
    return names + ([p for p in parts if isinstance(p, str)] if isinstance(parts, list) else [])


async def _known_queues(
    broker: Broker, args: argparse.Namespace, queue: str | None = None
) -> list[str]:
    """``queue`` (default ``--queue``), else every queue known: enqueued to, served by a live
    worker (which declared its limits there), or used by ``--app``'s tasks. A partitioned
    queue stands for each of its partitions known so (a worker serving it registers every
    partition, enqueued to or not)."""
    queue = queue or args.queue
    queues = set(await broker.queues())
    for _, info, _ in await broker.workers():
        queues.update(_worker_queues(info))
    if args.app:
        app = load_app(args.app)
        for queue in app.queues():
            queues.update(app.partitions.names(queue))
    # A partitioned queue stands for each of its partitions (where its limits live).
    grouped = by_logical(queues)
    if queue:
        return [queue] if "#" in queue else grouped.get(queue, [queue])
    return [part for parts in grouped.values() for part in parts]


def _whole(option: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        off = " or off" if option != "burst" else ""
        raise UsageError(f"{option} must be a whole number >= 0{off}, got {value!r}")
    return n


def limit_override(options: Sequence[str]) -> dict[str, int | None]:
    """The settings parts ``asyncq limits set`` writes for ``options`` (``OPTION=VALUE``);
    a part mapped to None is dropped from the override (a rate turned off needs no period).

    Raises:
        UsageError: A malformed, unknown, repeated or bad option, or none.
    """
    given: dict[str, str] = {}
    for text in options:
        option, eq, value = text.partition("=")
        if not eq or not value:
            raise UsageError(f"asyncq limits set takes OPTION=VALUE, got {text!r}")
        if option not in LIMIT_OPTIONS:
            raise UsageError(
                f"asyncq limits set has no option {option!r}{suggest(option, LIMIT_OPTIONS)}; "
                f"options: {', '.join(LIMIT_OPTIONS)}"
            )
        if option in given:
            raise UsageError(f"asyncq limits set: {option} given twice")
        given[option] = value
    if not given:
        raise UsageError("asyncq limits set needs OPTION=VALUE: " + ", ".join(LIMIT_OPTIONS))
    rate, conc, burst = (given.get(o) for o in ("rate_limit", "concurrency_limit", "burst"))
    if burst is not None and rate in (None, "off"):
        raise UsageError("burst goes with rate_limit: give both, as rate_limit=50/s burst=2")
    parts: dict[str, int | None] = {}
    if rate == "off":
        parts.update(r=-1, p=None, b=None)
    elif rate is not None:
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise UsageError(f"rate_limit: {exc}") from None
        parts.update(settings_parts(rate, _whole("burst", burst or "0")))
    if conc == "off":
        parts["c"] = -1
    elif conc is not None:
        parts.update(settings_parts(concurrency_limit=_whole("concurrency_limit", conc)))
    return parts


def limit_family(name: str, app: App | None, where: str) -> str:
    """The limiter family ``name`` stands for: a family as is, a task's its task-wide one.

    Raises:
        UsageError: ``app`` has no such task, or the task no task-wide limit.
    """
    if name.startswith(("@", "t:", "k:", "o:")):
        return name
    family = f"t:{name}"
    if app is not None:
        grouping = find_task(app, name, where).config.grouping
        families = sorted(grouping.families) if grouping is not None else []
        if family not in families:
            raise UsageError(
                f"task {name!r} has no task-wide limit (rate_limit=, concurrency_limit=); "
                f"its limiter families: {', '.join(families) or '(none)'}"
            )
    return family


async def _family_rows(broker: Broker, args: argparse.Namespace, family: str) -> list[LimitRow]:
    """The rows of ``family`` in the queues it is declared in, or in the one queue named
    (``--queue``, or the queue of a family ``@<queue>``) whether declared there or not.

    Raises:
        UsageError: No queue declares it and none was named.
    """
    queue = args.queue
    if family.startswith("@"):
        if queue and queue != family[1:]:
            raise UsageError(f"{family} is the limiter of queue {family[1:]!r}, not {queue!r}")
        queue = family[1:]
    parts = await _known_queues(broker, args, queue)
    rows = await limit_rows(broker, parts)
    mine = [r for r in rows if r.family == family]
    if mine or queue:
        return mine or [LimitRow(part, family, "", "", 0, 0, 0) for part in parts]
    known = sorted({r.family for r in rows})
    raise UsageError(
        f"no queue declares limiter family {family!r}{suggest(family, known)} (workers declare "
        f"their app's limits when they start; --queue Q sets it there anyway); "
        f"declared: {', '.join(known) or '(none)'}"
    )


async def _set_limits(broker: Broker, family: str, rows: list[LimitRow], options: list[str]) -> int:
    if family.startswith("o:"):
        raise UsageError(
            f"{family} is an ordered key's limiter (one job at a time per key): it takes "
            "no override"
        )
    new = limit_override(options)
    # The parts to change; the script merges them into the override (`-`: drop the part).
    change = " ".join(f"{k}={'-' if v is None else v}" for k, v in new.items())
    for row in rows:
        changed = await broker.set_limits(row.queue, "set", [(family, change)])
        after = [r for r in await limit_rows(broker, [row.queue]) if r.family == family]
        text = after[0].override if after else ""
        if not row.declared:
            print(
                f"note: no worker declared {family} in queue {row.queue!r} yet; the override "
                "applies to its jobs all the same",
                file=sys.stderr,
            )
        done = "set" if changed else "unchanged (already so)"
        shown = dataclasses.replace(row, override=text)
        print(
            f"{done}: {family} in queue {row.queue!r}, override {text}; in force: "
            f"{_effective_text(shown)}"
        )
    return 0


async def _clear_limits(broker: Broker, family: str, rows: list[LimitRow]) -> int:
    overridden = [r for r in rows if r.override]
    if not overridden:
        where = ", ".join(repr(r.queue) for r in rows)
        print(f"error: {family} has no override in queue(s) {where}", file=sys.stderr)
        return 1
    for row in overridden:
        await broker.set_limits(row.queue, "clear", [(family, "")])
        shown = dataclasses.replace(row, override="")
        print(
            f"cleared: {family} in queue {row.queue!r}, no override; in force, as declared: "
            f"{_effective_text(shown)}"
        )
    return 0


async def _limits(broker: Broker, args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.name or args.options:
            raise UsageError("asyncq limits [list] takes no name; did you mean limits set?")
        rows = await limit_rows(broker, await _known_queues(broker, args))
        if args.json:
            for row in rows:
                print(json.dumps(_limit_record(row)))
        elif not rows:
            print("no limits declared (workers declare their app's limits when they start)")
        else:
            head = ["queue", "family", "declared", "override", "effective", "running"]
            table = [[*head, "waiting", "keys waiting"], *map(_limit_cells, rows)]
            print("\n".join(_table(table, numeric=(5, 6, 7))))
        return 0
    if not args.name:
        raise UsageError(f"asyncq limits {args.action} needs a task or a limiter family")
    if args.action == "clear" and args.options:
        raise UsageError("asyncq limits clear takes no OPTION=VALUE: it drops the whole override")
    app = load_app(args.app) if args.app else None
    family = limit_family(args.name, app, args.app)
    rows = await _family_rows(broker, args, family)
    if args.action == "set":
        return await _set_limits(broker, family, rows, args.options)
    return await _clear_limits(broker, family, rows)


async def _scheduler(_: Broker, args: argparse.Namespace) -> int:
    app = load_app(args.target)
    if not app.schedules:
        raise UsageError(f"{args.target} declares no schedules (app.schedule(...))")
    stop = asyncio.Event()
    undo = on_stop_signals(asyncio.get_running_loop(), lambda _sig: stop.set())
    log.warning("scheduler: firing %d schedule(s) of %s", len(app.schedules), args.target)
    try:
        await Scheduler(app).run(stop)
    finally:
        undo()
    return 0


_COMMANDS: dict[str, Callable[[Broker, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "info": _info,
    "job": _job,
    "jobs": _jobs,
    "enqueue": _enqueue,
    "retry": _retry,
    "purge": _purge,
    "pause": _pause,
    "resume": _pause,
    "schedules": _schedules,
    "limits": _limits,
    "scheduler": _scheduler,
}


async def _admin(args: argparse.Namespace) -> int:
    configure_logging(args.log_level or ("info" if args.command == "scheduler" else "warning"))
    broker = _broker(args)
    try:
        return await _COMMANDS[args.command](broker, args)
    except AsyncqError as exc:
        raise AsyncqError(f"{redact(broker.url)}: {exc}") from exc


def _confirm_purge(args: argparse.Namespace) -> int | None:
    """Ask before purging; None to go ahead, else the exit code."""
    if args.yes:
        return None
    if not sys.stdin.isatty():
        # Nobody can answer (a script, a pipe, cron): never delete on an unanswered question.
        print(
            "error: purge asks for confirmation; pass --yes when not at a terminal", file=sys.stderr
        )
        return 2
    answer = input(f"delete every queued, scheduled and dead job of {args.queue!r}? [y/N] ")
    if answer.strip().lower() != "y":
        print("nothing deleted")
        return 1
    return None


def _dashboard(args: argparse.Namespace) -> int:
    try:
        from .dashboard import serve  # noqa: PLC0415 (an optional extra)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        serve(
            load_app(args.app) if args.app else args.url,
            host=args.host,
            port=args.port,
            token=args.token,
            show_args=args.show_args,
        )
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def admin_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asyncq``."""
    parser = admin_parser()
    args, extra = parser.parse_known_args(argv)
    # `limits set NAME --queue Q rate_limit=50/s`: OPTION=VALUE after an option is still one.
    if args.command == "limits" and not any(e.startswith("-") for e in extra):
        args.options += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    def main() -> int:
        if args.command == "dashboard":
            return _dashboard(args)
        if args.command == "purge" and (refused := _confirm_purge(args)) is not None:
            return refused
        return _run(_admin, args)

    return _quiet_on_broken_pipe(main)
