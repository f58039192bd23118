"""The web dashboard over HTTP: pages, JSON reads, paging and search, every action behind POST
and CSRF, token and auth callable, the loopback rule, redaction, "why waiting", partitioned
queues and the event stream. Real Redis and real workers throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import asyncq
from asyncq.dashboard import check_bind, create_app
from asyncq.dashboard._data import HIDDEN_SENSITIVE, HIDDEN_UNKNOWN, Source
from tests.conftest import RedisServer, free_port, make_app, running
from tests.dashutil import Served
from tests.procutil import ROOT, await_until, wait_until

pytest.importorskip("starlette")


def sample_app(url: str, queue: str, **kwargs: Any) -> asyncq.App:
    """An app with the tasks these tests use, under fixed names."""
    app = make_app(url, queue, **kwargs)

    @app.task(name="d:add")
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="d:boom")
    async def boom() -> None:
        raise RuntimeError("boom went the task")

    @app.task(name="d:sleep")
    async def sleep(seconds: float) -> str:
        asyncq.current_job().progress(0.5, "half way")
        await asyncio.sleep(seconds)
        return "slept"

    @app.task(name="d:secret", sensitive=True)
    async def secret(password: str) -> None:
        return None

    @app.task(name="d:masked", redact=lambda a, k: (("***",) * len(a), {**k, "card": "***"}))
    async def masked(user: str, card: str = "") -> None:
        return None

    @app.task(name="d:limited", concurrency_limit=1)
    async def limited(seconds: float) -> None:
        await asyncio.sleep(seconds)

    @app.task(name="d:flaky", retries=3, backoff=asyncq.Exponential(base=600, cap=600, jitter=0))
    async def flaky() -> None:
        raise ValueError("not yet")

    return app


@contextlib.asynccontextmanager
async def dashboard(
    target: str | asyncq.App, client: tuple[str, int] = ("127.0.0.1", 5000), **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a dashboard app (in this process, its lifespan run)."""
    app = create_app(target, refresh=0.1, **kwargs)
    transport = httpx.ASGITransport(app=app, client=client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c,
    ):
        yield c


async def act(c: httpx.AsyncClient, action: str, **fields: str) -> httpx.Response:
    """POST an action the way the page does: with the CSRF token of a page load."""
    if "asyncq_csrf" not in c.cookies:
        assert (await c.get("/")).status_code == 200
    token = c.cookies["asyncq_csrf"]
    return await c.post(f"/api/action/{action}", data=fields, headers={"X-CSRF-Token": token})


async def queue_row(c: httpx.AsyncClient, name: str) -> dict[str, Any]:
    snap = (await c.get("/api/overview", params={"fresh": "1"})).json()
    return next(q for q in snap["queues"] if q["name"] == name)


async def job_state(app: asyncq.App, queue: str, job_id: str) -> str | None:
    info = await app.broker.job(queue, job_id)
    return None if info is None else info.state


# ---- pages and reads -------------------------------------------------------------------------


async def test_page_static_files_and_overview(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    await app.tasks["d:add"].enqueue(1, 2)
    async with dashboard(app) as c:
        page = await c.get("/")
        assert page.status_code == 200
        assert '<base href="/">' in page.text
        assert 'name="csrf"' in page.text
        assert "asyncq_csrf" in c.cookies
        for name in ("app.js", "app.css"):
            assert (await c.get(f"/static/{name}")).status_code == 200
        row = await queue_row(c, queue)
        assert row["counts"]["queued"] == 1
        assert row["paused"] is False


async def test_workers_show_heartbeat_and_running_job(
    redis_server: RedisServer, queue: str
) -> None:
    app = sample_app(redis_server.url, queue)
    async with running(app) as worker, dashboard(app) as c:
        h = await app.tasks["d:sleep"].enqueue(30)
        await await_until(lambda: _is(app, queue, h.id, "running"), 15, "the sleep job to start")
        snap = (await c.get("/api/overview", params={"fresh": "1"})).json()
        me = next(w for w in snap["workers"] if w["id"] == worker.worker_id)
        assert me["last_seen"] > 0
        assert [r["id"] for r in me["running"]] == [h.id]
        assert (await act(c, "cancel", queue=queue, id=h.id)).status_code == 200


async def _is(app: asyncq.App, queue: str, job_id: str, state: str) -> bool:
    return await job_state(app, queue, job_id) == state


async def test_jobs_are_paged_by_cursor_without_repeats(
    redis_server: RedisServer, queue: str
) -> None:
    app = sample_app(redis_server.url, queue)
    handles = await app.tasks["d:add"].enqueue_many([((i, i), {}) for i in range(7)])
    async with dashboard(app) as c:
        seen, cursor, pages = [], "", 0
        while True:
            r = await c.get(
                "/api/jobs",
                params={"queue": queue, "state": "queued", "limit": 3, "cursor": cursor},
            )
            body = r.json()
            seen += [j["id"] for j in body["jobs"]]
            pages += 1
            if not body["cursor"]:
                break
            cursor = body["cursor"]
        assert sorted(seen) == sorted(h.id for h in handles)
        assert pages >= 3
        bad = await c.get("/api/jobs", params={"queue": queue, "state": "succeeded"})
        assert bad.status_code == 400 and "cannot list" in bad.json()["error"]
        bad = await c.get("/api/jobs", params={"queue": queue, "cursor": "x"})
        assert bad.status_code == 400


async def test_search_by_id_and_by_task(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    adds = await app.tasks["d:add"].enqueue_many([((i, 1), {}) for i in range(3)])
    await app.tasks["d:sleep"].enqueue(1)
    async with dashboard(app) as c:
        found = (await c.get("/api/jobs", params={"id": adds[1].id})).json()["jobs"]
        assert [(j["id"], j["queue"]) for j in found] == [(adds[1].id, queue)]
        assert (await c.get("/api/jobs", params={"id": "nope"})).json()["jobs"] == []
        r = await c.get("/api/jobs", params={"queue": queue, "state": "queued", "task": "sleep"})
        assert [j["task"] for j in r.json()["jobs"]] == ["d:sleep"]
        r = await c.get(
            "/api/jobs", params={"queue": queue, "state": "queued", "task": "d:add", "limit": 2}
        )
        first = r.json()
        r = await c.get(
            "/api/jobs",
            params={"queue": queue, "state": "queued", "task": "d:add", "cursor": first["cursor"]},
        )
        ids = [j["id"] for j in first["jobs"] + r.json()["jobs"]]
        assert sorted(ids) == sorted(h.id for h in adds)


async def test_job_detail_of_dead_and_succeeded_jobs(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    async with running(app), dashboard(app) as c:
        dead = await app.tasks["d:boom"].enqueue()
        ok = await app.tasks["d:sleep"].enqueue(0.01)
        await await_until(lambda: _is(app, queue, dead.id, "dead"), 15, "boom to die")
        assert await ok.result(timeout=15) == "slept"
        d = (await c.get("/api/job", params={"queue": queue, "id": dead.id})).json()
        assert d["job"]["state"] == "dead"
        assert d["job"]["attempts"] == 1
        assert d["job"]["error"]["type"] == "RuntimeError"
        assert "boom went the task" in d["job"]["error"]["traceback"]
        assert d["timeline"][0]["what"] == "enqueued"
        assert d["why"] == []
        s = (await c.get("/api/job", params={"queue": queue, "id": ok.id})).json()
        assert s["job"]["result"] == "slept"
        assert s["job"]["progress"][0]["message"] == "half way"
        assert any(e["what"].startswith("progress 50%") for e in s["timeline"])
        assert s["timeline"][-1]["what"] == "finished: succeeded"
        missing = await c.get("/api/job", params={"queue": queue, "id": "nope"})
        assert missing.status_code == 404


# ---- actions: POST + CSRF --------------------------------------------------------------------


async def test_actions_are_posts_that_need_the_csrf_token(
    redis_server: RedisServer, queue: str
) -> None:
    app = sample_app(redis_server.url, queue)
    await app.tasks["d:add"].enqueue(1, 1)
    async with dashboard(app) as c:
        assert (await c.get(f"/api/action/purge?queue={queue}")).status_code == 405
        await c.get("/")
        no_token = await c.post("/api/action/purge", data={"queue": queue})
        assert no_token.status_code == 403
        wrong = await c.post(
            "/api/action/purge", data={"queue": queue}, headers={"X-CSRF-Token": "a.b"}
        )
        assert wrong.status_code == 403
        # A token this server did not sign, in cookie and header alike, is refused too.
        c.cookies.set("asyncq_csrf", "made.up")
        forged = await c.post(
            "/api/action/purge", data={"queue": queue}, headers={"X-CSRF-Token": "made.up"}
        )
        assert forged.status_code == 403
        c.cookies.delete("asyncq_csrf")
        assert (await queue_row(c, queue))["counts"]["queued"] == 1
        # The form field works as well as the header.
        await c.get("/")
        token = c.cookies["asyncq_csrf"]
        r = await c.post("/api/action/purge", data={"queue": queue, "csrf": token})
        assert r.status_code == 200, r.text
        assert (await queue_row(c, queue))["counts"]["queued"] == 0
        assert (await act(c, "explode", queue=queue)).status_code == 404
        assert (await act(c, "purge")).status_code == 400


async def test_retry_one_dead_job_then_all(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    async with running(app):
        hs = [await app.tasks["d:boom"].enqueue() for _ in range(3)]
        for h in hs:
            await await_until(lambda h=h: _is(app, queue, h.id, "dead"), 15, "boom to die")
    async with dashboard(app) as c:
        r = await act(c, "retry", queue=queue, id=hs[0].id)
        assert r.json() == {"ok": True, "message": f"moved 1 dead job(s) back to {queue}"}
        assert await job_state(app, queue, hs[0].id) == "queued"
        r = await act(c, "retry", queue=queue)
        assert "moved 2 dead" in r.json()["message"]
        assert (await queue_row(c, queue))["counts"]["dead"] == 0


async def test_purge_a_queue(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    await app.tasks["d:add"].enqueue_many([((1, 1), {})] * 4)
    async with dashboard(app) as c:
        r = await act(c, "purge", queue=queue)
        assert r.json()["message"] == f"deleted 4 job(s) of {queue}"


async def test_cancel_a_queued_and_a_running_job(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    queued = await app.tasks["d:add"].options(delay=600).enqueue(1, 1)
    async with dashboard(app) as c:
        r = await act(c, "cancel", queue=queue, id=queued.id)
        assert r.json()["message"] == f"cancel {queued.id}: cancelled"
        assert await job_state(app, queue, queued.id) == "cancelled"
        async with running(app):
            h = await app.tasks["d:sleep"].enqueue(30)
            await await_until(lambda: _is(app, queue, h.id, "running"), 15, "the job to start")
            r = await act(c, "cancel", queue=queue, id=h.id)
            assert r.json()["message"] == f"cancel {h.id}: requested"
            await await_until(
                lambda: _is(app, queue, h.id, "cancelled"), 15, "the running job to stop"
            )


async def test_pause_and_resume_a_queue(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    async with dashboard(app) as c:
        assert (await act(c, "pause", queue=queue)).json()["message"] == f"paused {queue}"
        assert (await queue_row(c, queue))["paused"] is True
        async with running(app):
            h = await app.tasks["d:add"].enqueue(2, 3)
            d = (await c.get("/api/job", params={"queue": queue, "id": h.id})).json()
            assert d["why"][0]["kind"] == "paused"
            assert await job_state(app, queue, h.id) == "queued"
            assert (await act(c, "resume", queue=queue)).json()["message"] == f"resumed {queue}"
            assert await h.result(timeout=15) == 5
        assert (await queue_row(c, queue))["paused"] is False


async def test_delete_a_job(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    h = await app.tasks["d:add"].enqueue(1, 1)
    async with dashboard(app) as c:
        r = await act(c, "delete", queue=queue, id=h.id)
        assert r.json()["message"] == f"delete {h.id}: deleted"
        assert await app.broker.job(queue, h.id) is None
        r = await act(c, "delete", queue=queue, id=h.id)
        assert r.json()["message"] == f"delete {h.id}: missing"
        async with running(app):
            s = await app.tasks["d:sleep"].enqueue(30)
            await await_until(lambda: _is(app, queue, s.id, "running"), 15, "the job to start")
            r = await act(c, "delete", queue=queue, id=s.id)
            assert r.status_code == 400 and "cancel it first" in r.json()["error"]
            await act(c, "cancel", queue=queue, id=s.id)


async def test_pause_and_resume_a_schedule(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    s = app.schedule("nightly", "d:add", every=3600, args=(1, 2))
    await app.broker.sync_schedule(s.queue, s.name, s.definition())
    async with dashboard(app) as c:
        assert (await act(c, "schedule_pause", queue=queue, name="nightly")).status_code == 200
        snap = (await c.get("/api/overview", params={"fresh": "1"})).json()
        mine = [x for x in snap["schedules"] if x["queue"] == queue]
        assert [(x["name"], x["paused"]) for x in mine] == [("nightly", True)]
        assert mine[0]["definition"]["args"] == "1, 2"
        assert (await act(c, "schedule_resume", queue=queue, name="nightly")).status_code == 200
        r = await act(c, "schedule_pause", queue=queue, name="nope")
        assert r.status_code == 400


# ---- security --------------------------------------------------------------------------------


async def test_token_is_needed_by_pages_and_api(redis_server: RedisServer, queue: str) -> None:
    async with dashboard(redis_server.url, token="s3cret") as c:
        page = await c.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert (await c.get("/api/overview")).status_code == 401
        assert (await c.get("/static/app.js")).status_code == 200
        assert (await c.get("/login")).status_code == 200
        bearer = await c.get("/api/overview", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        wrong = await c.post("/login", data={"token": "guess"})
        assert wrong.status_code == 401
        right = await c.post("/login", data={"token": "s3cret"})
        assert right.status_code == 303
        assert "s3cret" not in right.headers["set-cookie"]
        assert (await c.get("/api/overview")).status_code == 200
        assert (await c.get("/")).status_code == 200


async def test_an_auth_callable_decides(redis_server: RedisServer) -> None:
    async def auth(request: Any) -> bool:
        return bool(request.headers.get("x-user") == "ada")

    async with dashboard(redis_server.url, auth=auth, client=("10.1.2.3", 4000)) as c:
        assert (await c.get("/api/overview")).status_code == 401
        assert (await c.get("/api/overview", headers={"x-user": "ada"})).status_code == 200


async def test_without_token_only_loopback_clients_are_answered(redis_server: RedisServer) -> None:
    async with dashboard(redis_server.url, client=("10.1.2.3", 4000)) as c:
        r = await c.get("/api/overview")
        assert r.status_code == 403 and "loopback" in r.json()["error"]
    async with dashboard(redis_server.url, client=("::1", 4000)) as c:
        assert (await c.get("/api/overview")).status_code == 200


def test_binding_beyond_loopback_needs_a_token(redis_server: RedisServer) -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "t")
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        check_bind("0.0.0.0", None)
    out = subprocess.run(
        [sys.executable, "-c", CLI, "--url", redis_server.url, "dashboard", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in out.stderr


CLI = "import sys; from asyncq.cli import admin_main; sys.exit(admin_main())"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ASYNCQ_DASHBOARD_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), str(ROOT)])
    return env


async def test_sensitive_and_redacted_args(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    src = Source(app)
    assert src.shown_args("d:secret", (("pw",), {}))["hidden"] == HIDDEN_SENSITIVE
    masked = src.shown_args("d:masked", (("ada",), {"card": "4111"}))
    assert masked == {"args": ["***"], "kwargs": {"card": "***"}, "hidden": None}
    plain = src.shown_args("d:add", ((1, 2), {}))
    assert plain == {"args": [1, 2], "kwargs": {}, "hidden": None}
    assert src.shown_args("other:task", ((1,), {}))["hidden"] == HIDDEN_UNKNOWN
    bare = Source(redis_server.url)
    assert bare.shown_args("d:add", ((1, 2), {}))["hidden"] == HIDDEN_UNKNOWN
    assert Source(redis_server.url, show_args=True).shown_args("d:add", ((1,), {}))["args"] == [1]
    h = await app.tasks["d:secret"].enqueue("hunter2")
    s = app.schedule("pw-rotation", "d:secret", every=3600, args=("hunter2",))
    await app.broker.sync_schedule(s.queue, s.name, s.definition())
    async with dashboard(app) as c:
        d = await c.get("/api/job", params={"queue": queue, "id": h.id})
        assert d.json()["args"]["hidden"] == HIDDEN_SENSITIVE
        assert "hunter2" not in d.text
        snap = await c.get("/api/overview", params={"fresh": "1"})
        assert "pw-rotation" in snap.text and "hunter2" not in snap.text


# ---- why is it still waiting? ----------------------------------------------------------------


async def why(c: httpx.AsyncClient, queue: str, job_id: str) -> list[str]:
    d = (await c.get("/api/job", params={"queue": queue, "id": job_id})).json()
    return [f"{w['kind']}: {w['text']}" for w in d["why"]]


async def test_why_waiting_names_delay_retry_worker_and_flow(
    redis_server: RedisServer, queue: str
) -> None:
    app = sample_app(redis_server.url, queue)
    delayed = await app.tasks["d:add"].options(delay=600).enqueue(1, 1)
    async with dashboard(app) as c:
        (reason,) = await why(c, queue, delayed.id)
        assert reason.startswith("delay: delayed: due at") and "(in 10m)" in reason
        queued = await app.tasks["d:add"].enqueue(1, 1)
        assert await why(c, queue, queued.id) == [f"no_worker: no live worker serves queue {queue}"]
        add = app.tasks["d:add"]
        flow = await asyncq.chain(add.s(1, 1).options(delay=600), add.s(2)).enqueue()
        child = flow.id
        reasons = await why(c, queue, child)
        assert reasons == ["dependency: a flow member: it waits for its parent jobs to finish"]
        d = (await c.get("/api/job", params={"queue": queue, "id": child})).json()
        assert d["flow"]["waiting"] is True
        async with running(app):
            f = await app.tasks["d:flaky"].enqueue()
            await await_until(lambda: _is(app, queue, f.id, "failed"), 15, "flaky to fail once")
            (reason,) = await why(c, queue, f.id)
            assert reason.startswith("retry: attempt 1 failed; it retries at")


async def test_why_waiting_names_the_limit(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    limited = app.tasks["d:limited"]
    async with running(app), dashboard(app) as c:
        first = await limited.enqueue(30)
        await await_until(lambda: _is(app, queue, first.id, "running"), 15, "the first to run")
        second = await limited.enqueue(0)
        wanted = "limit: limit t:d:limited (1 at once): 1 running"

        async def named() -> bool:
            return any(r.startswith(wanted) for r in await why(c, queue, second.id))

        await await_until(named, 15, "the limit to be named")
        await act(c, "cancel", queue=queue, id=first.id)


# ---- partitions, live updates, failures, mounting --------------------------------------------


async def test_partitioned_queue_is_shown_whole_and_per_partition(
    redis_server: RedisServer, queue: str
) -> None:
    orders = f"{queue}o"
    app = sample_app(redis_server.url, queue, partitions={orders: 3})
    add = app.tasks["d:add"].options(queue=orders)
    hs = await add.enqueue_many([((i, i), {}) for i in range(6)])
    async with dashboard(app) as c:
        row = await queue_row(c, orders)
        assert row["counts"]["queued"] == 6
        assert [p["name"] for p in row["partitions"]] == [f"{orders}#{i}" for i in range(3)]
        assert sum(p["counts"]["queued"] for p in row["partitions"]) == 6
        r = await c.get("/api/jobs", params={"queue": orders, "state": "queued", "limit": 4})
        first = r.json()
        r = await c.get(
            "/api/jobs", params={"queue": orders, "state": "queued", "cursor": first["cursor"]}
        )
        ids = [j["id"] for j in first["jobs"] + r.json()["jobs"]]
        assert sorted(ids) == sorted(h.id for h in hs)
        part = app.partitions.of_id(orders, hs[0].id)
        found = (await c.get("/api/jobs", params={"id": hs[0].id, "queue": orders})).json()
        assert [j["queue"] for j in found["jobs"]] == [part]
        d = (await c.get("/api/job", params={"queue": part, "id": hs[0].id})).json()
        assert d["job"]["queue"] == part
        assert (await act(c, "purge", queue=orders)).json()["message"] == (
            f"deleted 6 job(s) of {orders}"
        )


async def test_a_bare_url_knows_the_partitions_a_live_worker_serves(
    redis_server: RedisServer, queue: str
) -> None:
    wide = f"{queue}w"
    app = sample_app(redis_server.url, queue, partitions={wide: 4})
    await app.tasks["d:add"].options(queue=wide).enqueue(1, 1)
    async with dashboard(redis_server.url) as c:
        assert (await queue_row(c, wide))["partitions"] == []  # one partition known
        async with running(app, queues={wide: 2}):
            row = await queue_row(c, wide)
            assert [p["name"] for p in row["partitions"]] == [f"{wide}#{i}" for i in range(4)]
            assert (await act(c, "pause", queue=wide)).json()["message"] == f"paused {wide}"
            row = await queue_row(c, wide)
            assert [p["paused"] for p in row["partitions"]] == [True] * 4
            await act(c, "resume", queue=wide)


@pytest.fixture
def served(redis_server: RedisServer) -> Iterator[Served]:
    s = Served(create_app(redis_server.url, refresh=0.1))
    yield s
    s.stop()


async def test_event_stream_delivers_an_update(
    served: Served, redis_server: RedisServer, queue: str
) -> None:
    app = sample_app(redis_server.url, queue)
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=20) as c,
        c.stream("GET", "/api/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()

        async def next_overview() -> dict[str, Any]:
            async for line in lines:
                if line.startswith("data: "):
                    return dict(json.loads(line[6:]))
            raise AssertionError("stream ended")

        await next_overview()
        await app.tasks["d:add"].enqueue(1, 2)

        async def counted() -> bool:
            snap = await asyncio.wait_for(next_overview(), 20)
            return any(q["name"] == queue and q["counts"]["queued"] == 1 for q in snap["queues"])

        await await_until(counted, 20, "an overview event counting the new job")


async def test_job_event_stream_follows_one_job_to_its_end(
    served: Served, redis_server: RedisServer, queue: str
) -> None:
    app = sample_app(redis_server.url, queue)
    async with running(app), httpx.AsyncClient(base_url=served.url, timeout=20) as c:
        h = await app.tasks["d:sleep"].enqueue(0.3)
        await await_until(lambda: _is(app, queue, h.id, "running"), 15, "the job to start")
        seen: list[str] = []
        params = {"queue": queue, "id": h.id}
        async with c.stream("GET", "/api/job/events", params=params) as stream:
            event = ""
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "job":
                    data = json.loads(line[6:])
                    seen.append(data["state"] or data["progress"]["message"])
                elif line.startswith("data: ") and event == "end":
                    break
        assert seen[0] in ("running", "half way")
        assert seen[-1] == "succeeded"
        async with c.stream("GET", "/api/job/events", params={**params, "id": "nope"}) as s:
            text = "".join([line async for line in s.aiter_lines()])
        assert "event: gone" in text and "event: end" in text


async def test_unreachable_broker_is_shown_and_the_server_keeps_running() -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    async with dashboard(down) as c:
        snap = (await c.get("/api/overview", params={"fresh": "1"})).json()
        assert snap["broker"]["ok"] is False and snap["broker"]["error"]
        r = await c.get("/api/jobs", params={"queue": "q", "state": "queued"})
        assert r.status_code == 503 and "broker unreachable" in r.json()["error"]
        assert (await c.get("/")).status_code == 200
    with pytest.raises(ValueError):
        create_app("nosuch://host")


async def test_mounted_in_another_asgi_app(redis_server: RedisServer, queue: str) -> None:
    app = sample_app(redis_server.url, queue)
    await app.tasks["d:add"].enqueue(1, 1)
    inner = create_app(app, token="t0k", refresh=0.1)
    outer = Starlette(routes=[Mount("/ops/asyncq", inner)])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers={"Authorization": "Bearer t0k"}
    ) as c:
        page = await c.get("/ops/asyncq/")
        assert '<base href="/ops/asyncq/">' in page.text
        assert "Path=/ops/asyncq/" in page.headers["set-cookie"]
        assert (await c.get("/ops/asyncq/static/app.js")).status_code == 200
        snap = (await c.get("/ops/asyncq/api/overview", params={"fresh": "1"})).json()
        assert any(q["name"] == queue for q in snap["queues"])
        token = c.cookies["asyncq_csrf"]
        r = await c.post(
            "/ops/asyncq/api/action/purge", data={"queue": queue}, headers={"X-CSRF-Token": token}
        )
        assert r.json()["message"] == f"deleted 1 job(s) of {queue}"
        c.headers.pop("Authorization")
        assert (await c.get("/ops/asyncq/api/overview")).status_code == 401
        page = await c.get("/ops/asyncq/")
        assert page.status_code == 303 and page.headers["location"] == "/ops/asyncq/login"
        assert (await c.get("/ops/asyncq/login")).status_code == 200


@pytest.mark.parametrize("source", ["url", "app"])
def test_cli_serves_the_dashboard(
    redis_server: RedisServer, queue: str, tmp_path: Any, source: str
) -> None:
    port = free_port()
    env = _env() | {"ASYNCQ_TEST_URL": redis_server.url, "ASYNCQ_TEST_QUEUE": queue}
    where = ["--url", redis_server.url] if source == "url" else ["--app", "tests.apps.sample:app"]
    args = [sys.executable, "-c", CLI, *where, "dashboard", "--port", str(port)]
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stderr=err)
    try:

        def up() -> bool:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/overview")
            except httpx.TransportError:
                return False
            return r.status_code == 200

        wait_until(lambda: up() or proc.poll() is not None, 30, "the dashboard to answer")
        assert proc.poll() is None, (tmp_path / "err").read_text()
        if source == "app":  # the app's default queue is known before any job is enqueued
            snap = httpx.get(f"http://127.0.0.1:{port}/api/overview").json()
            assert queue in [q["name"] for q in snap["queues"]]
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_says_what_is_wrong_with_a_bad_url() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CLI, "--url", "nosuch://x", "dashboard", "--port", "1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "nosuch" in out.stderr


async def test_the_mount_example_serves_the_dashboard_under_its_prefix() -> None:
    from examples import dashboard_mount as example  # noqa: PLC0415 (memory:// app at import)

    transport = httpx.ASGITransport(app=example.site)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        assert "dashboard is at /asyncq/" in (await c.get("/")).text
        assert '<base href="/asyncq/">' in (await c.get("/asyncq/")).text
        h = await example.charge.enqueue("4111", 5)
        d = await c.get("/asyncq/api/job", params={"queue": "shop", "id": h.id})
        assert d.json()["args"]["hidden"] == HIDDEN_SENSITIVE
        shown = example.app.tasks[example.sign_up.name]
        assert shown.config.redact is not None
        assert shown.config.redact(("ada@example.com", "pw"), {}) == (
            ["ada@example.com", "***"],
            {},
        )
