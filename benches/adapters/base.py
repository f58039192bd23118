"""The adapter contract.

An adapter module defines ``ADAPTER``, an instance of a subclass of :class:`Adapter`. It runs in
its library's interpreter (``venv``), inside a producer or worker subprocess started by
``benches/drive.py``. It registers the bodies of ``benches/bodies.py`` under their names and
implements what the library offers:

- ``enqueue_bulk(body, args_list)``: the library's bulk API (``None`` → ``supports_bulk = False``),
- ``enqueue_one(body, args, delay)``: one awaited enqueue (or ``enqueue_one_sync`` for libraries
  whose producer API is synchronous; the harness then uses 64 threads for "64 concurrent"),
- ``run_worker(spec)`` for in-process workers, or ``worker_argv(spec)`` for libraries whose
  recommended way to run a worker is their own CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerSpec:
    """What the harness asks of a worker: concurrency and thread-pool size.

    ``sync`` is True for W6 (plain functions): libraries whose concurrency *is* a thread pool
    (dramatiq, celery threads) then run ``threads`` threads instead of ``concurrency``.
    """

    concurrency: int = 100
    threads: int = 8
    sync: bool = False


class Adapter:
    name = "?"
    venv = "peers"  # main | peers | peers312
    supports_bulk = True
    supports_delay = True
    sync_producer = False
    package: str | None = None  # distribution name, for the version table
    notes: str = ""  # deviations from the library's defaults, for RESULTS.md

    async def open(self) -> None:
        """Connect the producer side."""

    async def close(self) -> None:
        """Disconnect the producer side."""

    async def enqueue_bulk(self, body: str, args_list: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    async def enqueue_one(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        raise NotImplementedError

    def enqueue_one_sync(self, body: str, args: tuple[Any, ...], delay: float | None) -> None:
        raise NotImplementedError

    async def queue_size(self) -> int | None:
        """Jobs waiting, to verify W2's count; None when the library does not say."""
        return None

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        """A CLI command that runs the worker (cwd = repo root), or None to use run_worker."""
        return None

    async def run_worker(self, spec: WorkerSpec) -> None:
        raise NotImplementedError
