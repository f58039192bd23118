"""asyncq in a FastAPI service (docs/guides/fastapi.md).

Two processes share one Redis: the web app enqueues, ``asyncq-worker`` runs the jobs::

    export ASYNCQ_URL=redis://127.0.0.1:6379/0 EVENTS_FILE=/tmp/events.ndjson
    asyncq-worker examples.fastapi_app:app                 # one or more, any host
    uvicorn examples.fastapi_app:api --port 8000           # the web app

    curl -X POST localhost:8000/summaries -H 'content-type: application/json' \\
         -d '{"text": "to be or not to be", "top": 2}'     # {"id": "...", "queue": "web"}
    curl 'localhost:8000/jobs/ID/result?timeout=5'          # waits for the result
    curl localhost:8000/jobs/ID                              # state, result, error now
    curl -X POST localhost:8000/events -d '{"kind": "signup", "data": {"user": 7}}' \\
         -H 'content-type: application/json'                # a line in $EVENTS_FILE
    curl 'localhost:8000/jobs?state=queued&limit=50'         # pages of waiting jobs

``ASYNCQ_URL`` defaults to ``redis://127.0.0.1:6379/0`` (a ``memory://`` broker lives in one
process, so the worker would never see the web app's jobs). With ``ASYNCQ_EMBEDDED_WORKER=1``
the web app also runs a worker in its own process, handy on a laptop; in production run
``asyncq-worker`` processes instead, so web and job load scale apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

import asyncq

QUEUE = "web"

app = asyncq.App(os.environ.get("ASYNCQ_URL", "redis://127.0.0.1:6379/0"), default_queue=QUEUE)


# ---- tasks (run by the worker) ------------------------------------------------------------------


@app.task(name="web.summarize", timeout=30)
async def summarize(text: str, top: int = 3) -> dict[str, Any]:
    """The ``top`` most common words of ``text`` and the word count."""
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    counts = Counter(w for w in words if w)
    return {"words": sum(counts.values()), "top": [w for w, _ in counts.most_common(top)]}


def events_file() -> str:
    """Where ``record_event`` appends: ``$EVENTS_FILE`` of the worker, never a request's path."""
    return os.environ.get("EVENTS_FILE", "events.ndjson")


def append_line(path: str, line: bytes) -> None:
    """Append one complete line to ``path``, safe with any number of concurrent writers.

    Why no two lines ever interleave or overwrite each other, whether the writers are threads
    of one worker or several worker processes:

    - ``O_APPEND`` makes the kernel move to the end of the file and write in one step, so a
      writer never writes at an offset another writer has already used (with a plain
      ``open(path, "a")`` this holds too, but a buffered file object may split a long line into
      several ``write()`` calls, and then lines of two writers can interleave).
    - The whole line goes out in one ``os.write`` while an exclusive ``flock`` is held on the
      file: a short write (a full disk, a signal) is finished under the lock by the loop below,
      so no other writer can put its line in the middle of this one.

    Readers see whole lines, except possibly a last one a writer is adding right now (or one
    cut short by a full disk): skip a final line without its newline. ``flock`` is advisory and
    local: every writer must go through this function, and the file must be on a local file
    system (not NFS).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


@app.task(name="web.record_event", retries=3)
def record_event(kind: str, data: dict[str, Any]) -> str:
    """Append the event to the NDJSON file as one line; a plain function, so it runs in the
    worker's thread pool (blocking file I/O is fine there).

    Delivery is at-least-once: a worker that dies after the write but before its ack runs the
    job again elsewhere, and the line is written twice. Each line carries the job id so a reader
    can drop such repeats.
    """
    job = asyncq.current_job()
    record = {"job": job.job_id, "kind": kind, "data": data, "pid": os.getpid()}
    append_line(events_file(), (json.dumps(record, separators=(",", ":")) + "\n").encode())
    return job.job_id


# ---- the HTTP API -------------------------------------------------------------------------------


class SummaryIn(BaseModel):
    text: str = Field(min_length=1, max_length=100_000)
    top: int = Field(default=3, ge=1, le=50)


class EventIn(BaseModel):
    kind: str = Field(min_length=1, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)


class JobCreated(BaseModel):
    id: str
    queue: str


class JobView(BaseModel):
    id: str
    state: str
    result: Any = None
    error: dict[str, str] | None = None
    attempts: int = 0


class JobRow(BaseModel):
    id: str
    task: str | None
    state: str
    enqueued_at: float
    attempts: int


class JobPage(BaseModel):
    jobs: list[JobRow]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: end")


Listable = Literal["queued", "scheduled", "running", "dead"]


def view_of(info: asyncq.JobInfo) -> JobView:
    result = info.result if info.state == "succeeded" else None
    return JobView(
        id=info.id, state=info.state, result=result, error=info.error, attempts=info.attempts
    )


async def list_jobs(queue: str, state: str, cursor: str | None, limit: int) -> JobPage:
    """One page of the jobs of ``queue`` in ``state`` (``queued``, ``scheduled``, ``running`` or
    ``dead``), and the cursor of the next page.

    Built on the broker's bounded listing: ``Broker.job_ids(queue, state, offset, count)`` reads
    one range of the state's sorted set (``ZRANGE`` of ``count`` entries: never ``KEYS``, never
    the whole set), and ``Broker.jobs`` reads those records in one round trip; the dashboard and
    ``asyncq jobs`` list the same way. The cursor is the offset of the next page. It is a
    position, so on a queue that moves while you page (jobs start, new ones arrive ahead by
    priority), a job may show on two pages or on none; a queue nothing consumes (a paused
    queue, the dead-letter set) pages exactly. Queues with partitions (``App(partitions=)``)
    need one walk per partition, which this example does not do.

    Raises:
        HTTPException: A malformed cursor (400).
    """
    try:
        offset = int(cursor or 0)
    except ValueError:
        raise HTTPException(400, f"bad cursor {cursor!r}") from None
    if offset < 0:
        raise HTTPException(400, f"bad cursor {cursor!r}")
    # One more id than asked for says whether a next page exists, without another round trip.
    ids = await app.broker.job_ids(queue, state, offset, limit + 1)
    more, ids = len(ids) > limit, ids[:limit]
    infos = await app.broker.jobs(queue, ids) if ids else []
    rows = [
        JobRow(id=i.id, task=i.task, state=i.state, enqueued_at=i.enqueued_at, attempts=i.attempts)
        for i in infos
        if i is not None  # ended and expired between the two reads
    ]
    return JobPage(jobs=rows, next_cursor=str(offset + len(ids)) if more else None)


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Check the broker before taking requests; run an embedded worker when asked to.

    An App holds no connection to open or close by hand: its broker connects on first use and
    reconnects by itself. Asking the broker for its clock here makes a wrong ``ASYNCQ_URL`` fail
    the start-up (uvicorn exits with the error) instead of the first request.
    """
    await asyncio.wait_for(app.broker.now(), 10)
    worker: asyncq.Worker | None = None
    running: asyncio.Future[None] | None = None
    if os.environ.get("ASYNCQ_EMBEDDED_WORKER") == "1":
        worker = app.worker(handle_signals=False)  # uvicorn handles the signals
        running = asyncio.ensure_future(worker.run())
    try:
        yield
    finally:
        if worker is not None and running is not None:
            worker.stop()  # lets running jobs finish (grace), hands the rest back
            await running


api = FastAPI(title="asyncq example", lifespan=lifespan)


@api.post("/summaries", status_code=202)
async def create_summary(body: SummaryIn) -> JobCreated:
    # Plain values, not the pydantic model: the job payload holds Python builtins only.
    job = await summarize.enqueue(body.text, top=body.top)
    return JobCreated(id=job.id, queue=job.queue)


@api.post("/events", status_code=202)
async def create_event(body: EventIn) -> JobCreated:
    job = await record_event.enqueue(body.kind, body.model_dump(mode="json")["data"])
    return JobCreated(id=job.id, queue=job.queue)


@api.get("/jobs")
async def jobs(
    state: Listable = "queued",
    cursor: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> JobPage:
    return await list_jobs(QUEUE, state, cursor, limit)


@api.get("/jobs/{job_id}")
async def job_status(job_id: str) -> JobView:
    info = await app.job(job_id).info()
    if info is None:
        raise HTTPException(404, f"no job {job_id} (never enqueued, or its record expired)")
    return view_of(info)


@api.get("/jobs/{job_id}/result")
async def job_result(job_id: str, timeout: float = Query(default=10.0, gt=0, le=60)) -> JobView:
    """Wait up to ``timeout`` seconds for the job to end; 504 when it has not by then."""
    handle = app.job(job_id)
    try:
        await handle.result(timeout=timeout)
    except asyncq.ResultTimeout:
        raise HTTPException(504, f"job {job_id} not finished after {timeout:g}s") from None
    except asyncq.JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    except (asyncq.JobFailed, asyncq.JobCancelled):
        pass  # ended without a result: the view below carries its state and error
    info = await handle.info()
    if info is None:  # expired in between
        raise HTTPException(404, f"no job {job_id}")
    return view_of(info)
