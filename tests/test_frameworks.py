"""The framework examples (examples/fastapi_app.py, examples/django_app/) work for real: a
private redis-server, real workers (in this process or ``asyncq-worker`` / ``manage.py``
subprocesses), requests through the frameworks' own ASGI apps."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import asyncq
from tests.conftest import RedisServer
from tests.procutil import PYTHONPATH, ROOT, WorkerProc, await_until

pytest.importorskip("fastapi")

from examples import fastapi_app as fa  # after the skip: it imports FastAPI

MANAGE = ROOT / "examples" / "django_app" / "manage.py"


@pytest.fixture(scope="module")
def web_redis() -> Iterator[RedisServer]:
    """A Redis of this module's own: the tests empty it, which the session's shared one
    (other suites' workers and records on it) must not be."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(web_redis: RedisServer) -> str:
    """This module's Redis, emptied: every test starts with no jobs."""
    web_redis.cli("FLUSHALL")
    return web_redis.url


@pytest.fixture
def web_app(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> asyncq.App:
    """The example's App, pointed at the private Redis for this test."""
    monkeypatch.setattr(fa.app, "broker", fa.app.broker.with_url(redis_url))
    monkeypatch.setattr(fa.app, "url", redis_url)
    return fa.app


@pytest.fixture
async def client(web_app: asyncq.App) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the FastAPI app, with its lifespan run around the test (httpx's ASGI
    transport sends no lifespan events itself)."""
    async with (
        fa.api.router.lifespan_context(fa.api),
        httpx.AsyncClient(transport=httpx.ASGITransport(fa.api), base_url="http://test") as c,
    ):
        yield c


def worker_env(url: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, ASYNCQ_URL=url, PYTHONPATH=PYTHONPATH, **extra)


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- FastAPI ------------------------------------------------------------------------------------


async def test_fastapi_enqueue_wait_and_status_with_the_embedded_worker(
    web_app: asyncq.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCQ_EMBEDDED_WORKER", "1")  # the lifespan runs a worker
    async with (
        fa.api.router.lifespan_context(fa.api),
        httpx.AsyncClient(transport=httpx.ASGITransport(fa.api), base_url="http://t") as c,
    ):
        r = await c.post("/summaries", json={"text": "to be, or not to be!", "top": 2})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["queue"] == "web"

        r = await c.get(f"/jobs/{job_id}/result", params={"timeout": 20})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "id": job_id,
            "state": "succeeded",
            "result": {"words": 6, "top": ["to", "be"]},
            "error": None,
            "attempts": 1,
        }
        r = await c.get(f"/jobs/{job_id}")
        assert r.json()["state"] == "succeeded"
        assert r.json()["result"] == {"words": 6, "top": ["to", "be"]}

        # A job that cannot end within the wait: 504, and its status says it waits.
        later = await fa.summarize.options(delay=3600).enqueue("later")
        r = await c.get(f"/jobs/{later.id}/result", params={"timeout": 0.2})
        assert r.status_code == 504
        assert (await c.get(f"/jobs/{later.id}")).json()["state"] == "scheduled"

        assert (await c.get("/jobs/nosuchjob")).status_code == 404
        assert (await c.get("/jobs/nosuchjob/result?timeout=1")).status_code == 404
        # pydantic refuses a bad body before anything is enqueued.
        assert (await c.post("/summaries", json={"text": ""})).status_code == 422
        assert (await c.post("/summaries", json={"text": "x", "top": 0})).status_code == 422


async def test_two_worker_processes_append_ndjson_without_losing_a_line(
    client: httpx.AsyncClient,
    redis_url: str,
    tmp_path: Path,
    procs: list[WorkerProc],
) -> None:
    events = tmp_path / "events.ndjson"
    env = worker_env(redis_url, EVENTS_FILE=str(events))
    for n in range(2):
        # -c 8: neither worker leases the whole backlog at once, so both write.
        procs.append(
            WorkerProc(tmp_path, env, "-c", "8", name=f"w{n}", app="examples.fastapi_app:app")
        )
    for p in procs:
        p.started(timeout=30)

    total = 200
    sem = asyncio.Semaphore(20)

    def data(seq: int) -> dict[str, Any]:
        # Every 10th line is ~100 KB, far past what one pipe write or page keeps whole: lines
        # that long interleave unless each goes out as one locked, appended write.
        return {"seq": seq, "pad": "x" * 100_000} if seq % 10 == 0 else {"seq": seq}

    async def post(seq: int) -> str:
        async with sem:
            r = await client.post("/events", json={"kind": "click", "data": data(seq)})
            assert r.status_code == 202, r.text
            return str(r.json()["id"])

    ids = await asyncio.gather(*(post(seq) for seq in range(total)))

    async def all_written() -> bool:
        # Newlines, not parsed lines: a long line may be half written while this reads.
        return events.exists() and events.read_bytes().count(b"\n") >= total

    # Generous: two worker processes and this one share two loaded cores.
    await await_until(all_written, 30, f"{total} lines in {events}")

    raw = events.read_bytes()
    assert raw.endswith(b"\n")
    lines = read_ndjson(events)  # every line parses, or this raises
    assert len(lines) == total
    assert sorted(line["data"]["seq"] for line in lines) == list(range(total))
    assert sorted(line["job"] for line in lines) == sorted(ids)
    assert {line["kind"] for line in lines} == {"click"}
    assert all(line["data"] == data(line["data"]["seq"]) for line in lines)
    writers = {line["pid"] for line in lines}
    assert writers <= {p.pid for p in procs}
    assert len(writers) == 2, "both worker processes should have written"


async def test_listing_walks_every_queued_job_once_by_cursor(client: httpx.AsyncClient) -> None:
    # No worker: the jobs stay queued, so the positions the cursor counts do not move.
    total, page_size = 130, 25
    sem = asyncio.Semaphore(20)

    async def post(n: int) -> str:
        async with sem:
            r = await client.post("/summaries", json={"text": f"job {n}"})
            return str(r.json()["id"])

    ids = await asyncio.gather(*(post(n) for n in range(total)))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"state": "queued", "limit": page_size}
        if cursor is not None:
            params["cursor"] = cursor
        r = await client.get("/jobs", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert len(page["jobs"]) <= page_size
        assert all(j["state"] == "queued" and j["task"] == "web.summarize" for j in page["jobs"])
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20, "the cursor never reached the end"
    assert pages == 6  # 5 full pages and one of 5
    assert len(seen) == len(set(seen)) == total
    assert set(seen) == set(ids)

    empty = (await client.get("/jobs", params={"state": "dead"})).json()
    assert empty == {"jobs": [], "next_cursor": None}
    assert (await client.get("/jobs", params={"cursor": "x"})).status_code == 400
    assert (await client.get("/jobs", params={"state": "succeeded"})).status_code == 422


async def test_the_guides_memory_recipe(asyncq_app_factory: Any) -> None:
    """What docs/guides/fastapi.md shows for a test suite: the app on asyncq.testing's
    memory:// broker, the endpoint called, the job run by a drain."""
    app = asyncq_app_factory(fa.app)
    async with (
        fa.api.router.lifespan_context(fa.api),
        httpx.AsyncClient(transport=httpx.ASGITransport(fa.api), base_url="http://t") as c,
    ):
        r = await c.post("/summaries", json={"text": "a b a"})
        [job] = await app.enqueued(fa.summarize)
        assert job.id == r.json()["id"] and job.args == ("a b a",)
        assert await app.drain() == 1
        status = (await c.get(f"/jobs/{job.id}")).json()
        assert status["result"] == {"words": 3, "top": ["a", "b"]}


# ---- Django -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private Redis and a migrated scratch database; Django set up in this process for them
    (once: Django's settings cannot be changed after setup)."""
    pytest.importorskip("django")
    server = RedisServer()
    db = tmp_path_factory.mktemp("django") / "db.sqlite3"
    env = worker_env(
        server.url,
        DJANGO_DB_PATH=str(db),
        DJANGO_SETTINGS_MODULE="examples.django_app.project.settings",
    )
    try:
        migrate = subprocess.run(
            [sys.executable, str(MANAGE), "migrate", "-v", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr
        with pytest.MonkeyPatch.context() as mp:
            for k in ("ASYNCQ_URL", "DJANGO_DB_PATH", "DJANGO_SETTINGS_MODULE"):
                mp.setenv(k, env[k])
            import django  # noqa: PLC0415

            django.setup()
            yield env
    finally:
        server.stop()


class ManageWorker(WorkerProc):
    """``manage.py asyncq_worker`` as a subprocess (WorkerProc's log and start checks)."""

    def __init__(self, tmp: Path, env: dict[str, str], *args: str) -> None:
        self.log_path = tmp / "manage-worker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(MANAGE), "asyncq_worker", "--", *args],
                cwd=tmp,  # manage.py finds the project from anywhere
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )


async def test_django_views_enqueue_sync_and_the_management_command_runs_the_jobs(
    django_env: dict[str, str], tmp_path: Path, procs: list[WorkerProc]
) -> None:
    from examples.django_app.project.asgi import application  # noqa: PLC0415

    # Django types the scope as a dict, httpx as any mutable mapping: the same thing at run time.
    transport = httpx.ASGITransport(application)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        # Enqueued before any worker runs: the job waits in Redis, not in the web process.
        r = await c.post("/reports/", json={"title": "Hamlet", "text": "to be or not to be"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["queue"] == "reports"
        status = (await c.get(f"/jobs/{job_id}/")).json()
        assert status["state"] == "queued"
        r = await c.get(f"/jobs/{job_id}/result/", params={"timeout": "0.2"})
        assert r.status_code == 504

        procs.append(ManageWorker(tmp_path, django_env, "-c", "4", "--grace", "5"))
        procs[-1].started(timeout=30)

        # result_sync in the sync view waits for the worker (generous: a loaded machine).
        r = await c.get(f"/jobs/{job_id}/result/", params={"timeout": "25"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["state"] == "succeeded"
        result = body["result"]
        assert result["words"] == 6 and result["top"] == ["to", "be", "or"]

        # The worker saved the row through the ORM; the web process reads it back.
        r = await c.get(f"/reports/{result['report']}/")
        assert r.json() == {
            "id": result["report"],
            "title": "Hamlet",
            "words": 6,
            "top": result["top"],
        }

        status = (await c.get(f"/jobs/{job_id}/")).json()
        assert status["state"] == "succeeded" and status["attempts"] == 1
        assert (await c.post("/reports/", content=b"nope")).status_code == 400
        assert (await c.get("/jobs/nosuchjob/")).status_code == 404

    # SIGTERM: the command is asyncq-worker underneath, so it stops gracefully with code 0.
    worker = procs[-1]
    worker.proc.terminate()
    assert worker.wait(20) == 0, worker.log()
    assert "stopped: WorkerStats(succeeded=1" in worker.log()


def test_django_guides_memory_recipe(django_env: dict[str, str], asyncq_app_factory: Any) -> None:
    """What docs/guides/django.md shows for a test suite: the project's App on asyncq.testing's
    memory:// broker, a view called with Django's test client, the job run by a drain in this
    process (its ORM write goes to the scratch database)."""
    from django.test import Client  # noqa: PLC0415
    from examples.django_app.reports import tasks  # noqa: PLC0415
    from examples.django_app.reports.models import Report  # noqa: PLC0415

    app = asyncq_app_factory(tasks.app)
    client = Client(HTTP_HOST="localhost")
    r = client.post(
        "/reports/", {"title": "memo", "text": "a b a"}, content_type="application/json"
    )
    assert r.status_code == 202
    job_id = r.json()["id"]
    assert app.drain_sync() == 1
    report = Report.objects.get(job_id=job_id)
    assert (report.title, report.words, report.top) == ("memo", 3, ["a", "b"])
    assert client.get(f"/jobs/{job_id}/result/?timeout=1").json()["state"] == "succeeded"
