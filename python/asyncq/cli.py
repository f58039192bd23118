"""Command-line entry points: ``asyncq-worker`` runs a worker, ``asyncq`` administers queues."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ._core import Broker, __version__
from .app import App
from .errors import AsyncqError
from .log import configure_logging

log = logging.getLogger("asyncq.cli")

DEFAULT_URL = "redis://localhost:6379/0"


class UsageError(Exception):
    """A problem with what the user typed; printed as one line."""


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


def parse_queues(spec: str | None, default: int) -> dict[str, int] | None:
    """Parse ``emails=20,default=5`` (a bare name gets ``default`` concurrency).

    Args:
        spec: The ``-q`` value, or None.
        default: Concurrency for names without ``=N``.

    Returns:
        ``{queue: concurrency}``, or None when no spec was given.

    Raises:
        UsageError: The spec is malformed.
    """
    if not spec:
        return None
    queues: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, num = part.strip().partition("=")
        if not name or any(c in name for c in "{} "):
            raise UsageError(f"bad queue spec {part!r}: expected name or name=concurrency")
        try:
            n = int(num) if sep else default
        except ValueError:
            raise UsageError(f"bad queue spec {part!r}: {num!r} is not a number") from None
        if n < 1:
            raise UsageError(f"bad queue spec {part!r}: concurrency must be >= 1")
        queues[name] = n
    return queues


def load_config(path: str | None) -> dict[str, Any]:
    """Read the ``[worker]`` table (or the top level) of a TOML config file.

    Raises:
        UsageError: The file is missing or invalid.
    """
    if path is None:
        return {}
    if sys.version_info < (3, 11):
        raise UsageError("--config needs Python 3.11+ (tomllib)")
    tomllib: Any = importlib.import_module("tomllib")

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config {path!r}: {exc}") from exc
    section = data.get("worker", data)
    return dict(section) if isinstance(section, dict) else {}


def _run(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace
) -> int:
    debug = getattr(args, "log_level", "info") == "debug"
    try:
        return asyncio.run(main(args))
    except (UsageError, AsyncqError, ValueError, TypeError) as exc:
        if debug:
            raise
        # One line: some driver errors span several (e.g. a non-Redis server's reply).
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# ---- asyncq-worker ---------------------------------------------------------------------------


def worker_parser() -> argparse.ArgumentParser:
    """The ``asyncq-worker`` argument parser."""
    p = argparse.ArgumentParser(prog="asyncq-worker", description="Run an asyncq worker.")
    p.add_argument("app", nargs="?", help="the App to serve, as package.module:app")
    p.add_argument("-q", "--queues", help="queues and concurrency: emails=20,default=5")
    p.add_argument("-c", "--concurrency", type=int, help="jobs at once per queue (default 50)")
    p.add_argument("--threads", type=int, help="threads for sync tasks")
    p.add_argument("--grace", type=float, help="seconds to finish jobs on shutdown (default 30)")
    p.add_argument(
        "--prefetch",
        action="store_true",
        default=None,
        help="lease the next batch while this one runs (for short jobs)",
    )
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default=None, choices=["text", "json"])
    p.add_argument("--config", help="TOML file with a [worker] table of these options")
    p.add_argument("--version", action="version", version=f"asyncq {__version__}")
    return p


async def _worker(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    configure_logging(
        args.log_level or cfg.get("log_level", "info"),
        args.log_format or cfg.get("log_format", "text"),
    )
    app_path = args.app or cfg.get("app")
    if not app_path:
        raise UsageError("no app given: asyncq-worker package.module:app")
    app = load_app(app_path)
    concurrency = int(args.concurrency or cfg.get("concurrency", 50))
    queues = parse_queues(args.queues or cfg.get("queues"), concurrency)
    worker = app.worker(
        queues,
        concurrency=concurrency,
        threads=args.threads or cfg.get("threads"),
        grace=float(args.grace if args.grace is not None else cfg.get("grace", 30.0)),
        prefetch=bool(args.prefetch if args.prefetch is not None else cfg.get("prefetch", False)),
    )
    try:
        await worker.run()
    except AsyncqError as exc:
        raise AsyncqError(f"cannot reach broker {app.url}: {exc}") from exc
    return 0


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asyncq-worker``."""
    args = worker_parser().parse_args(argv)
    return _run(_worker, args)


# ---- asyncq (admin) ----------------------------------------------------------------------------


def admin_parser() -> argparse.ArgumentParser:
    """The ``asyncq`` argument parser."""
    p = argparse.ArgumentParser(prog="asyncq", description="Inspect and manage asyncq queues.")
    p.add_argument(
        "--url",
        default=os.environ.get("ASYNCQ_URL", DEFAULT_URL),
        help="broker URL (default $ASYNCQ_URL or %(default)s)",
    )
    p.add_argument("--app", help="take the broker URL from this App (package.module:app)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"asyncq {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="queues with counts per state, and live workers")
    job = sub.add_parser("job", help="show one job")
    job.add_argument("id")
    job.add_argument("--queue", help="its queue (default: search every queue)")
    enq = sub.add_parser("enqueue", help="enqueue a job by task name")
    enq.add_argument("task", help="registered task name, e.g. myapp.tasks:send_email")
    enq.add_argument("--args", default="[]", help="JSON list of positional arguments")
    enq.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    enq.add_argument("--queue", default="default")
    enq.add_argument("--delay", type=float)
    enq.add_argument("--priority", type=int, default=0)
    enq.add_argument("--retries", type=int, default=0)
    retry = sub.add_parser("retry", help="move dead-lettered jobs back to their queue")
    retry.add_argument("queue")
    retry.add_argument("ids", nargs="*", help="job ids (default: all)")
    purge = sub.add_parser("purge", help="delete queued, scheduled and dead jobs of a queue")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return p


def _broker(args: argparse.Namespace) -> Broker:
    return load_app(args.app).broker if args.app else Broker(args.url)


async def _info(broker: Broker, _: argparse.Namespace) -> int:
    queues = await broker.queues()
    cols = ("scheduled", "queued", "running", "dead", "succeeded_total", "failed_total")
    print(f"{'queue':<24}" + "".join(f"{c:>16}" for c in cols))
    for queue in sorted(queues):
        counts = await broker.counts(queue)
        print(f"{queue:<24}" + "".join(f"{counts.get(c, 0):>16}" for c in cols))
    workers = await broker.workers()
    print(f"\nworkers: {len(workers)}")
    for wid, info, seen in workers:
        print(f"  {wid}  {info}  last seen {seen:.0f}")
    return 0


async def _job(broker: Broker, args: argparse.Namespace) -> int:
    queues = [args.queue] if args.queue else sorted(await broker.queues())
    for queue in queues:
        info = await broker.job(queue, args.id)
        if info is not None:
            out = {
                "id": info.id,
                "queue": info.queue,
                "task": info.task,
                "state": info.state,
                "attempts": info.attempts,
                "max_attempts": info.max_attempts,
                "priority": info.priority,
                "enqueued_at": info.enqueued_at,
                "started_at": info.started_at,
                "finished_at": info.finished_at,
                "worker": info.worker,
                "result": info.result,
                "error": info.error,
            }
            print(json.dumps(out, indent=2, default=repr))
            return 0
    raise UsageError(f"no job {args.id} in queue(s) {', '.join(queues) or '(none)'}")


async def _enqueue(broker: Broker, args: argparse.Namespace) -> int:
    try:
        pos, kw = json.loads(args.args), json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args/--kwargs must be JSON: {exc}") from exc
    if not isinstance(pos, list) or not isinstance(kw, dict):
        raise UsageError("--args must be a JSON list and --kwargs a JSON object")
    opts = (args.retries + 1, None, args.priority, args.delay, None, None, 86400.0, 1 << 20)
    ids = await broker.enqueue(args.queue, args.task, [], [(tuple(pos), kw)], opts)
    print(ids[0][0])
    return 0


async def _retry(broker: Broker, args: argparse.Namespace) -> int:
    n = await broker.retry_dead(args.queue, args.ids or None)
    print(f"moved {n} job(s) from the dead-letter queue back to {args.queue!r}")
    return 0


async def _purge(broker: Broker, args: argparse.Namespace) -> int:
    n = await broker.purge(args.queue)
    print(f"deleted {n} job(s) from {args.queue!r}")
    return 0


_COMMANDS: dict[str, Callable[[Broker, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "info": _info,
    "job": _job,
    "enqueue": _enqueue,
    "retry": _retry,
    "purge": _purge,
}


async def _admin(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    broker = _broker(args)
    try:
        return await _COMMANDS[args.command](broker, args)
    except AsyncqError as exc:
        raise AsyncqError(f"{broker.url}: {exc}") from exc


def admin_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asyncq``."""
    args = admin_parser().parse_args(argv)
    if args.command == "purge" and not args.yes and sys.stdin.isatty():
        answer = input(f"delete every queued, scheduled and dead job of {args.queue!r}? [y/N] ")
        if answer.strip().lower() != "y":
            print("nothing deleted")
            return 1
    return _run(_admin, args)
