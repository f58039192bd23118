"""The dashboard's routes: one HTML page, its static files, JSON reads, POST actions, and a
server-sent-event stream."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .._core import BrokerError
from ..errors import JobNotFound
from ..events import job_events
from ._data import Source, Unreachable
from ._live import Hub
from ._security import Guard

__all__ = ["build"]

STATIC = Path(__file__).parent / "static"
#: Seconds one event stream lasts; the browser's EventSource then reconnects by itself.
STREAM_FOR = 300.0
#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0

Handler = Callable[[Source, dict[str, str]], Awaitable[str]]


class _Access:
    """ASGI middleware: refuse requests the Guard does not allow (login and static pass)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # mounted: the path still holds the prefix
            path = path[len(root) :]
        public = path == "/login" or path.startswith("/static/")
        if public or await self.guard.allowed(request):
            await self.app(scope, receive, send)
            return
        response: Response
        if self.guard.open:
            response = JSONResponse(
                {"error": "this dashboard has no token: it answers loopback clients only"}, 403
            )
        elif path.startswith("/api/") or self.guard.token is None:
            response = JSONResponse({"error": "not authorized"}, 401)
        else:
            response = RedirectResponse(f"{scope.get('root_path', '')}/login", 303)
        await response(scope, receive, send)


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status, headers={"Cache-Control": "no-store"})


async def _read(aw: Awaitable[Any]) -> JSONResponse:
    try:
        return _json(await aw)
    except Unreachable as exc:
        return _json({"error": f"broker unreachable: {exc}", "broker": False}, 503)
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)


# ---- actions ---------------------------------------------------------------------------------


def _need(form: dict[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not form.get(n)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return [form[n] for n in names]


async def _retry_dead(src: Source, form: dict[str, str]) -> str:
    (queue,) = _need(form, "queue")
    ids = [form["id"]] if form.get("id") else None
    n = 0
    for part in await src.parts(queue):
        n += await src.call(src.broker.retry_dead(part, ids))
    return f"moved {n} dead job(s) back to {queue}"


async def _purge(src: Source, form: dict[str, str]) -> str:
    (queue,) = _need(form, "queue")
    n = 0
    for part in await src.parts(queue):
        n += await src.call(src.broker.purge(part))
    return f"deleted {n} job(s) of {queue}"


async def _pause(src: Source, form: dict[str, str], paused: bool) -> str:
    (queue,) = _need(form, "queue")
    changed = [await src.call(src.broker.pause(p, paused)) for p in await src.parts(queue)]
    done = "paused" if paused else "resumed"
    return f"{done} {queue}" if any(changed) else f"{queue} was already {done}"


async def _cancel(src: Source, form: dict[str, str]) -> str:
    queue, job_id = _need(form, "queue", "id")
    outcome = await src.call(src.broker.cancel(queue, job_id))
    return f"cancel {job_id}: {outcome}"


async def _delete(src: Source, form: dict[str, str]) -> str:
    queue, job_id = _need(form, "queue", "id")
    outcome = await src.call(src.broker.delete_job(queue, job_id))
    if outcome == "running":
        raise ValueError(f"{job_id} is running: cancel it first")
    return f"delete {job_id}: {outcome}"


async def _schedule(src: Source, form: dict[str, str], change: str) -> str:
    queue, name = _need(form, "queue", "name")
    ok = await src.call(
        src.broker.change_schedule(queue, name, "pause" if change == "pause" else "resume")
    )
    if not ok:
        raise ValueError(f"no schedule {name!r} in {queue}")
    return f"schedule {name}: {change}d"


ACTIONS: dict[str, Handler] = {
    "retry": _retry_dead,
    "purge": _purge,
    "pause": lambda s, f: _pause(s, f, True),
    "resume": lambda s, f: _pause(s, f, False),
    "cancel": _cancel,
    "delete": _delete,
    "schedule_pause": lambda s, f: _schedule(s, f, "pause"),
    "schedule_resume": lambda s, f: _schedule(s, f, "resume"),
}


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or "{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {k: v[0] for k, v in parse_qs(body).items()}


# ---- the app ---------------------------------------------------------------------------------


class _Views:
    """The endpoints, over one Source, Guard and Hub."""

    def __init__(self, src: Source, guard: Guard, hub: Hub) -> None:
        self.src = src
        self.guard = guard
        self.hub = hub
        self.page = (STATIC / "index.html").read_text(encoding="utf-8")

    async def index(self, request: Request) -> Response:
        self.hub.start()
        csrf, fresh = self.guard.csrf_for(request)
        base = html.escape(request.scope.get("root_path", "") + "/")
        body = self.page.replace("{{base}}", base).replace("{{csrf}}", html.escape(csrf))
        response = HTMLResponse(body, headers={"Cache-Control": "no-store"})
        if fresh:
            self.guard.set_csrf_cookie(response, request, csrf)
        return response

    async def login(self, request: Request) -> Response:
        home = request.scope.get("root_path", "") + "/"
        if self.guard.token is None:
            return RedirectResponse(home, 303)
        failed = ""
        if request.method == "POST":
            form = await _form(request)
            if self.guard.check_login(form.get("token", "")):
                response = RedirectResponse(home, 303)
                self.guard.set_auth_cookie(response, request)
                return response
            failed = "<p class=err>Wrong token.</p>"
        text = (STATIC / "login.html").read_text(encoding="utf-8").replace("{{failed}}", failed)
        return HTMLResponse(text, 401 if failed else 200)

    async def overview(self, request: Request) -> Response:
        self.hub.start()
        if not self.hub.snapshot or request.query_params.get("fresh"):
            await self.hub.sample()
        return _json(self.hub.snapshot)

    async def jobs(self, request: Request) -> Response:
        return await _read(self._jobs(dict(request.query_params)))

    async def _jobs(self, q: dict[str, str]) -> dict[str, Any]:
        if q.get("id"):
            return {"jobs": await self.src.find(q["id"], q.get("queue") or None), "cursor": None}
        try:
            limit = min(max(int(q.get("limit") or 50), 1), 500)
        except ValueError:
            raise ValueError(f"limit must be a number, got {q.get('limit')!r}") from None
        (queue,) = _need(q, "queue")
        page = await self.src.page(
            queue,
            q.get("state") or "queued",
            task=q.get("task", ""),
            cursor=q.get("cursor"),
            limit=limit,
        )
        return {"jobs": page.jobs, "cursor": page.cursor}

    async def job(self, request: Request) -> Response:
        q = dict(request.query_params)
        try:
            queue, job_id = _need(q, "queue", "id")
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        try:
            found = await self.src.detail(queue, job_id)
        except Unreachable as exc:
            return _json({"error": f"broker unreachable: {exc}", "broker": False}, 503)
        if found is None:
            return _json({"error": f"no job {job_id} in queue {queue}"}, 404)
        return _json(found)

    async def action(self, request: Request) -> Response:
        form = await _form(request)
        if not self.guard.csrf_ok(request, form.get("csrf")):
            return _json({"error": "missing or wrong CSRF token: reload the page"}, 403)
        handler = ACTIONS.get(request.path_params["name"])
        if handler is None:
            return _json({"error": f"no action {request.path_params['name']!r}"}, 404)
        try:
            message = await handler(self.src, form)
        except Unreachable as exc:
            return _json({"error": f"broker unreachable: {exc}"}, 503)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        self.hub.poke()
        return _json({"ok": True, "message": message})

    async def job_events(self, request: Request) -> Response:
        q = dict(request.query_params)
        try:
            queue, job_id = _need(q, "queue", "id")
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return StreamingResponse(
            _job_stream(self.src, queue, job_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def events(self, _: Request) -> Response:
        self.hub.start()
        return StreamingResponse(
            _stream(self.hub),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def build(src: Source, guard: Guard, hub: Hub) -> Starlette:
    """The Starlette app of the dashboard over ``src``."""
    v = _Views(src, guard, hub)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await hub.stop()

    routes = [
        Route("/", v.index),
        Route("/login", v.login, methods=["GET", "POST"]),
        Route("/api/overview", v.overview),
        Route("/api/jobs", v.jobs),
        Route("/api/job", v.job),
        Route("/api/events", v.events),
        Route("/api/job/events", v.job_events),
        Route("/api/action/{name}", v.action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_Access, guard=guard)
    return app


async def _stream(hub: Hub) -> AsyncIterator[str]:
    """Server-sent events: the overview now, then again each time it changes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + STREAM_FOR
    hub.streams += 1
    try:
        if not hub.snapshot:
            await hub.sample()
        version = hub.version
        yield "retry: 1000\n\n"
        yield f"event: overview\ndata: {json.dumps(hub.snapshot)}\n\n"
        while loop.time() < end:
            seen = await hub.changed(version, KEEPALIVE)
            if seen == version:
                yield ": keep-alive\n\n"
                continue
            version = seen
            yield f"event: overview\ndata: {json.dumps(hub.snapshot)}\n\n"
    finally:
        hub.streams -= 1


async def _job_stream(src: Source, queue: str, job_id: str) -> AsyncIterator[str]:
    """Server-sent events of one job: its state changes and progress reports, until it ends;
    then ``end`` (the page closes the stream, or the browser would reconnect)."""
    yield "retry: 2000\n\n"
    try:
        async for ev in job_events(src.broker, queue, job_id, history=False):
            p = ev.progress
            data = {
                "kind": ev.kind,
                "state": ev.state,
                "at": ev.at,
                "progress": None if p is None else {"fraction": p.fraction, "message": p.message},
            }
            yield f"event: job\ndata: {json.dumps(data)}\n\n"
    except (JobNotFound, BrokerError) as exc:
        yield f"event: gone\ndata: {json.dumps({'error': str(exc)})}\n\n"
    yield "event: end\ndata: {}\n\n"
